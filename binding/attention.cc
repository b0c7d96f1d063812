// N-API adapters for attentionScores and reduceAttention.
#include "binding/common.h"
#include "tokensieve/attention.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// attentionScores(params, queryRows, q, qMem, k, kMem, bias, biasMem, out, outMem, stream, async)
// params: [scale, causal, causalOffset, queryReduce, headReduce, keyBegin, keyEnd,
//          accumulate, checkFinite, wait, numQueryRows, precision, qBlock, kBlock, smoothK]
Napi::Value AttentionScores(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, 15);
  AttentionScoresParams p;
  p.reduce.query_rows =
      cx.int32_array(1, "queryRows", &p.reduce.num_query_rows, to_int64(a[10]));
  p.q = cx.tensor(2, "q");
  p.k = cx.tensor(4, "k");
  p.key_bias = cx.tensor(6, "keyBias", /*optional=*/true);
  p.has_key_bias = p.key_bias.ndim > 0;
  p.out = cx.output(8, "out");
  p.stream = cx.stream(10);
  p.scale = static_cast<float>(a[0]);
  p.causal = a[1] != 0;
  p.causal_offset = to_int64(a[2]);
  p.reduce.query_reduce = static_cast<QueryReduce>(to_enum(a[3]));
  p.reduce.head_reduce = static_cast<HeadReduce>(to_enum(a[4]));
  p.reduce.key_begin = to_int64(a[5]);
  p.reduce.key_end = to_int64(a[6]);
  p.reduce.accumulate = a[7] != 0;
  p.precision = static_cast<ScorePrecision>(to_enum(a[11]));
  p.q_block = to_int64(a[12]);
  p.k_block = to_int64(a[13]);
  p.smooth_k = a[14] != 0;
  const bool wait = a[9] != 0;
  // Reading the NaN flag back needs the stream to drain: only when waiting.
  p.check_finite = a[8] != 0 && (wait || p.q.on_host());
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.q.on_host()) return cpu::attention_scores(p);
        return finish_device(p.q.device, p.stream, wait, cuda::attention_scores(p));
      },
      cx.flag(11));
}

// reduceAttention(params, queryRows, probs, probsMem, out, outMem, stream, async)
// params: [queryReduce, headReduce, keyBegin, keyEnd, accumulate, checkFinite, wait,
//          numQueryRows]
Napi::Value ReduceAttention(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, 8);
  ReduceAttentionParams p;
  p.reduce.query_rows =
      cx.int32_array(1, "queryRows", &p.reduce.num_query_rows, to_int64(a[7]));
  p.probs = cx.tensor(2, "probs");
  p.out = cx.output(4, "out");
  p.stream = cx.stream(6);
  p.reduce.query_reduce = static_cast<QueryReduce>(to_enum(a[0]));
  p.reduce.head_reduce = static_cast<HeadReduce>(to_enum(a[1]));
  p.reduce.key_begin = to_int64(a[2]);
  p.reduce.key_end = to_int64(a[3]);
  p.reduce.accumulate = a[4] != 0;
  const bool wait = a[6] != 0;
  p.check_finite = a[5] != 0 && (wait || p.probs.on_host());
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
