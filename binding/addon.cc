// Module entry. N-API modules are context-aware: each Node environment (the
// main thread and every worker_thread) gets its own exports and DeviceBuffer
// class; the CPU thread pool is process-wide and shared.
#include "binding/common.h"

namespace tokensieve {
namespace binding {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  init_tensor(env, exports);
  init_info(env, exports);
  init_attention(env, exports);
  init_select(env, exports);
  init_quantize(env, exports);
  init_merge(env, exports);
  init_diversity(env, exports);
  init_coverage(env, exports);
  init_stc(env, exports);
  init_blocksparse(env, exports);
  init_bench(env, exports);
  init_params(env, exports);
  return exports;
}

}  // namespace binding
}  // namespace tokensieve

static Napi::Object InitTokensieve(Napi::Env env, Napi::Object exports) {
  return tokensieve::binding::Init(env, exports);
}

// Registered by hand instead of NODE_API_MODULE so that the module reports
// Node-API's experimental version while compiling against NAPI_VERSION 8:
// for such modules Node runs GC finalizers synchronously, inside the
// collection (Node 20.10+), instead of deferring them to a setImmediate that
// a synchronous loop never reaches. Without this, undisposed device tensors
// were freed only when the event loop turned: a loop allocating device
// tensors without dispose() ran the GPU out of memory (H200, 2026-12-04).
// The only finalizer that runs during GC is ~DeviceBuffer, which calls no JS
// and only Node-API functions that take a basic env (references, external
// memory). We use no experimental function, so older Node versions, which
// defer finalizers regardless, load the same binary.
extern "C" {
NAPI_MODULE_EXPORT int32_t NODE_API_MODULE_GET_API_VERSION(void) { return NAPI_VERSION_EXPERIMENTAL; }
NAPI_MODULE_EXPORT napi_value NAPI_MODULE_INITIALIZER(napi_env env, napi_value exports) {
  return Napi::RegisterModule(env, exports, InitTokensieve);
}
}
