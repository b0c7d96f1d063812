// N-API adapters for the blocksparse family: blockSparseAttention,
// blockAttentionMass, blockPool, applyReorder.
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/blocksparse.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// blockSparseAttention(params, q, qMem, k, kMem, v, vMem, kvNumBlocks, mem, kvIndices, mem,
//                      fullKvNumBlocks, mem, fullKvIndices, mem, perm, permMem, out, outMem,
//                      lse, lseMem, stream, async)
// params: BlockSparseAttentionSlots (binding/params.h); the mask lists, the
// full lists, perm and lse may be undefined.
Napi::Value BlockSparseAttention(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, BlockSparseAttentionSlots::kCount);
  BlockSparseAttentionParams p;
  p.q = cx.tensor(1, "q");
  p.k = cx.tensor(3, "k");
  p.v = cx.tensor(5, "v");
  p.mask.num_blocks = cx.tensor(7, "kvNumBlocks", true);
  p.mask.indices = cx.tensor(9, "kvIndices", true);
  p.mask.full_num_blocks = cx.tensor(11, "fullKvNumBlocks", true);
  p.mask.full_indices = cx.tensor(13, "fullKvIndices", true);
  p.perm = cx.tensor(15, "perm", true);
  p.out = cx.output(17, "out");
  p.lse = cx.output(19, "lse", true);
  p.stream = cx.stream(21);
  if (a != nullptr) {
    p.scale = static_cast<float>(arg(a, BlockSparseAttentionSlots::scale));
    p.precision = static_cast<BlockSparsePrecision>(to_enum(arg(a, BlockSparseAttentionSlots::precision)));
    p.mask.dense = arg(a, BlockSparseAttentionSlots::dense) != 0;
    p.mask.block_q = to_int64(arg(a, BlockSparseAttentionSlots::blockQ));
    p.mask.block_k = to_int64(arg(a, BlockSparseAttentionSlots::blockK));
    p.check_finite = arg(a, BlockSparseAttentionSlots::checkFinite) != 0;
  }
  const bool waits = a != nullptr && arg(a, BlockSparseAttentionSlots::wait) != 0;
  // On a device, reading the NaN flag back drains the stream: only when waiting.
  p.check_finite = p.check_finite && (waits || p.q.on_host());
  if (!p.mask.dense && p.mask.num_blocks.data == nullptr && cx.ok())
    cx.fail(Code::kArg, "expected kvNumBlocks and kvIndices unless the mask is dense");
  const bool wait = a != nullptr && arg(a, BlockSparseAttentionSlots::wait) != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.q.on_host()) return cpu::block_sparse_attention(p);
        return finish_device(p.q.device, p.stream, wait, cuda::block_sparse_attention(p));
      },
      cx.flag(22));
}

// blockAttentionMass(params, queryRows, q, qMem, k, kMem, out, outMem, stream, async)
// params: BlockAttentionMassSlots; the first numQueryRows of queryRows (0: every row).
Napi::Value BlockAttentionMass(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, BlockAttentionMassSlots::kCount);
  BlockAttentionMassParams p;
  if (a != nullptr && arg(a, BlockAttentionMassSlots::numQueryRows) != 0)
    p.query_rows = cx.int32_array(1, "rows", &p.num_query_rows, to_int64(arg(a, BlockAttentionMassSlots::numQueryRows)));
  p.q = cx.tensor(2, "q");
  p.k = cx.tensor(4, "k");
  p.out = cx.output(6, "out");
  p.stream = cx.stream(8);
  if (a != nullptr) {
    p.scale = static_cast<float>(arg(a, BlockAttentionMassSlots::scale));
    p.block_q = to_int64(arg(a, BlockAttentionMassSlots::blockQ));
    p.block_k = to_int64(arg(a, BlockAttentionMassSlots::blockK));
    p.check_finite = arg(a, BlockAttentionMassSlots::checkFinite) != 0;
  }
  const bool wait = a != nullptr && arg(a, BlockAttentionMassSlots::wait) != 0;
  p.check_finite = p.check_finite && (wait || p.q.on_host());  // a device flag read drains the stream
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.q.on_host()) return cpu::block_attention_mass(p);
        return finish_device(p.q.device, p.stream, wait, cuda::block_attention_mass(p));
      },
      cx.flag(9));
}

// blockPool(params, x, xMem, mean, meanMem, selfSim, selfSimMem, stream, async)
Napi::Value BlockPool(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, BlockPoolSlots::kCount);
  BlockPoolParams p;
  p.x = cx.tensor(1, "x");
  p.mean = cx.output(3, "mean");
  p.self_sim = cx.output(5, "selfSim");
  p.stream = cx.stream(7);
  if (a != nullptr) p.block = to_int64(arg(a, BlockPoolSlots::block));
  const bool wait = a != nullptr && arg(a, BlockPoolSlots::wait) != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::block_pool(p);
        return finish_device(p.x.device, p.stream, wait, cuda::block_pool(p));
      },
      cx.flag(8));
}

// applyReorder(params, x, xMem, perm, permMem, out, outMem, stream, async)
Napi::Value ApplyReorder(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, ApplyReorderSlots::kCount);
  ApplyReorderParams p;
  p.x = cx.tensor(1, "x");
  p.perm = cx.tensor(3, "perm");
  p.out = cx.output(5, "out");
  p.stream = cx.stream(7);
  if (a != nullptr) p.inverse = arg(a, ApplyReorderSlots::inverse) != 0;
  const bool wait = a != nullptr && arg(a, ApplyReorderSlots::wait) != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::apply_reorder(p);
        return finish_device(p.x.device, p.stream, wait, cuda::apply_reorder(p));
      },
      cx.flag(8));
}

}  // namespace

void init_blocksparse(Napi::Env env, Napi::Object exports) {
  exports.Set("blockSparseAttention", Napi::Function::New<BlockSparseAttention>(env, "blockSparseAttention"));
  exports.Set("blockAttentionMass", Napi::Function::New<BlockAttentionMass>(env, "blockAttentionMass"));
  exports.Set("blockPool", Napi::Function::New<BlockPool>(env, "blockPool"));
  exports.Set("applyReorder", Napi::Function::New<ApplyReorder>(env, "applyReorder"));
}

}  // namespace binding
}  // namespace tokensieve
