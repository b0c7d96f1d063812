// placeholder, replaced below
#include "tokensieve/blocksparse.h"
namespace tokensieve { namespace cuda {
Status block_sparse_attention(const BlockSparseAttentionParams&) { return Status(Code::kUnsupported, "wip"); }
Status block_attention_mass(const BlockAttentionMassParams&) { return Status(Code::kUnsupported, "wip"); }
Status block_pool(const BlockPoolParams&) { return Status(Code::kUnsupported, "wip"); }
Status apply_reorder(const ApplyReorderParams&) { return Status(Code::kUnsupported, "wip"); }
}}
