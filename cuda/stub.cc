// Compiled instead of cuda/*.cu when nvcc is not found: every CUDA entry
// point reports why, and info() says the build has no CUDA.
#include "tokensieve/attention.h"
#include "tokensieve/runtime.h"
#include "tokensieve/select.h"

namespace tokensieve {
namespace cuda {
namespace {

const char* kWhy =
    "tokensieve was built without CUDA (nvcc was not found when the addon was built); "
    "rebuild with nvcc on PATH: npm run rebuild:native";

Status unavailable() { return Status(Code::kUnsupported, kWhy); }

}  // namespace

int compiled_version() { return 0; }
const char* compiled_architectures() { return ""; }

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.unavailable_reason = kWhy;
  return info;
}

Status device_malloc(int, size_t, void*, void** out) {
  *out = nullptr;
  return unavailable();
}
Status device_free(int, void*, void*) { return unavailable(); }
Status memcpy_sync(int, void*, const void*, size_t, CopyKind, void*) { return unavailable(); }
Status stream_synchronize(int, void*) { return unavailable(); }
Status attention_scores(const AttentionScoresParams&) { return unavailable(); }
Status reduce_attention(const ReduceAttentionParams&) { return unavailable(); }
Status topk(const TopkParams&) { return unavailable(); }
Status gather(const GatherParams&) { return unavailable(); }

}  // namespace cuda
}  // namespace tokensieve
