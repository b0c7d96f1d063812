#include "binding/device_buffer.h"

#include <atomic>

#include "binding/common.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

std::atomic<int64_t> g_owned_bytes{0};
std::atomic<int64_t> g_owned_buffers{0};
std::atomic<int64_t> g_objects{0};

void* bigint_ptr(const Napi::Value& v, bool* ok) {
  *ok = false;
  if (!v.IsBigInt()) return nullptr;
  bool lossless = false;
  const uint64_t raw = v.As<Napi::BigInt>().Uint64Value(&lossless);
  *ok = lossless;
  return reinterpret_cast<void*>(static_cast<uintptr_t>(raw));
}

}  // namespace

Napi::Function DeviceBuffer::Define(Napi::Env env) {
  Napi::Function ctor = DefineClass(
      env, "DeviceBuffer",
      {
          InstanceAccessor<&DeviceBuffer::GetPtr>("ptr"),
          InstanceAccessor<&DeviceBuffer::GetBytes>("bytes"),
          InstanceAccessor<&DeviceBuffer::GetDevice>("device"),
          InstanceAccessor<&DeviceBuffer::GetDisposed>("disposed"),
          InstanceAccessor<&DeviceBuffer::GetOwned>("owned"),
          InstanceMethod<&DeviceBuffer::Dispose>("dispose"),
      });
  addon_data(env).device_buffer = Napi::Persistent(ctor);
  return ctor;
}

bool DeviceBuffer::Is(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) return false;
  const AddonData& data = addon_data(env);
  return !data.device_buffer.IsEmpty() && v.As<Napi::Object>().InstanceOf(data.device_buffer.Value());
}

DeviceBuffer::Counts DeviceBuffer::counts() {
  return Counts{g_owned_bytes.load(), g_owned_buffers.load(), g_objects.load()};
}

// Owned memory is counted from allocation to release, here and in V8's
// external memory, which is what makes V8 collect (and so finalize) unused
// DeviceBuffers under device-memory pressure.
void DeviceBuffer::account(int64_t sign) {
  const int64_t bytes = static_cast<int64_t>(bytes_);
  g_owned_bytes += sign * bytes;
  g_owned_buffers += sign;
  Napi::MemoryManagement::AdjustExternalMemory(Env(), sign * bytes);
}

// new DeviceBuffer(bytes, device, stream?: bigint, foreignPtr?: bigint)
DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  ++g_objects;
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    make_error(env, Status(Code::kArg, "expected (bytes: number, device: number) for DeviceBuffer"))
        .ThrowAsJavaScriptException();
    return;
  }
  const double bytes = info[0].As<Napi::Number>().DoubleValue();
  if (!(bytes >= 0) || bytes > 9.0e15) {
    make_error(env, Status(Code::kRange, "expected a byte count >= 0 for DeviceBuffer"))
        .ThrowAsJavaScriptException();
    return;
  }
  bytes_ = static_cast<size_t>(bytes);
  device_ = info[1].As<Napi::Number>().Int32Value();
  bool ok = true;
  if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) {
    stream_ = bigint_ptr(info[2], &ok);
    if (!ok) {
      make_error(env, Status(Code::kArg, "expected a bigint for stream")).ThrowAsJavaScriptException();
      return;
    }
  }
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    ptr_ = bigint_ptr(info[3], &ok);
    if (!ok) {
      make_error(env, Status(Code::kArg, "expected a bigint for ptr")).ThrowAsJavaScriptException();
      return;
    }
    owned_ = false;
    return;
  }
  Status s = cuda::device_malloc(device_, bytes_, stream_, &ptr_);
  if (!s.ok()) {
    ptr_ = nullptr;
    disposed_ = true;
    make_error(env, s).ThrowAsJavaScriptException();
    return;
  }
  owned_ = true;
  account(+1);
}

// Runs as a GC finalizer, synchronously inside the collection (see
// binding/addon.cc): no JS, and only Node-API calls that take a basic env.
// An async job keeps its buffers strongly referenced, so a buffer a kernel
// reads is never collected.
DeviceBuffer::~DeviceBuffer() {
  --g_objects;
  if (!disposed_ && owned_) {
    (void)cuda::device_free(device_, ptr_, stream_);  // nothing to report an error to from a finalizer
    account(-1);
  }
}

void DeviceBuffer::release(Napi::Env env) {
  if (disposed_) return;
  disposed_ = true;
  if (owned_) {
    Status s = cuda::device_free(device_, ptr_, stream_);
    account(-1);
    if (!s.ok()) make_error(env, s).ThrowAsJavaScriptException();
  }
  ptr_ = nullptr;
}

Napi::Value DeviceBuffer::GetPtr(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ptr_)));
}
Napi::Value DeviceBuffer::GetBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(bytes_));
}
Napi::Value DeviceBuffer::GetDevice(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), device_);
}
Napi::Value DeviceBuffer::GetDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed());
}
Napi::Value DeviceBuffer::GetOwned(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), owned_);
}
Napi::Value DeviceBuffer::Dispose(const Napi::CallbackInfo& info) {
  if (in_use_ > 0) {
    dispose_requested_ = true;
    return info.Env().Undefined();
  }
  release(info.Env());
  return info.Env().Undefined();
}

}  // namespace binding
}  // namespace tokensieve
