// N-API adapters for attentionScores and reduceAttention.
#include "binding/common.h"
#include "tokensieve/attention.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

ScoreReduction read_reduction(CallContext& cx, const Napi::Object& a) {
  ScoreReduction r;
  r.query_rows = cx.int32_array(a, "queryRows", &r.num_query_rows);
  r.query_reduce = static_cast<QueryReduce>(static_cast<int32_t>(cx.number(a, "queryReduce", 0)));
  r.head_reduce = static_cast<HeadReduce>(static_cast<int32_t>(cx.number(a, "headReduce", 0)));
  r.key_begin = static_cast<int64_t>(cx.number(a, "keyBegin", 0));
  r.key_end = static_cast<int64_t>(cx.number(a, "keyEnd", 0));
  r.accumulate = cx.boolean(a, "accumulate", false);
  return r;
}

// attentionScores(args, async)
Napi::Value AttentionScores(const Napi::CallbackInfo& info) {
  CallContext cx(info.Env());
  if (!info[0].IsObject()) throw make_error(info.Env(), Status(Code::kArg, "expected an argument object"));
  Napi::Object a = info[0].As<Napi::Object>();
  AttentionScoresParams p;
  p.q = cx.tensor(a, "q");
  p.k = cx.tensor(a, "k");
  p.key_bias = cx.tensor(a, "keyBias", /*optional=*/true);
  p.has_key_bias = p.key_bias.data != nullptr || p.key_bias.ndim > 0;
  p.scale = static_cast<float>(cx.number(a, "scale", 1.0));
  p.causal = cx.boolean(a, "causal", false);
  p.causal_offset = static_cast<int64_t>(cx.number(a, "causalOffset", 0));
  p.reduce = read_reduction(cx, a);
  const bool wait = cx.boolean(a, "wait", true);
  p.check_finite = cx.boolean(a, "checkFinite", true) && (wait || p.q.on_host());
  p.out = cx.tensor(a, "out");
  p.stream = cx.stream(a);
  const bool async = info[1].ToBoolean().Value();
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.q.on_host()) return cpu::attention_scores(p);
        return finish_device(p.q.device, p.stream, wait, cuda::attention_scores(p));
      },
      async);
}

// reduceAttention(args, async)
Napi::Value ReduceAttention(const Napi::CallbackInfo& info) {
  CallContext cx(info.Env());
  if (!info[0].IsObject()) throw make_error(info.Env(), Status(Code::kArg, "expected an argument object"));
  Napi::Object a = info[0].As<Napi::Object>();
  ReduceAttentionParams p;
  p.probs = cx.tensor(a, "probs");
  p.reduce = read_reduction(cx, a);
  const bool wait = cx.boolean(a, "wait", true);
  p.check_finite = cx.boolean(a, "checkFinite", true) && (wait || p.probs.on_host());
  p.out = cx.tensor(a, "out");
  p.stream = cx.stream(a);
  const bool async = info[1].ToBoolean().Value();
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.probs.on_host()) return cpu::reduce_attention(p);
        return finish_device(p.probs.device, p.stream, wait, cuda::reduce_attention(p));
      },
      async);
}

}  // namespace

void init_attention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionScores", Napi::Function::New<AttentionScores>(env, "attentionScores"));
  exports.Set("reduceAttention", Napi::Function::New<ReduceAttention>(env, "reduceAttention"));
}

}  // namespace binding
}  // namespace tokensieve
