#include "binding/device_buffer.h"

#include "binding/common.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

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

// new DeviceBuffer(bytes, device, stream?: bigint, foreignPtr?: bigint)
DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
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
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes_));
}

DeviceBuffer::~DeviceBuffer() {
  if (!disposed_ && owned_) {
    cuda::device_free(device_, ptr_, stream_);  // nothing to report to from a finalizer
    Napi::MemoryManagement::AdjustExternalMemory(Env(), -static_cast<int64_t>(bytes_));
  }
}

void DeviceBuffer::release(Napi::Env env) {
  if (disposed_) return;
  disposed_ = true;
  if (owned_) {
    Status s = cuda::device_free(device_, ptr_, stream_);
    Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(bytes_));
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
