// N-API adapters for topk and gather.
#include "binding/common.h"
#include "tokensieve/runtime.h"
#include "tokensieve/select.h"

namespace tokensieve {
namespace binding {
namespace {

// topk({ scores, k, orderByScore, indices, values?, stream?, wait? }, async)
Napi::Value Topk(const Napi::CallbackInfo& info) {
  CallContext cx(info.Env());
  if (!info[0].IsObject()) throw make_error(info.Env(), Status(Code::kArg, "expected an argument object"));
  Napi::Object a = info[0].As<Napi::Object>();
  TopkParams p;
  p.scores = cx.tensor(a, "scores");
  p.k = static_cast<int64_t>(cx.number(a, "k", 0));
  p.order_by_score = cx.boolean(a, "orderByScore", false);
  p.indices = cx.tensor(a, "indices");
  p.values = cx.tensor(a, "values", /*optional=*/true);
  p.stream = cx.stream(a);
  const bool wait = cx.boolean(a, "wait", true);
  const bool async = info[1].ToBoolean().Value();
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.scores.on_host()) return cpu::topk(p);
        return finish_device(p.scores.device, p.stream, wait, cuda::topk(p));
      },
      async);
}

// gather({ x, indices, out, stream?, wait? }, async)
Napi::Value Gather(const Napi::CallbackInfo& info) {
  CallContext cx(info.Env());
  if (!info[0].IsObject()) throw make_error(info.Env(), Status(Code::kArg, "expected an argument object"));
  Napi::Object a = info[0].As<Napi::Object>();
  GatherParams p;
  p.x = cx.tensor(a, "x");
  p.indices = cx.tensor(a, "indices");
  p.out = cx.tensor(a, "out");
  p.stream = cx.stream(a);
  const bool wait = cx.boolean(a, "wait", true);
  p.check_indices = cx.boolean(a, "checkIndices", true) && (wait || p.x.on_host());
  const bool async = info[1].ToBoolean().Value();
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::gather(p);
        return finish_device(p.x.device, p.stream, wait, cuda::gather(p));
      },
      async);
}

}  // namespace

void init_select(Napi::Env env, Napi::Object exports) {
  exports.Set("topk", Napi::Function::New<Topk>(env, "topk"));
  exports.Set("gather", Napi::Function::New<Gather>(env, "gather"));
}

}  // namespace binding
}  // namespace tokensieve
