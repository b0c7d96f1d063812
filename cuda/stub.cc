// Compiled instead of cuda/*.cu when nvcc was not found (see CMakeLists.txt):
// every CUDA entry point says why, and runtime_info() reports a build without
// CUDA. Plain C++: no CUDA headers.
#include "tokensieve/attention.h"
#include "tokensieve/bench.h"
#include "tokensieve/blocksparse.h"
#include "tokensieve/coverage.h"
#include "tokensieve/diversity.h"
#include "tokensieve/merge.h"
#include "tokensieve/quantize.h"
#include "tokensieve/runtime.h"
#include "tokensieve/select.h"
#include "tokensieve/stc.h"

namespace tokensieve {
namespace cuda {
namespace {

const char* const kWhy =
    "tokensieve was built without CUDA (nvcc was not found when the addon was built); "
    "rebuild with nvcc on PATH: npm run rebuild:native";

Status unavailable() { return Status(Code::kUnsupported, kWhy); }

}  // namespace

int compiled_version() { return 0; }
const char* compiled_architectures() { return ""; }

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.compiled = false;
  info.available = false;
  info.unavailable_reason = kWhy;
  return info;
}

Status device_malloc(int, size_t, void*, void** out) {
  if (out != nullptr) *out = nullptr;
  return unavailable();
}
Status device_free(int, void*, void*) { return unavailable(); }
Status memcpy_sync(int, void*, const void*, size_t, CopyKind, void*) { return unavailable(); }
Status stream_synchronize(int, void*) { return unavailable(); }

Status attention_scores(const AttentionScoresParams&) { return unavailable(); }
Status reduce_attention(const ReduceAttentionParams&) { return unavailable(); }
Status topk(const TopkParams&) { return unavailable(); }
Status gather(const GatherParams&) { return unavailable(); }
Status quantize(const QuantizeParams&) { return unavailable(); }
Status dequantize(const DequantizeParams&) { return unavailable(); }

// merge (tokensieve/merge.h)
Status bipartite_match(const BipartiteMatchParams&) { return unavailable(); }
Status merge(const MergeParams&) { return unavailable(); }
Status contextual_merge(const ContextualMergeParams&) { return unavailable(); }
// diversity (tokensieve/diversity.h)
Status k_center(const KCenterParams&) { return unavailable(); }
Status k_medoids(const KMedoidsParams&) { return unavailable(); }
// coverage (tokensieve/coverage.h)
Status max_coverage(const MaxCoverageParams&) { return unavailable(); }
Status mmtok_coverage(const MmtokCoverageParams&) { return unavailable(); }
// stc (tokensieve/stc.h)
Status stc_scores(const StcScoresParams&) { return unavailable(); }
// blocksparse (tokensieve/blocksparse.h)
Status block_sparse_attention(const BlockSparseAttentionParams&) { return unavailable(); }
Status block_attention_mass(const BlockAttentionMassParams&) { return unavailable(); }
Status block_pool(const BlockPoolParams&) { return unavailable(); }
Status apply_reorder(const ApplyReorderParams&) { return unavailable(); }

Status fill_uniform(const FillUniformParams&) { return unavailable(); }
Status measure_device_roof(int, DeviceRoof*) { return unavailable(); }
Status start_timer(int, void*, double) { return unavailable(); }
Status stop_timer(int, void*, float*) { return unavailable(); }

}  // namespace cuda
}  // namespace tokensieve
