// N-API adapters for maxCoverage and mmtokCoverage.
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/coverage.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// maxCoverage(params, coverage, coverageMem, exclude, excludeMem, order, orderMem,
//             sorted, sortedMem, gains, gainsMem, stream, async)
// params: MaxCoverageSlots (binding/params.h)
Napi::Value MaxCoverage(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, MaxCoverageSlots::kCount);
  MaxCoverageParams p;
  p.coverage = cx.tensor(1, "coverage");
  p.exclude = cx.tensor(3, "exclude", true);
  p.order = cx.output(5, "order");
  p.sorted = cx.output(7, "sorted", true);
  p.gains = cx.output(9, "gains", true);
  p.stream = cx.stream(11);
  if (a != nullptr) p.k = to_int64(arg(a, MaxCoverageSlots::k));
  const bool wait = a != nullptr && arg(a, MaxCoverageSlots::wait) != 0;
  // On a device, reading the kernels' error flags drains the stream: only when waiting.
  p.check_errors = wait;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.coverage.on_host()) return cpu::max_coverage(p);
        return finish_device(p.coverage.device, p.stream, wait, cuda::max_coverage(p));
      },
      cx.flag(12));
}

// mmtokCoverage(params, text, textMem, vision, visionMem, aux, auxMem, out, outMem, stream, async)
// params: MmtokCoverageSlots (binding/params.h)
Napi::Value MmtokCoverage(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, MmtokCoverageSlots::kCount);
  MmtokCoverageParams p;
  p.text = cx.tensor(1, "text");
  p.vision = cx.tensor(3, "vision");
  p.vision_aux = cx.tensor(5, "visionAux", true);
  p.out = cx.output(7, "out");
  p.stream = cx.stream(9);
  if (a != nullptr) {
    p.tau_tv = arg(a, MmtokCoverageSlots::tauTV);
    p.tau_vv = arg(a, MmtokCoverageSlots::tauVV);
    p.alpha = arg(a, MmtokCoverageSlots::alpha);
  }
  const bool wait = a != nullptr && arg(a, MmtokCoverageSlots::wait) != 0;
  // On a device, reading the kernels' error flags drains the stream: only when waiting.
  p.check_errors = wait;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.vision.on_host()) return cpu::mmtok_coverage(p);
        return finish_device(p.vision.device, p.stream, wait, cuda::mmtok_coverage(p));
      },
      cx.flag(10));
}

}  // namespace

void init_coverage(Napi::Env env, Napi::Object exports) {
  exports.Set("maxCoverage", Napi::Function::New<MaxCoverage>(env, "maxCoverage"));
  exports.Set("mmtokCoverage", Napi::Function::New<MmtokCoverage>(env, "mmtokCoverage"));
}

}  // namespace binding
}  // namespace tokensieve
