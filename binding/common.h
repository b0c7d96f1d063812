// Shared N-API plumbing: JS tensor descriptors → TensorView, Status → JS
// errors, and running a kernel synchronously or on libuv's pool. The binding
// is the only code that includes napi.h.
#pragma once

#include <napi.h>

#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace binding {

// A packed scalar parameter as an integer; NaN and out-of-range values
// become INT64_MIN, which every range check rejects.
inline int64_t to_int64(double x) {
  return (x >= -9.0e18 && x <= 9.0e18) ? static_cast<int64_t>(x) : INT64_MIN;
}

// A packed enum parameter; anything but a small non-negative integer becomes
// -1, which validation rejects.
inline int32_t to_enum(double x) { return (x >= 0 && x < 16 && x == static_cast<int32_t>(x)) ? static_cast<int32_t>(x) : -1; }

// Per-environment state (main thread and each worker_thread).
struct AddonData {
  Napi::FunctionReference device_buffer;
};
AddonData& addon_data(Napi::Env env);

// An Error with a stable `code` (the TS layer turns it into TypeError,
// RangeError or TokenSieveError and attaches the caller's stack).
Napi::Error make_error(Napi::Env env, const Status& s);

// Reads a call's positional arguments, collects the JS objects it touches
// (to keep them alive while an async job runs) and the first argument error.
//
// Arguments are positional and scalars come packed in one Float64Array:
// every property read through N-API costs ~0.3 µs, which made the binding
// slower than small kernels. typings/native.d.ts documents each signature.
class CallContext {
 public:
  // The async flag is always the last argument (see dispatch).
  explicit CallContext(const Napi::CallbackInfo& info)
      : info_(info),
        env_(info.Env()),
        async_(info.Length() > 0 && info[info.Length() - 1].IsBoolean() &&
               info[info.Length() - 1].As<Napi::Boolean>().Value()) {}

  // A tensor as two arguments: info[i] = meta, a Float64Array
  // [dtype, device, offset, ndim, ...shape, ...strides] (elements; it may be
  // longer: the TS layer pads it past V8's 64-byte on-heap limit, because an
  // on-heap TypedArray is copied out of the heap when N-API asks for its
  // data), and
  // info[i + 1] = its memory: a TypedArray (host), a DeviceBuffer (device
  // memory owned by tokensieve) or a bigint address (foreign device memory).
  // Checks that every addressed element lies inside the TypedArray or the
  // owned buffer. With `optional`, an undefined/null meta gives an empty view.
  //
  // An async call must not read memory that JS can take away while the job
  // runs (ArrayBuffer.prototype.transfer, structuredClone with transfer,
  // resizable buffers shrunk): Node-API can neither pin nor watch an
  // ArrayBuffer. So for async calls, host data in an ArrayBuffer is staged:
  // the addressed span is copied into memory the job owns, on this thread
  // (SharedArrayBuffers cannot be detached or shrunk, and are used in place).
  TensorView tensor(size_t i, const char* name, bool optional = false);
  // An output tensor. For async calls, host output in an ArrayBuffer is staged
  // too and copied back when the job completes; if its buffer was detached or
  // shrunk meanwhile, the call rejects with ERR_RANGE. Outputs the call
  // allocated itself (meta[16] == 1) are written in place: JS cannot reach
  // them before the call completes.
  TensorView output(size_t i, const char* name, bool optional = false);
  // info[i]: a Float64Array of at least n scalars.
  const double* params(size_t i, size_t n);
  // info[i]: an Int32Array, as a host pointer + length (its first `count`
  // elements when count >= 0); staged like a tensor for async calls.
  const int32_t* int32_array(size_t i, const char* name, int64_t* length, int64_t count = -1);
  // info[i]: an optional bigint cudaStream_t.
  void* stream(size_t i);
  // info[i]: async flag.
  bool flag(size_t i) const { return info_.Length() > i && info_[i].ToBoolean().Value(); }

  void fail(Code code, const std::string& message) {
    if (status_.ok()) status_ = Status(code, message);
  }
  bool ok() const { return status_.ok(); }
  Napi::Env env() const { return env_; }

  // Runs `job` on the calling thread (async == false: returns undefined or
  // throws) or on libuv's pool (returns a Promise). `job` must not touch JS.
  // `async` must be the call's last argument (the constructor read it).
  Napi::Value dispatch(std::function<Status()> job, bool async);

  // Host memory an async job works on instead of a JS ArrayBuffer's.
  struct Staged {
    std::shared_ptr<char> copy;  // 64-byte aligned
    size_t bytes = 0;
    Napi::Object array;  // the TypedArray (outputs are copied back into it)
    size_t byte_offset = 0;  // of the span within the TypedArray's data
    bool output = false;
    std::string name;
  };

 private:
  Napi::Value arg(size_t i) const { return info_.Length() > i ? info_[i] : env_.Undefined(); }
  void keep(const Napi::Value& v) { kept_.push_back(v.As<Napi::Object>()); }
  TensorView view(size_t i, const char* name, bool optional, bool output);
  // For async calls: returns where the job reads/writes `bytes` at `data`
  // (byte `byte_offset` of TypedArray `array`): a staged copy, or `data`.
  void* stage(const Napi::Value& array, napi_value arraybuffer, void* data, size_t byte_offset, size_t bytes,
              bool output, const char* name);
  // For async calls: an input view whose elements fill at most half of the
  // span it addresses (every row but a few, every head's first row) is
  // gathered into a compact row-major copy instead of staging the span: t's
  // data and strides then describe the copy. Returns false when it did not
  // apply (the caller stages the span).
  bool stage_gathered(const Napi::Value& array, napi_value arraybuffer, size_t esize, size_t span_bytes, TensorView& t,
                      const char* name);
  // Keeps a staged copy alive until the job is done (and, for an output,
  // copies it back into `array` at `byte_offset` then).
  void keep_staged(std::shared_ptr<char> copy, size_t bytes, const Napi::Value& array, size_t byte_offset, bool output,
                   const char* name);
  const Napi::CallbackInfo& info_;
  Napi::Env env_;
  bool async_;
  Status status_;
  std::vector<Napi::Object> kept_;
  std::vector<Staged> staged_;
};

// Device work is enqueued on the op's stream; with `wait` (the default) the
// job — on the JS thread for *Sync, on a libuv worker for the Promise API —
// then blocks until the stream has drained, so errors surface and outputs are
// ready when the call returns.
Status finish_device(int device, void* stream, bool wait, Status enqueued);

// Registration hooks, one per file.
void init_tensor(Napi::Env env, Napi::Object exports);
void init_info(Napi::Env env, Napi::Object exports);
void init_attention(Napi::Env env, Napi::Object exports);
void init_select(Napi::Env env, Napi::Object exports);
void init_quantize(Napi::Env env, Napi::Object exports);
void init_merge(Napi::Env env, Napi::Object exports);
void init_diversity(Napi::Env env, Napi::Object exports);
void init_coverage(Napi::Env env, Napi::Object exports);
void init_stc(Napi::Env env, Napi::Object exports);
void init_blocksparse(Napi::Env env, Napi::Object exports);
void init_bench(Napi::Env env, Napi::Object exports);
void init_params(Napi::Env env, Napi::Object exports);

}  // namespace binding
}  // namespace tokensieve
