#include "binding/common.h"

#include <cmath>
#include <exception>
#include <new>
#include <string>

#include "binding/device_buffer.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {

Napi::Error make_error(Napi::Env env, const Status& s) {
  Napi::Error e = Napi::Error::New(env, s.message);
  e.Set("code", Napi::String::New(env, code_name(s.code)));
  return e;
}

namespace {

Status run_guarded(const std::function<Status()>& job) {
  try {
    return job();
  } catch (const std::bad_alloc&) {
    return Status(Code::kRange, "out of host memory");
  } catch (const std::exception& e) {
    return Status(Code::kInternal, std::string("internal error: ") + e.what());
  }
}

class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, std::function<Status()> job, const std::vector<Napi::Object>& kept)
      : Napi::AsyncWorker(env, "tokensieve"),
        deferred_(Napi::Promise::Deferred::New(env)),
        job_(std::move(job)) {
    for (const auto& o : kept) {
      refs_.push_back(Napi::Persistent(o));
      if (DeviceBuffer::Is(env, o)) {
        DeviceBuffer* buf = DeviceBuffer::Unwrap(o);
        buf->acquire();
        buffers_.push_back(buf);
      }
    }
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override { status_ = run_guarded(job_); }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    let_go(env);
    if (status_.ok())
      deferred_.Resolve(env.Undefined());
    else
      deferred_.Reject(make_error(env, status_).Value());
  }
  void OnError(const Napi::Error& e) override {
    Napi::HandleScope scope(Env());
    let_go(Env());
    deferred_.Reject(e.Value());
  }

 private:
  void let_go(Napi::Env env) {
    for (DeviceBuffer* b : buffers_) b->let_go(env);
    buffers_.clear();
  }
  Napi::Promise::Deferred deferred_;
  std::function<Status()> job_;
  Status status_;
  std::vector<Napi::ObjectReference> refs_;
  std::vector<DeviceBuffer*> buffers_;
};

bool read_int_array(const Napi::Value& v, int max_len, int64_t* out, int* len) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() > static_cast<uint32_t>(max_len)) return false;
  *len = static_cast<int>(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) return false;
    const double d = e.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) return false;
    out[i] = static_cast<int64_t>(d);
  }
  return true;
}

}  // namespace

TensorView CallContext::tensor(const Napi::Object& args, const char* name, bool optional) {
  TensorView t;
  Napi::Value v = args.Get(name);
  if (v.IsUndefined() || v.IsNull()) {
    if (!optional) fail(Code::kArg, std::string("expected a tensor for ") + name + " but got nothing");
    return t;
  }
  if (!v.IsObject()) {
    fail(Code::kArg, std::string("expected a tensor descriptor for ") + name);
    return t;
  }
  Napi::Object d = v.As<Napi::Object>();
  keep(d);
  Napi::Value dt = d.Get("dtype");
  const int32_t dtype = dt.IsNumber() ? dt.As<Napi::Number>().Int32Value() : -1;
  if (dtype < 0 || dtype > static_cast<int32_t>(DType::kU8)) {
    fail(Code::kDType, std::string("unknown dtype for ") + name);
    return t;
  }
  t.dtype = static_cast<DType>(dtype);
  int ndim = 0, nstrides = 0;
  int64_t strides[kMaxDims];
  if (!read_int_array(d.Get("shape"), kMaxDims, t.shape, &ndim) ||
      !read_int_array(d.Get("strides"), kMaxDims, strides, &nstrides) || nstrides != ndim) {
    fail(Code::kShape, std::string("expected shape and strides of equal rank <= ") +
                           std::to_string(kMaxDims) + " with non-negative integers for " + name);
    return t;
  }
  t.ndim = ndim;
  for (int i = 0; i < ndim; ++i) t.strides[i] = strides[i];
  const double offset_d = number(d, "offset", 0);
  if (!(offset_d >= 0) || std::floor(offset_d) != offset_d) {
    fail(Code::kRange, std::string("expected a non-negative integer offset for ") + name);
    return t;
  }
  const int64_t offset = static_cast<int64_t>(offset_d);
  t.device = static_cast<int32_t>(number(d, "device", -1));
  const size_t esize = dtype_size(t.dtype);
  // Highest element index addressed by the view (relative to the base).
  int64_t last = offset;
  bool empty = false;
  for (int i = 0; i < ndim; ++i) {
    if (t.shape[i] == 0) empty = true;
    else last += (t.shape[i] - 1) * t.strides[i];
  }

  if (t.device < 0) {
    Napi::Value data = d.Get("data");
    if (!data.IsTypedArray()) {
      fail(Code::kArg, std::string("expected a TypedArray as the data of ") + name);
      return t;
    }
    Napi::TypedArray ta = data.As<Napi::TypedArray>();
    keep(ta);
    if (ta.ArrayBuffer().IsDetached()) {
      fail(Code::kRange, std::string("the buffer of ") + name + " is detached");
      return t;
    }
    if (ta.ElementSize() != esize) {
      fail(Code::kDType, std::string("expected a TypedArray with ") + std::to_string(esize) +
                             "-byte elements for the " + dtype_name(t.dtype) + " data of " + name);
      return t;
    }
    const int64_t length = static_cast<int64_t>(ta.ElementLength());
    if (!empty && last >= length) {
      fail(Code::kRange, std::string("the data of ") + name + " is too short: the view addresses element " +
                             std::to_string(last) + " but the array has " + std::to_string(length));
      return t;
    }
    t.data = static_cast<char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset() + offset * static_cast<int64_t>(esize);
    return t;
  }

  Napi::Value owner = d.Get("owner");
  if (!owner.IsUndefined() && !owner.IsNull()) {
    if (!DeviceBuffer::Is(env_, owner)) {
      fail(Code::kArg, std::string("expected a DeviceBuffer as the owner of ") + name);
      return t;
    }
    keep(owner);
    DeviceBuffer* buf = DeviceBuffer::Unwrap(owner.As<Napi::Object>());
    if (buf->disposed()) {
      fail(Code::kDisposed, std::string("the tensor ") + name + " has been disposed");
      return t;
    }
    if (buf->device() != t.device) {
      fail(Code::kDevice, std::string("the memory of ") + name + " is on another device");
      return t;
    }
    if (!empty && static_cast<uint64_t>(last + 1) * esize > buf->bytes()) {
      fail(Code::kRange, std::string("the view of ") + name + " reaches past the end of its device buffer");
      return t;
    }
    t.data = static_cast<char*>(buf->ptr()) + offset * static_cast<int64_t>(esize);
    return t;
  }
  Napi::Value ptr = d.Get("ptr");
  if (!ptr.IsBigInt()) {
    fail(Code::kArg, std::string("expected a bigint ptr or an owner for the device tensor ") + name);
    return t;
  }
  bool lossless = false;
  const uint64_t raw = ptr.As<Napi::BigInt>().Uint64Value(&lossless);
  t.data = reinterpret_cast<char*>(static_cast<uintptr_t>(raw)) + offset * static_cast<int64_t>(esize);
  return t;
}

const int32_t* CallContext::int32_array(const Napi::Object& args, const char* name, int64_t* length) {
  *length = 0;
  Napi::Value v = args.Get(name);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    fail(Code::kArg, std::string("expected an Int32Array for ") + name);
    return nullptr;
  }
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  keep(a);
  if (a.ArrayBuffer().IsDetached()) {
    fail(Code::kRange, std::string("the buffer of ") + name + " is detached");
    return nullptr;
  }
  *length = static_cast<int64_t>(a.ElementLength());
  return a.Data();
}

double CallContext::number(const Napi::Object& args, const char* name, double fallback) {
  Napi::Value v = args.Get(name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) {
    fail(Code::kArg, std::string("expected a number for ") + name);
    return fallback;
  }
  return v.As<Napi::Number>().DoubleValue();
}

bool CallContext::boolean(const Napi::Object& args, const char* name, bool fallback) {
  Napi::Value v = args.Get(name);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsBoolean()) {
    fail(Code::kArg, std::string("expected a boolean for ") + name);
    return fallback;
  }
  return v.As<Napi::Boolean>().Value();
}

void* CallContext::stream(const Napi::Object& args) {
  Napi::Value v = args.Get("stream");
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsBigInt()) {
    fail(Code::kArg, "expected a bigint (cudaStream_t) for stream");
    return nullptr;
  }
  bool lossless = false;
  return reinterpret_cast<void*>(static_cast<uintptr_t>(v.As<Napi::BigInt>().Uint64Value(&lossless)));
}

Status finish_device(int device, void* stream, bool wait, Status enqueued) {
  if (!enqueued.ok() || !wait) return enqueued;
  return cuda::stream_synchronize(device, stream);
}

Napi::Value CallContext::dispatch(std::function<Status()> job, bool async) {
  if (!async) {
    if (!status_.ok()) throw make_error(env_, status_);
    Status s = run_guarded(job);
    if (!s.ok()) throw make_error(env_, s);
    return env_.Undefined();
  }
  if (!status_.ok()) {
    auto d = Napi::Promise::Deferred::New(env_);
    d.Reject(make_error(env_, status_).Value());
    return d.Promise();
  }
  auto* worker = new Worker(env_, std::move(job), kept_);
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace binding
}  // namespace tokensieve
