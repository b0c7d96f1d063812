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
  return exports;
}

}  // namespace binding
}  // namespace tokensieve

static Napi::Object InitTokensieve(Napi::Env env, Napi::Object exports) {
  return tokensieve::binding::Init(env, exports);
}

NODE_API_MODULE(tokensieve, InitTokensieve)
