// N-API adapters for attentionScores and reduceAttention.
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/attention.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// attentionScores(params, queryRows, q, qMem, k, kMem, bias, biasMem, out, outMem, stream, async)
// params: AttentionScoresSlots (binding/params.h)
Napi::Value AttentionScores(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, AttentionScoresSlots::kCount);
  AttentionScoresParams p;
  p.reduce.query_rows =
      cx.int32_array(1, "queryRows", &p.reduce.num_query_rows, to_int64(arg(a, AttentionScoresSlots::numQueryRows)));
  p.q = cx.tensor(2, "q");
  p.k = cx.tensor(4, "k");
  p.key_bias = cx.tensor(6, "keyBias", /*optional=*/true);
  p.has_key_bias = p.key_bias.ndim > 0;
  p.out = cx.output(8, "out");
  p.stream = cx.stream(10);
  p.scale = static_cast<float>(arg(a, AttentionScoresSlots::scale));
  p.causal = arg(a, AttentionScoresSlots::causal) != 0;
  p.causal_offset = to_int64(arg(a, AttentionScoresSlots::causalOffset));
  p.reduce.query_reduce = static_cast<QueryReduce>(to_enum(arg(a, AttentionScoresSlots::queryReduce)));
  p.reduce.head_reduce = static_cast<HeadReduce>(to_enum(arg(a, AttentionScoresSlots::headReduce)));
  p.reduce.key_begin = to_int64(arg(a, AttentionScoresSlots::keyBegin));
  p.reduce.key_end = to_int64(arg(a, AttentionScoresSlots::keyEnd));
  p.reduce.accumulate = arg(a, AttentionScoresSlots::accumulate) != 0;
  p.precision = static_cast<ScorePrecision>(to_enum(arg(a, AttentionScoresSlots::precision)));
  p.q_block = to_int64(arg(a, AttentionScoresSlots::qBlock));
  p.k_block = to_int64(arg(a, AttentionScoresSlots::kBlock));
  p.smooth_k = arg(a, AttentionScoresSlots::smoothK) != 0;
  const bool wait = arg(a, AttentionScoresSlots::wait) != 0;
  // Reading the NaN flag back needs the stream to drain: only when waiting.
  p.check_finite = arg(a, AttentionScoresSlots::checkFinite) != 0 && (wait || p.q.on_host());
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.q.on_host()) return cpu::attention_scores(p);
        return finish_device(p.q.device, p.stream, wait, cuda::attention_scores(p));
      },
      cx.flag(11));
}

// reduceAttention(params, queryRows, probs, probsMem, out, outMem, stream, async)
// params: ReduceAttentionSlots (binding/params.h)
Napi::Value ReduceAttention(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, ReduceAttentionSlots::kCount);
  ReduceAttentionParams p;
  p.reduce.query_rows =
      cx.int32_array(1, "queryRows", &p.reduce.num_query_rows, to_int64(arg(a, ReduceAttentionSlots::numQueryRows)));
  p.probs = cx.tensor(2, "probs");
  p.out = cx.output(4, "out");
  p.stream = cx.stream(6);
  p.reduce.query_reduce = static_cast<QueryReduce>(to_enum(arg(a, ReduceAttentionSlots::queryReduce)));
  p.reduce.head_reduce = static_cast<HeadReduce>(to_enum(arg(a, ReduceAttentionSlots::headReduce)));
  p.reduce.key_begin = to_int64(arg(a, ReduceAttentionSlots::keyBegin));
  p.reduce.key_end = to_int64(arg(a, ReduceAttentionSlots::keyEnd));
  p.reduce.accumulate = arg(a, ReduceAttentionSlots::accumulate) != 0;
  const bool wait = arg(a, ReduceAttentionSlots::wait) != 0;
  p.check_finite = arg(a, ReduceAttentionSlots::checkFinite) != 0 && (wait || p.probs.on_host());
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.probs.on_host()) return cpu::reduce_attention(p);
        return finish_device(p.probs.device, p.stream, wait, cuda::reduce_attention(p));
      },
      cx.flag(7));
}

}  // namespace

void init_attention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionScores", Napi::Function::New<AttentionScores>(env, "attentionScores"));
  exports.Set("reduceAttention", Napi::Function::New<ReduceAttention>(env, "reduceAttention"));
}

}  // namespace binding
}  // namespace tokensieve
