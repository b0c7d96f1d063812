// Memory movement for Tensor: DeviceBuffer, copies and stream waits.
#include <cstring>

#include "binding/common.h"
#include "binding/device_buffer.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// copy(dst, dstMem, src, srcMem, stream, async): both views contiguous with
// the same byte size; any of host→device, device→host, device→device,
// host→host.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  TensorView dst = cx.output(0, "dst");
  TensorView src = cx.tensor(2, "src");
  void* stream = cx.stream(4);
  if (cx.ok()) {
    if (!dst.is_contiguous() || !src.is_contiguous())
      cx.fail(Code::kUnsupported, "copy needs contiguous views");
    else if (dst.numel() * dtype_size(dst.dtype) != src.numel() * dtype_size(src.dtype))
      cx.fail(Code::kShape, "copy needs views of the same byte size");
    else if (!dst.on_host() && !src.on_host() && dst.device != src.device)
      cx.fail(Code::kDevice, "copy between two CUDA devices is not supported; go through the host");
  }
  const size_t bytes = static_cast<size_t>(src.numel()) * dtype_size(src.dtype);
  return cx.dispatch(
      [dst, src, stream, bytes]() -> Status {
        if (bytes == 0) return Status::Ok();
        if (dst.on_host() && src.on_host()) {
          std::memmove(dst.data, src.data, bytes);
          return Status::Ok();
        }
        const int device = dst.on_host() ? src.device : dst.device;
        const cuda::CopyKind kind = dst.on_host()   ? cuda::CopyKind::kDeviceToHost
                                    : src.on_host() ? cuda::CopyKind::kHostToDevice
                                                    : cuda::CopyKind::kDeviceToDevice;
        return cuda::memcpy_sync(device, dst.data, src.data, bytes, kind, stream);
      },
      cx.flag(5));
}

// synchronize(device, stream, async)
Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  if (!info[0].IsNumber()) cx.fail(Code::kArg, "expected a device ordinal");
  const int device = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  void* stream = cx.stream(1);
  return cx.dispatch([device, stream]() { return cuda::stream_synchronize(device, stream); }, cx.flag(2));
}

}  // namespace

void init_tensor(Napi::Env env, Napi::Object exports) {
  exports.Set("DeviceBuffer", DeviceBuffer::Define(env));
  exports.Set("copy", Napi::Function::New<Copy>(env, "copy"));
  exports.Set("synchronize", Napi::Function::New<Synchronize>(env, "synchronize"));
}

}  // namespace binding
}  // namespace tokensieve
