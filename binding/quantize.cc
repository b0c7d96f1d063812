// N-API adapters for quantize and dequantize.
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/quantize.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// The scheme slots of quantize and dequantize (QuantizeSlots, DequantizeSlots).
template <class Slots>
QuantScheme read_scheme(const double* a) {
  QuantScheme s;
  s.bits = static_cast<int>(to_enum(arg(a, Slots::bits)));
  s.granularity = static_cast<Granularity>(to_enum(arg(a, Slots::granularity)));
  s.block = to_int64(arg(a, Slots::block));
  s.pad = arg(a, Slots::pad) != 0;
  return s;
}

// quantize(params, x, xMem, data, dataMem, scales, scalesMem, mean, meanMem, stream, async)
// params: QuantizeSlots (binding/params.h); mean may be undefined.
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, QuantizeSlots::kCount);
  QuantizeParams p;
  p.scheme = read_scheme<QuantizeSlots>(a);
  p.x = cx.tensor(1, "x");
  p.data = cx.output(3, "data");
  p.scales = cx.output(5, "scales");
  p.mean = cx.output(7, "mean", /*optional=*/true);
  p.stream = cx.stream(9);
  p.smooth = arg(a, QuantizeSlots::smooth) != 0;
  const bool wait = arg(a, QuantizeSlots::wait) != 0;
  p.check_finite = arg(a, QuantizeSlots::checkFinite) != 0 && (wait || p.x.on_host());
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::quantize(p);
        return finish_device(p.x.device, p.stream, wait, cuda::quantize(p));
      },
      cx.flag(10));
}

// dequantize(params, data, dataMem, scales, scalesMem, mean, meanMem, out, outMem, stream, async)
// params: DequantizeSlots (binding/params.h); mean may be undefined.
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, DequantizeSlots::kCount);
  DequantizeParams p;
  p.scheme = read_scheme<DequantizeSlots>(a);
  p.data = cx.tensor(1, "data");
  p.scales = cx.tensor(3, "scales");
  p.mean = cx.tensor(5, "mean", /*optional=*/true);
  p.out = cx.output(7, "out");
  p.stream = cx.stream(9);
  p.add_mean = arg(a, DequantizeSlots::addMean) != 0;
  const bool wait = arg(a, DequantizeSlots::wait) != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.out.on_host()) return cpu::dequantize(p);
        return finish_device(p.out.device, p.stream, wait, cuda::dequantize(p));
      },
      cx.flag(10));
}

}  // namespace

void init_quantize(Napi::Env env, Napi::Object exports) {
  exports.Set("quantize", Napi::Function::New<Quantize>(env, "quantize"));
  exports.Set("dequantize", Napi::Function::New<Dequantize>(env, "dequantize"));
}

}  // namespace binding
}  // namespace tokensieve
