// N-API adapters for topk and gather.
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/runtime.h"
#include "tokensieve/select.h"

namespace tokensieve {
namespace binding {
namespace {

// topk(params, scores, scoresMem, indices, indicesMem, values, valuesMem, stream, async)
// params: TopkSlots (binding/params.h); values may be undefined.
Napi::Value Topk(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, TopkSlots::kCount);
  TopkParams p;
  p.scores = cx.tensor(1, "scores");
  p.indices = cx.output(3, "indices");
  p.values = cx.output(5, "values", /*optional=*/true);
  p.stream = cx.stream(7);
  p.k = to_int64(arg(a, TopkSlots::k));
  p.order_by_score = arg(a, TopkSlots::orderByScore) != 0;
  const bool wait = arg(a, TopkSlots::wait) != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.scores.on_host()) return cpu::topk(p);
        return finish_device(p.scores.device, p.stream, wait, cuda::topk(p));
      },
      cx.flag(8));
}

// gather(params, x, xMem, indices, indicesMem, out, outMem, stream, async)
// params: GatherSlots (binding/params.h)
Napi::Value Gather(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, GatherSlots::kCount);
  GatherParams p;
  p.x = cx.tensor(1, "x");
  p.indices = cx.tensor(3, "indices");
  p.out = cx.output(5, "out");
  p.stream = cx.stream(7);
  const bool wait = arg(a, GatherSlots::wait) != 0;
  p.check_indices = arg(a, GatherSlots::checkIndices) != 0 && (wait || p.x.on_host());
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::gather(p);
        return finish_device(p.x.device, p.stream, wait, cuda::gather(p));
      },
      cx.flag(8));
}

}  // namespace

void init_select(Napi::Env env, Napi::Object exports) {
  exports.Set("topk", Napi::Function::New<Topk>(env, "topk"));
  exports.Set("gather", Napi::Function::New<Gather>(env, "gather"));
}

}  // namespace binding
}  // namespace tokensieve
