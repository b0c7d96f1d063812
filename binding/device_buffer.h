// DeviceBuffer: a JS object that owns (or, for foreign pointers, merely
// names) a block of CUDA device memory. Owned memory is released by
// dispose() or, failing that, by the GC finalizer; its size is reported to
// V8 as external memory so the GC knows to run.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace tokensieve {
namespace binding {

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Define(Napi::Env env);
  static bool Is(Napi::Env env, const Napi::Value& v);
  static DeviceBuffer* Unwrap(const Napi::Object& o) { return Napi::ObjectWrap<DeviceBuffer>::Unwrap(o); }

  // Process-wide counts (all Node environments): device memory tokensieve
  // owns now, the number of owned buffers holding it, and the number of
  // DeviceBuffer objects alive (owned or foreign, disposed or not) — the last
  // shows whether the GC has finalized them.
  struct Counts {
    int64_t owned_bytes;
    int64_t owned_buffers;
    int64_t objects;
  };
  static Counts counts();

  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  ~DeviceBuffer() override;

  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }
  bool disposed() const { return disposed_ || dispose_requested_; }
  // An async job holds the memory while it runs: dispose() during that time
  // is deferred until the last job lets go, so a kernel never sees freed
  // memory.
  void acquire() { ++in_use_; }
  void let_go(Napi::Env env) {
    if (--in_use_ == 0 && dispose_requested_) release(env);
  }

 private:
  Napi::Value GetPtr(const Napi::CallbackInfo& info);
  Napi::Value GetBytes(const Napi::CallbackInfo& info);
  Napi::Value GetDevice(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value GetOwned(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  void release(Napi::Env env);
  void account(int64_t sign);

  void* ptr_ = nullptr;
  void* stream_ = nullptr;
  size_t bytes_ = 0;
  int device_ = 0;
  bool owned_ = false;
  bool disposed_ = false;
  bool dispose_requested_ = false;
  int in_use_ = 0;
};

}  // namespace binding
}  // namespace tokensieve
