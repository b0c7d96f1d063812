#include "binding/common.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "binding/device_buffer.h"
#include "cpu/host_pool.h"
#include "cpu/thread_pool.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {

AddonData& addon_data(Napi::Env env) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data == nullptr) {
    data = new AddonData();
    env.SetInstanceData<AddonData>(data);  // deleted by N-API at environment teardown
  }
  return *data;
}

Napi::Error make_error(Napi::Env env, const Status& s) {
  Napi::Error e = Napi::Error::New(env, s.message);
  e.Set("code", Napi::String::New(env, code_name(s.code)));
  return e;
}

namespace {

napi_valuetype type_of(napi_env env, napi_value v) {
  napi_valuetype t = napi_undefined;
  napi_typeof(env, v, &t);
  return t;
}

size_t element_size(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: return 4;
    default: return 8;  // float64, bigint64, biguint64
  }
}

// Everything about a TypedArray in one N-API call (the wrappers' accessors
// each make their own).
struct TypedArrayInfo {
  bool ok = false;
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;
  void* data = nullptr;
  napi_value arraybuffer = nullptr;
  size_t byte_offset = 0;
};

TypedArrayInfo typed_array(napi_env env, napi_value v) {
  TypedArrayInfo info;
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return info;
  info.ok = napi_get_typedarray_info(env, v, &info.type, &info.length, &info.data, &info.arraybuffer,
                                     &info.byte_offset) == napi_ok;
  return info;
}

bool is_detached(napi_env env, const TypedArrayInfo& info) {
  bool detached = false;
  napi_is_detached_arraybuffer(env, info.arraybuffer, &detached);
  return detached;
}

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
  Worker(Napi::Env env, std::function<Status()> job, const std::vector<Napi::Object>& kept,
         std::vector<CallContext::Staged> staged)
      : Napi::AsyncWorker(env, "tokensieve"),
        deferred_(Napi::Promise::Deferred::New(env)),
        job_(std::move(job)) {
    for (auto& st : staged) staged_.push_back(StagedRef{std::move(st.copy), st.bytes, Napi::Persistent(st.array),
                                                        st.byte_offset, st.output, std::move(st.name)});
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
    if (status_.ok()) status_ = copy_back(env);
    staged_.clear();
    if (status_.ok())
      deferred_.Resolve(env.Undefined());
    else
      deferred_.Reject(make_error(env, status_).Value());
  }
  void OnError(const Napi::Error& e) override {
    Napi::HandleScope scope(Env());
    let_go(Env());
    staged_.clear();
    deferred_.Reject(e.Value());
  }

 private:
  struct StagedRef {
    std::shared_ptr<char> copy;
    size_t bytes;
    Napi::ObjectReference array;
    size_t byte_offset;
    bool output;
    std::string name;
  };
  // Staged outputs go back into their TypedArrays, which JS may have
  // detached or shrunk while the job ran.
  Status copy_back(Napi::Env env) {
    for (StagedRef& st : staged_) {
      if (!st.output) continue;
      const TypedArrayInfo ta = typed_array(env, st.array.Value());
      if (!ta.ok || ta.data == nullptr || ta.length * element_size(ta.type) < st.byte_offset + st.bytes)
        return Status(Code::kRange, "the buffer of " + st.name + " was detached or shrunk while the call ran");
      std::memcpy(static_cast<char*>(ta.data) + st.byte_offset, st.copy.get(), st.bytes);
    }
    return Status::Ok();
  }
  void let_go(Napi::Env env) {
    for (DeviceBuffer* b : buffers_) b->let_go(env);
    buffers_.clear();
  }
  Napi::Promise::Deferred deferred_;
  std::function<Status()> job_;
  Status status_;
  std::vector<Napi::ObjectReference> refs_;
  std::vector<DeviceBuffer*> buffers_;
  std::vector<StagedRef> staged_;
};

// The staging copy runs on the event loop's thread before the call returns
// (JS may detach the ArrayBuffer once it has returned). Spans of a MB or more are
// copied in 256 KiB chunks on the CPU pool as well, so the event loop is held
// for less time.
void copy_staged(char* dst, const void* src, size_t bytes) {
  constexpr size_t kChunk = size_t{256} << 10;
  const char* from = static_cast<const char*>(src);
  if (bytes < 4 * kChunk || cpu::num_threads() < 2) {
    std::memcpy(dst, from, bytes);
    return;
  }
  const int64_t chunks = static_cast<int64_t>((bytes + kChunk - 1) / kChunk);
  cpu::parallel_for(chunks, [&](int64_t c) {
    const size_t at = static_cast<size_t>(c) * kChunk;
    std::memcpy(dst + at, from + at, std::min(kChunk, bytes - at));
  });
}

}  // namespace

TensorView CallContext::tensor(size_t i, const char* name, bool optional) { return view(i, name, optional, false); }
TensorView CallContext::output(size_t i, const char* name, bool optional) { return view(i, name, optional, true); }

void* CallContext::stage(const Napi::Value& array, napi_value arraybuffer, void* data, size_t byte_offset,
                         size_t bytes, bool output, const char* name) {
  if (!async_ || bytes == 0) return data;
  bool plain = false;  // false for a SharedArrayBuffer, which cannot be detached or shrunk
  if (napi_is_arraybuffer(env_, arraybuffer, &plain) != napi_ok || !plain) return data;
  std::shared_ptr<char> copy = cpu::host_block(bytes);
  if (copy == nullptr) {
    fail(Code::kRange, std::string("out of host memory while staging ") + name + " for an async call");
    return data;
  }
  copy_staged(copy.get(), data, bytes);
  void* const where = copy.get();
  keep_staged(std::move(copy), bytes, array, byte_offset, output, name);
  return where;
}

void CallContext::keep_staged(std::shared_ptr<char> copy, size_t bytes, const Napi::Value& array, size_t byte_offset,
                              bool output, const char* name) {
  Staged st;
  st.copy = std::move(copy);
  st.bytes = bytes;
  st.array = array.As<Napi::Object>();
  st.byte_offset = byte_offset;
  st.output = output;
  st.name = name;
  staged_.push_back(std::move(st));
}

bool CallContext::stage_gathered(const Napi::Value& array, napi_value arraybuffer, size_t esize, size_t span_bytes,
                                 TensorView& t, const char* name) {
  if (!async_ || t.ndim < 1 || t.strides[t.ndim - 1] != 1) return false;
  bool plain = false;  // a SharedArrayBuffer is read in place (stage's rule)
  if (napi_is_arraybuffer(env_, arraybuffer, &plain) != napi_ok || !plain) return false;
  int64_t n = 1;
  for (int d = 0; d < t.ndim; ++d) n *= t.shape[d];
  const size_t bytes = static_cast<size_t>(n) * esize;
  if (bytes * 2 > span_bytes) return false;
  std::shared_ptr<char> copy = cpu::host_block(bytes);
  if (copy == nullptr) return false;  // stage() reports the failure
  // Runs of the innermost dimension, in row-major order of the outer ones.
  const int64_t run = t.shape[t.ndim - 1];
  const size_t run_bytes = static_cast<size_t>(run) * esize;
  int64_t index[kMaxDims] = {};
  char* dst = copy.get();
  for (int64_t r = 0; r < n / run; ++r) {
    int64_t at = 0;
    for (int d = 0; d + 1 < t.ndim; ++d) at += index[d] * t.strides[d];
    std::memcpy(dst, static_cast<const char*>(t.data) + at * static_cast<int64_t>(esize), run_bytes);
    dst += run_bytes;
    for (int d = t.ndim - 2; d >= 0 && ++index[d] == t.shape[d]; --d) index[d] = 0;
  }
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  t.data = copy.get();
  keep_staged(std::move(copy), bytes, array, 0, /*output=*/false, name);
  return true;
}

TensorView CallContext::view(size_t i, const char* name, bool optional, bool output) {
  TensorView t;
  Napi::Value mv = arg(i);
  const napi_valuetype mt = type_of(env_, mv);
  if (mt == napi_undefined || mt == napi_null) {
    if (!optional) fail(Code::kArg, std::string("expected a tensor for ") + name + " but got nothing");
    return t;
  }
  const TypedArrayInfo meta = typed_array(env_, mv);
  if (!meta.ok || meta.type != napi_float64_array) {
    fail(Code::kArg, std::string("expected a Float64Array descriptor for ") + name);
    return t;
  }
  keep(mv);
  const size_t mlen = meta.length;
  const double* m = static_cast<const double*>(meta.data);
  const int ndim = mlen >= 4 ? static_cast<int>(m[3]) : -1;
  if (mlen < 4 || ndim < 0 || ndim > kMaxDims || mlen < static_cast<size_t>(4 + 2 * ndim)) {
    fail(Code::kShape, std::string("expected a rank <= ") + std::to_string(kMaxDims) +
                           " descriptor [dtype, device, offset, ndim, ...shape, ...strides] for " + name);
    return t;
  }
  for (size_t j = 0; j < static_cast<size_t>(4 + 2 * ndim); ++j) {
    const double x = m[j];
    const bool integral = std::floor(x) == x && x >= -1 && x <= 9007199254740991.0;
    if (!integral || (j != 1 && x < 0)) {
      fail(Code::kShape, std::string("expected non-negative integers in the descriptor of ") + name);
      return t;
    }
  }
  const int32_t dtype = static_cast<int32_t>(m[0]);
  if (dtype > static_cast<int32_t>(DType::kU8)) {
    fail(Code::kDType, std::string("unknown dtype for ") + name);
    return t;
  }
  t.dtype = static_cast<DType>(dtype);
  t.device = static_cast<int32_t>(m[1]);
  const int64_t offset = static_cast<int64_t>(m[2]);
  t.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    t.shape[d] = static_cast<int64_t>(m[4 + d]);
    t.strides[d] = static_cast<int64_t>(m[4 + ndim + d]);
  }
  const size_t esize = dtype_size(t.dtype);
  // Highest element index addressed by the view (relative to the base),
  // computed without overflow so a lying descriptor cannot wrap around.
  int64_t last = offset;
  bool empty = false, overflow = false;
  for (int d = 0; d < ndim; ++d) {
    if (t.shape[d] == 0) {
      empty = true;
      continue;
    }
    int64_t span = 0;
    overflow |= __builtin_mul_overflow(t.shape[d] - 1, t.strides[d], &span);
    overflow |= __builtin_add_overflow(last, span, &last);
  }
  int64_t bytes = 0;
  overflow |= __builtin_mul_overflow(last + 1, static_cast<int64_t>(esize), &bytes);
  if (overflow) {
    fail(Code::kRange, std::string("the view of ") + name + " addresses more memory than exists");
    return t;
  }

  Napi::Value mem = arg(i + 1);
  if (t.device < 0) {
    const TypedArrayInfo ta = typed_array(env_, mem);
    if (!ta.ok) {
      fail(Code::kArg, std::string("expected a TypedArray as the data of ") + name);
      return t;
    }
    keep(mem);
    if (element_size(ta.type) != esize) {
      fail(Code::kDType, std::string("expected a TypedArray with ") + std::to_string(esize) +
                             "-byte elements for the " + dtype_name(t.dtype) + " data of " + name);
      return t;
    }
    if (!empty && last >= static_cast<int64_t>(ta.length)) {
      if (is_detached(env_, ta))
        fail(Code::kRange, std::string("the buffer of ") + name + " is detached");
      else
        fail(Code::kRange, std::string("the data of ") + name + " is too short: the view addresses element " +
                               std::to_string(last) + " but the array has " + std::to_string(ta.length));
      return t;
    }
    const size_t first_byte = static_cast<size_t>(offset) * esize;
    t.data = static_cast<char*>(ta.data) + first_byte;
    // meta[16] == 1: an output this call allocated (lib/tensor.ts markFresh),
    // which no JS outside the library can reach until the call completes:
    // written in place.
    const bool fresh_output = output && mlen > 16 && m[16] == 1;
    const size_t span_bytes = static_cast<size_t>(last + 1 - offset) * esize;
    if (!empty && !fresh_output && !(!output && stage_gathered(mem, ta.arraybuffer, esize, span_bytes, t, name)))
      t.data = stage(mem, ta.arraybuffer, t.data, first_byte, span_bytes, output, name);
    return t;
  }

  const napi_valuetype memt = type_of(env_, mem);
  if (memt == napi_object) {
    if (!DeviceBuffer::Is(env_, mem)) {
      fail(Code::kArg, std::string("expected a DeviceBuffer as the memory of ") + name);
      return t;
    }
    keep(mem);
    DeviceBuffer* buf = DeviceBuffer::Unwrap(mem.As<Napi::Object>());
    if (buf->disposed()) {
      fail(Code::kDisposed, std::string("the tensor ") + name + " has been disposed");
      return t;
    }
    if (buf->device() != t.device) {
      fail(Code::kDevice, std::string("the memory of ") + name + " is on another device");
      return t;
    }
    if (!empty && static_cast<uint64_t>(bytes) > buf->bytes()) {
      fail(Code::kRange, std::string("the view of ") + name + " reaches past the end of its device buffer");
      return t;
    }
    t.data = static_cast<char*>(buf->ptr()) + offset * static_cast<int64_t>(esize);
    return t;
  }
  if (memt != napi_bigint) {
    fail(Code::kArg, std::string("expected a DeviceBuffer or a bigint address for the device tensor ") + name);
    return t;
  }
  bool lossless = false;
  const uint64_t raw = mem.As<Napi::BigInt>().Uint64Value(&lossless);
  t.data = reinterpret_cast<char*>(static_cast<uintptr_t>(raw)) + offset * static_cast<int64_t>(esize);
  return t;
}

const double* CallContext::params(size_t i, size_t n) {
  static const double kZeros[16] = {};
  Napi::Value v = arg(i);
  const TypedArrayInfo ta = typed_array(env_, v);
  if (!ta.ok || ta.type != napi_float64_array || ta.length < n) {
    fail(Code::kArg, "expected a Float64Array of at least " + std::to_string(n) + " parameters");
    return kZeros;
  }
  keep(v);
  return static_cast<const double*>(ta.data);
}

const int32_t* CallContext::int32_array(size_t i, const char* name, int64_t* length, int64_t count) {
  *length = 0;
  Napi::Value v = arg(i);
  const TypedArrayInfo ta = typed_array(env_, v);
  if (!ta.ok || ta.type != napi_int32_array) {
    fail(Code::kArg, std::string("expected an Int32Array for ") + name);
    return nullptr;
  }
  keep(v);
  if (ta.length == 0 && is_detached(env_, ta)) {
    fail(Code::kRange, std::string("the buffer of ") + name + " is detached");
    return nullptr;
  }
  if (count < -1 || count > static_cast<int64_t>(ta.length)) {
    fail(Code::kRange, std::string("expected at least ") + std::to_string(count) + " elements in " + name);
    return nullptr;
  }
  *length = count >= 0 ? count : static_cast<int64_t>(ta.length);
  return static_cast<const int32_t*>(
      stage(v, ta.arraybuffer, ta.data, 0, static_cast<size_t>(*length) * sizeof(int32_t), false, name));
}

void* CallContext::stream(size_t i) {
  Napi::Value v = arg(i);
  const napi_valuetype t = type_of(env_, v);
  if (t == napi_undefined || t == napi_null) return nullptr;
  if (t != napi_bigint) {
    fail(Code::kArg, "expected a bigint (cudaStream_t) for stream");
    return nullptr;
  }
  bool lossless = false;
  return reinterpret_cast<void*>(static_cast<uintptr_t>(v.As<Napi::BigInt>().Uint64Value(&lossless)));
}

Status finish_device(int device, void* stream, bool wait, Status enqueued) {
  // Once per device (then an atomic load): scratch freed by this call stays
  // in the pool for the next one (cuda/runtime.cu). Best effort: a device
  // whose pool cannot be configured still computes correctly, only slower.
  (void)cuda::configure_memory_pool(device);
  if (!enqueued.ok() || !wait) return enqueued;
  return cuda::stream_synchronize(device, stream);
}

Napi::Value CallContext::dispatch(std::function<Status()> job, bool async) {
  if (async != async_) fail(Code::kInternal, "internal error: the async flag is not the call's last argument");
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
  auto* worker = new Worker(env_, std::move(job), kept_, std::move(staged_));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace binding
}  // namespace tokensieve
