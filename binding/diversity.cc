// N-API adapters for kCenter and kMedoids.
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/diversity.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// kCenter(params, x, xMem, exclude, excludeMem, order, orderMem, sorted, sortedMem,
//         distances, distancesMem, stream, async)
// params: KCenterSlots (binding/params.h)
Napi::Value KCenter(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, KCenterSlots::kCount);
  KCenterParams p;
  p.x = cx.tensor(1, "x");
  p.exclude = cx.tensor(3, "exclude", /*optional=*/true);
  p.order = cx.output(5, "order");
  p.sorted = cx.output(7, "sorted", true);
  p.distances = cx.output(9, "distances", true);
  p.stream = cx.stream(11);
  if (a != nullptr) {
    p.k = to_int64(arg(a, KCenterSlots::k));
    p.segments = to_int64(arg(a, KCenterSlots::segments));
    p.metric = static_cast<DistanceMetric>(to_enum(arg(a, KCenterSlots::metric)));
    p.seed = static_cast<CenterSeed>(to_enum(arg(a, KCenterSlots::seed)));
    p.seed_index = to_int64(arg(a, KCenterSlots::seedIndex));
  }
  const bool wait = a != nullptr && arg(a, KCenterSlots::wait) != 0;
  // On a device, reading the kernels' error flags drains the stream: only when waiting.
  p.check_errors = wait;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::k_center(p);
        return finish_device(p.x.device, p.stream, wait, cuda::k_center(p));
      },
      cx.flag(12));
}

// kMedoids(params, x, xMem, medoids, medoidsMem, assignments, assignmentsMem,
//          iterations, iterationsMem, stream, async)
// params: KMedoidsSlots (binding/params.h)
Napi::Value KMedoids(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, KMedoidsSlots::kCount);
  KMedoidsParams p;
  p.x = cx.tensor(1, "x");
  p.medoids = cx.output(3, "medoids");
  p.assignments = cx.output(5, "assignments");
  p.iterations = cx.output(7, "iterations", true);
  p.stream = cx.stream(9);
  if (a != nullptr) {
    p.k = to_int64(arg(a, KMedoidsSlots::k));
    p.segments = to_int64(arg(a, KMedoidsSlots::segments));
    p.metric = static_cast<DistanceMetric>(to_enum(arg(a, KMedoidsSlots::metric)));
    p.max_iters = to_int64(arg(a, KMedoidsSlots::maxIters));
    p.tol = arg(a, KMedoidsSlots::tol);
  }
  const bool wait = a != nullptr && arg(a, KMedoidsSlots::wait) != 0;
  // On a device, reading the kernels' error flags drains the stream: only when waiting.
  p.check_errors = wait;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::k_medoids(p);
        return finish_device(p.x.device, p.stream, wait, cuda::k_medoids(p));
      },
      cx.flag(10));
}

}  // namespace

void init_diversity(Napi::Env env, Napi::Object exports) {
  exports.Set("kCenter", Napi::Function::New<KCenter>(env, "kCenter"));
  exports.Set("kMedoids", Napi::Function::New<KMedoids>(env, "kMedoids"));
}

}  // namespace binding
}  // namespace tokensieve
