// Shared N-API plumbing: JS tensor descriptors → TensorView, Status → JS
// errors, and running a kernel synchronously or on libuv's pool. The binding
// is the only code that includes napi.h.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "tokensieve/tensor.h"

namespace tokensieve {
namespace binding {

// An Error with a stable `code` (the TS layer turns it into TypeError,
// RangeError or TokenSieveError and attaches the caller's stack).
Napi::Error make_error(Napi::Env env, const Status& s);

// Collects the JS objects a call touches (to keep them alive while an async
// job runs) and the first argument error.
class CallContext {
 public:
  explicit CallContext(Napi::Env env) : env_(env) {}

  // Reads a tensor descriptor:
  //   { dtype: number, shape: number[], strides: number[], offset: number,
  //     device: number, data?: TypedArray, ptr?: bigint, owner?: DeviceBuffer }
  // `name` is used in messages. Checks that every addressed element lies
  // inside the host TypedArray (or the owned device buffer).
  TensorView tensor(const Napi::Object& args, const char* name, bool optional = false);
  // An Int32Array argument as a host pointer + length.
  const int32_t* int32_array(const Napi::Object& args, const char* name, int64_t* length);
  double number(const Napi::Object& args, const char* name, double fallback);
  bool boolean(const Napi::Object& args, const char* name, bool fallback);
  void* stream(const Napi::Object& args);

  void fail(Code code, const std::string& message) {
    if (status_.ok()) status_ = Status(code, message);
  }
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  Napi::Env env() const { return env_; }

  // Runs `job` on the calling thread (async == false: returns undefined or
  // throws) or on libuv's pool (returns a Promise). `job` must not touch JS.
  Napi::Value dispatch(std::function<Status()> job, bool async);

 private:
  void keep(const Napi::Value& v) {
    if (v.IsObject()) kept_.push_back(v.As<Napi::Object>());
  }
  Napi::Env env_;
  Status status_;
  std::vector<Napi::Object> kept_;
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

}  // namespace binding
}  // namespace tokensieve
