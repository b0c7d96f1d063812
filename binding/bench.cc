// N-API adapters for the benchmark helpers (include/tokensieve/bench.h). Not
// public API: bench/ calls them through native().
#include "binding/common.h"
#include "tokensieve/bench.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

double number_or(const Napi::Value& v, double fallback) {
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

// fillUniform(meta, memory, seed, lo, hi, stream, async): x ← uniform values
// in [lo, hi) from (seed, index) on the tensor's device (same values on both).
Napi::Value FillUniform(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  FillUniformParams p;
  p.out = cx.output(0, "out");
  const double seed = number_or(info[2], 0);
  p.seed = seed >= 0 && seed < 9007199254740992.0 ? static_cast<uint64_t>(seed) : 0;
  p.lo = static_cast<float>(number_or(info[3], -1));
  p.hi = static_cast<float>(number_or(info[4], 1));
  p.stream = cx.stream(5);
  return cx.dispatch(
      [p]() -> Status {
        if (p.out.on_host()) return cpu::fill_uniform(p);
        return finish_device(p.out.device, p.stream, true, cuda::fill_uniform(p));
      },
      cx.flag(6));
}

// measureDeviceRoof(device): { copyBytesPerSecond, bf16MmaFlops,
// tf32MmaFlops, expPerSecond } measured now (~0.5 s).
Napi::Value MeasureDeviceRoof(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int device = static_cast<int>(number_or(info[0], 0));
  DeviceRoof r;
  const Status s = cuda::measure_device_roof(device, &r);
  if (!s.ok()) {
    make_error(env, s).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("copyBytesPerSecond", r.copy_bytes_per_second);
  o.Set("bf16MmaFlops", r.bf16_mma_flops);
  o.Set("tf32MmaFlops", r.tf32_mma_flops);
  o.Set("expPerSecond", r.exp_per_second);
  return o;
}

// startTimer(device, stream, leadMicroseconds) / stopTimer(device, stream) →
// ms: CUDA events around the work enqueued in between (stopTimer waits for
// it), after a spin kernel of leadMicroseconds that hides launch gaps.
Napi::Value StartTimer(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const int device = static_cast<int>(number_or(info[0], 0));
  const Status s = cuda::start_timer(device, cx.stream(1), number_or(info[2], 0));
  if (!s.ok()) make_error(info.Env(), s).ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

Napi::Value StopTimer(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const int device = static_cast<int>(number_or(info[0], 0));
  float ms = 0;
  const Status s = cuda::stop_timer(device, cx.stream(1), &ms);
  if (!s.ok()) {
    make_error(info.Env(), s).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), ms);
}

}  // namespace

void init_bench(Napi::Env env, Napi::Object exports) {
  exports.Set("fillUniform", Napi::Function::New<FillUniform>(env, "fillUniform"));
  exports.Set("measureDeviceRoof", Napi::Function::New<MeasureDeviceRoof>(env, "measureDeviceRoof"));
  exports.Set("startTimer", Napi::Function::New<StartTimer>(env, "startTimer"));
  exports.Set("stopTimer", Napi::Function::New<StopTimer>(env, "stopTimer"));
}

}  // namespace binding
}  // namespace tokensieve
