// N-API adapters for token merging (tokensieve/merge.h).
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/merge.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// bipartiteMatch(params, metric, metricMem, splitA, splitAMem, splitB, splitBMem,
//                assign, assignMem, unm, unmMem, src, srcMem, dst, dstMem, stream, async)
// params: BipartiteMatchSlots (binding/params.h)
Napi::Value BipartiteMatch(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, BipartiteMatchSlots::kCount);
  BipartiteMatchParams p;
  p.metric = cx.tensor(1, "metric");
  p.split_a = cx.tensor(3, "splitA");
  p.split_b = cx.tensor(5, "splitB");
  p.assign = cx.output(7, "assign");
  p.unm_idx = cx.output(9, "unmerged", /*optional=*/true);
  p.src_idx = cx.output(11, "sources", /*optional=*/true);
  p.dst_idx = cx.output(13, "destinations", /*optional=*/true);
  p.stream = cx.stream(15);
  p.r = to_int64(arg(a, BipartiteMatchSlots::r));
  p.protect_cls = arg(a, BipartiteMatchSlots::protectCls) != 0;
  p.protect_distill = arg(a, BipartiteMatchSlots::protectDistill) != 0;
  p.precision = static_cast<MatchPrecision>(to_enum(arg(a, BipartiteMatchSlots::precision)));  // validate() rejects anything but 0 and 1
  const bool wait = arg(a, BipartiteMatchSlots::wait) != 0;
  p.device_checks = wait || p.metric.on_host();  // a device flag read drains the stream
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.metric.on_host()) return cpu::bipartite_match(p);
        return finish_device(p.metric.device, p.stream, wait, cuda::bipartite_match(p));
      },
      cx.flag(16));
}

// merge(params, x, xMem, assign, assignMem, sizes, sizesMem, out, outMem,
//       sizesOut, sizesOutMem, stream, async)
// params: MergeSlots (binding/params.h); sizes and sizesOut may be undefined.
Napi::Value Merge(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, MergeSlots::kCount);
  MergeParams p;
  p.x = cx.tensor(1, "x");
  p.assign = cx.tensor(3, "assign");
  p.sizes = cx.tensor(5, "sizes", /*optional=*/true);
  p.out = cx.output(7, "out");
  p.sizes_out = cx.output(9, "sizesOut", /*optional=*/true);
  p.stream = cx.stream(11);
  p.n_out = to_int64(arg(a, MergeSlots::nOut));
  p.mode = static_cast<MergeMode>(to_enum(arg(a, MergeSlots::mode)));
  const bool wait = arg(a, MergeSlots::wait) != 0;
  p.device_checks = wait || p.x.on_host();  // a device flag read drains the stream
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::merge(p);
        return finish_device(p.x.device, p.stream, wait, cuda::merge(p));
      },
      cx.flag(12));
}

// contextualMerge(params, x, xMem, metric, metricMem, remaining, remainingMem,
//                 out, outMem, stream, async)
// params: ContextualMergeSlots (binding/params.h)
Napi::Value ContextualMerge(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, ContextualMergeSlots::kCount);
  ContextualMergeParams p;
  p.x = cx.tensor(1, "x");
  p.metric = cx.tensor(3, "metric");
  // keepSpec: what slot 5 holds. 0: the remaining tokens [B, Nr]; 1:
  // keptIndices [B, K]; 2: keepMask [B, N]. With 1 and 2 the back end lists
  // the remaining tokens itself (no read of a device keep spec).
  const double spec = arg(a, ContextualMergeSlots::keepSpec);
  if (spec == 1)
    p.kept = cx.tensor(5, "keptIndices");
  else if (spec == 2)
    p.keep_mask = cx.tensor(5, "keepMask");
  else
    p.remaining = cx.tensor(5, "remaining");
  p.out = cx.output(7, "out");
  p.stream = cx.stream(9);
  p.c = to_int64(arg(a, ContextualMergeSlots::c));
  const bool wait = arg(a, ContextualMergeSlots::wait) != 0;
  p.device_checks = wait || p.x.on_host();  // a device flag read drains the stream
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::contextual_merge(p);
        return finish_device(p.x.device, p.stream, wait, cuda::contextual_merge(p));
      },
      cx.flag(10));
}

}  // namespace

void init_merge(Napi::Env env, Napi::Object exports) {
  exports.Set("bipartiteMatch", Napi::Function::New<BipartiteMatch>(env, "bipartiteMatch"));
  exports.Set("merge", Napi::Function::New<Merge>(env, "merge"));
  exports.Set("contextualMerge", Napi::Function::New<ContextualMerge>(env, "contextualMerge"));
}

}  // namespace binding
}  // namespace tokensieve
