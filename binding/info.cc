// info(), thread-count control, device-memory counts.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "binding/common.h"
#include "binding/device_buffer.h"
#include "cpu/host_pool.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BuildInfo b = build_info();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", b.version);
  o.Set("compiler", b.compiler);
  o.Set("buildType", b.build_type);
  o.Set("cudaCompiled", b.cuda_compiled);
  o.Set("cudaCompiledVersion", b.cuda_compiled_version);
  o.Set("cudaArchitectures", b.cuda_architectures);
  Napi::Array isas = Napi::Array::New(env, b.cpu_isas.size());
  for (size_t i = 0; i < b.cpu_isas.size(); ++i) isas.Set(static_cast<uint32_t>(i), b.cpu_isas[i]);
  o.Set("cpuIsas", isas);
  o.Set("cpuIsa", cpu::active_isa());
  o.Set("threads", cpu::num_threads());

  const cuda::RuntimeInfo r = cuda::runtime_info();
  Napi::Object c = Napi::Object::New(env);
  c.Set("compiled", r.compiled);
  c.Set("available", r.available);
  c.Set("runtimeVersion", r.runtime_version);
  c.Set("driverVersion", r.driver_version);
  c.Set("reason", r.unavailable_reason);
  Napi::Array devices = Napi::Array::New(env, r.devices.size());
  for (size_t i = 0; i < r.devices.size(); ++i) {
    const cuda::DeviceInfo& d = r.devices[i];
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("ordinal", d.ordinal);
    dev.Set("name", d.name);
    dev.Set("capability", std::to_string(d.major) + "." + std::to_string(d.minor));
    dev.Set("totalMemory", static_cast<double>(d.total_memory));
    dev.Set("multiprocessors", d.multiprocessors);
    dev.Set("kernelsAvailable", d.kernels_available);
    dev.Set("kernelsReason", d.kernels_reason);
    devices.Set(static_cast<uint32_t>(i), dev);
  }
  c.Set("devices", devices);
  o.Set("cuda", c);
  return o;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber())
    throw make_error(info.Env(), Status(Code::kArg, "expected a number for threads"));
  cpu::set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), cpu::num_threads());
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::num_threads());
}

Napi::Value DefaultThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::default_num_threads());
}

// measureRoof(): this machine's FMA, exp and copy ceilings (takes ~1 s).
Napi::Value MeasureRoof(const Napi::CallbackInfo& info) {
  const cpu::Roof r = cpu::measure_roof();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("fmaGflops", r.fma_gflops);
  o.Set("bf16DotGflops", r.bf16_dot_gflops);
  o.Set("expPerSecond", r.exp_per_second);
  o.Set("copyGBps", r.copy_gbytes_per_second);
  o.Set("threads", r.threads);
  return o;
}

// gemmNtCheck(a, m, b, n, K, upper, aPanels, bf16?): the CPU a·bᵀ driver on
// plain rows, for the micro-kernel tests (test/gemm.test.ts); returns a
// fresh Float32Array [m, n] (entries below the diagonal mirrored when
// upper). bf16: the operands rounded to bf16, on the bf16 dot tile where
// the CPU has it (runtime.h).
Napi::Value GemmNtCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto dim = [&](size_t i) -> int64_t {
    if (!info[i].IsNumber()) return -1;
    const double v = info[i].As<Napi::Number>().DoubleValue();
    return v >= 1 && v <= (1 << 20) && v == static_cast<double>(static_cast<int64_t>(v)) ? static_cast<int64_t>(v) : -1;
  };
  const int64_t m = dim(1), n = dim(3), K = dim(4);
  if (info.Length() < 7 || !info[0].IsTypedArray() || !info[2].IsTypedArray() || m < 0 || n < 0 || K < 0 ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    Napi::TypeError::New(env, "gemmNtCheck(a: Float32Array, m, b: Float32Array, n, K, upper, aPanels)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto a = info[0].As<Napi::Float32Array>();
  auto b = info[2].As<Napi::Float32Array>();
  const bool upper = info[5].ToBoolean(), a_panels = info[6].ToBoolean();
  const bool bf16 = info.Length() > 7 && info[7].ToBoolean();
  if (static_cast<int64_t>(a.ElementLength()) < m * K || static_cast<int64_t>(b.ElementLength()) < n * K ||
      m * n > (int64_t{1} << 26) || (upper && m != n) || (bf16 && (upper || a_panels))) {
    Napi::RangeError::New(env, "gemmNtCheck: a or b too short, output too large, upper with m != n, or bf16 with upper or aPanels")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto out = Napi::Float32Array::New(env, static_cast<size_t>(m * n));
  // Poisoned, so an entry the driver never wrote shows as NaN.
  std::fill(out.Data(), out.Data() + m * n, std::numeric_limits<float>::quiet_NaN());
  cpu::gemm_nt_check(a.Data(), m, b.Data(), n, K, upper, a_panels, bf16, out.Data());
  return out;
}

// normaliseCheck(x, rows, n): ToMe's row normalisation on plain rows, for
// test/merge.test.ts; returns { rows: Float32Array [rows, n], panel,
// panelStream: Float32Array [n, 16] } (poisoned first; the panel with plain
// and with streaming stores), or null when a row is not finite.
Napi::Value NormaliseCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool ok_args = info.Length() >= 3 && info[0].IsTypedArray() && info[1].IsNumber() && info[2].IsNumber() &&
                       info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
  const double rows_d = ok_args ? info[1].As<Napi::Number>().DoubleValue() : -1;
  const double n_d = ok_args ? info[2].As<Napi::Number>().DoubleValue() : -1;
  if (!ok_args || !(rows_d >= 1 && rows_d <= 4096 && rows_d == static_cast<double>(static_cast<int>(rows_d))) ||
      !(n_d >= 1 && n_d <= (1 << 20) && n_d == static_cast<double>(static_cast<int64_t>(n_d)))) {
    Napi::TypeError::New(env, "normaliseCheck(x: Float32Array, rows: 1..4096, n: 1..2^20)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int rows = static_cast<int>(rows_d);
  const int64_t n = static_cast<int64_t>(n_d);
  auto x = info[0].As<Napi::Float32Array>();
  if (static_cast<int64_t>(x.ElementLength()) < rows * n) {
    Napi::RangeError::New(env, "normaliseCheck: x is too short").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto rows_out = Napi::Float32Array::New(env, static_cast<size_t>(rows * n));
  auto panel_out = Napi::Float32Array::New(env, static_cast<size_t>(n * 16));
  auto panel_stream_out = Napi::Float32Array::New(env, static_cast<size_t>(n * 16));
  std::fill(rows_out.Data(), rows_out.Data() + rows * n, std::numeric_limits<float>::quiet_NaN());
  std::fill(panel_out.Data(), panel_out.Data() + n * 16, std::numeric_limits<float>::quiet_NaN());
  std::fill(panel_stream_out.Data(), panel_stream_out.Data() + n * 16, std::numeric_limits<float>::quiet_NaN());
  if (!cpu::normalise_check(x.Data(), rows, n, rows_out.Data(), panel_out.Data(), panel_stream_out.Data()))
    return env.Null();
  Napi::Object r = Napi::Object::New(env);
  r.Set("rows", rows_out);
  r.Set("panel", panel_out);
  r.Set("panelStream", panel_stream_out);
  return r;
}

// roundCheck(x, dtype): test hook (not public API) for test/merge.test.ts
// and test/blocksparse.test.ts: x rounded to 'bf16' or 'f16' and kept as
// f32 by the CPU set's vectorised rounding.
Napi::Value RoundCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool ok = info.Length() >= 2 && info[0].IsTypedArray() &&
                  info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array && info[1].IsString();
  const std::string dtype = ok ? info[1].As<Napi::String>().Utf8Value() : "";
  if (!ok || (dtype != "bf16" && dtype != "f16")) {
    Napi::TypeError::New(env, "roundCheck(x: Float32Array, dtype: 'bf16' | 'f16')").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto x = info[0].As<Napi::Float32Array>();
  const size_t n = x.ElementLength();
  auto out = Napi::Float32Array::New(env, n);
  cpu::round_check(x.Data(), static_cast<int64_t>(n), dtype == "f16", out.Data());
  return out;
}

// bf16PairsCheck(x): test hook (not public API) for test/gemm.test.ts: the
// bf16 dot kernels' conversions of x, { rows, panel } unpacked as f32
// (runtime.h), or null where the CPU has no bf16 dot.
Napi::Value Bf16PairsCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool ok = info.Length() >= 1 && info[0].IsTypedArray() &&
                  info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
  const size_t n = ok ? info[0].As<Napi::TypedArray>().ElementLength() : 0;
  if (!ok || n == 0 || n > (size_t{1} << 24)) {
    Napi::TypeError::New(env, "bf16PairsCheck(x: Float32Array of 1..2^24 values)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const size_t depth = n / 16;
  auto x = info[0].As<Napi::Float32Array>();
  auto rows = Napi::Float32Array::New(env, n + n % 2);
  auto panel = Napi::Float32Array::New(env, (depth + depth % 2) * 16);
  if (!cpu::bf16_pairs_check(x.Data(), static_cast<int64_t>(n), rows.Data(), panel.Data())) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rows", rows);
  o.Set("panel", panel);
  return o;
}

// noopKernel(device, stream?): test hook (not public API). One empty kernel
// on `stream` (a bigint cudaStream_t; the legacy stream when omitted) of
// `device`, then a synchronisation, with the least binding work a call can
// have: the floor bench and test/cuda-quantize.test.ts compare a Sync call's
// host overhead with. CPU-only builds throw ERR_UNSUPPORTED.
Napi::Value NoopKernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber())
    throw make_error(env, Status(Code::kArg, "noopKernel(device: number, stream?: bigint)"));
  const int device = info[0].As<Napi::Number>().Int32Value();
  void* stream = nullptr;
  if (info.Length() > 1 && info[1].IsBigInt()) {
    bool lossless = false;
    stream = reinterpret_cast<void*>(static_cast<uintptr_t>(info[1].As<Napi::BigInt>().Uint64Value(&lossless)));
  } else if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
    throw make_error(env, Status(Code::kArg, "expected a bigint (cudaStream_t) for stream"));
  }
  const Status s = cuda::noop(device, stream, /*wait=*/true);
  if (!s.ok()) throw make_error(env, s);
  return env.Undefined();
}

// deviceMemory(): what tokensieve holds on devices, process-wide, and V8's
// count of external memory in this environment (which includes it).
Napi::Value DeviceMemory(const Napi::CallbackInfo& info) {
  const DeviceBuffer::Counts c = DeviceBuffer::counts();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("bytes", static_cast<double>(c.owned_bytes));
  o.Set("buffers", static_cast<double>(c.owned_buffers));
  o.Set("objects", static_cast<double>(c.objects));
  o.Set("v8External", static_cast<double>(Napi::MemoryManagement::AdjustExternalMemory(info.Env(), 0)));
  return o;
}

// hostCache(): the idle host blocks kept for reuse (cpu/host_pool.h);
// emptyHostCache() frees them.
Napi::Value HostCache(const Napi::CallbackInfo& info) {
  const cpu::HostCacheStats st = cpu::host_cache_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("bytes", static_cast<double>(st.idle_bytes));
  o.Set("blocks", static_cast<double>(st.idle_blocks));
  return o;
}

Napi::Value EmptyHostCache(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(cpu::empty_host_cache()));
}

}  // namespace

void init_info(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New<Info>(env, "info"));
  exports.Set("setThreads", Napi::Function::New<SetThreads>(env, "setThreads"));
  exports.Set("getThreads", Napi::Function::New<GetThreads>(env, "getThreads"));
  exports.Set("defaultThreads", Napi::Function::New<DefaultThreads>(env, "defaultThreads"));
  exports.Set("measureRoof", Napi::Function::New<MeasureRoof>(env, "measureRoof"));
  exports.Set("deviceMemory", Napi::Function::New<DeviceMemory>(env, "deviceMemory"));
  exports.Set("hostCache", Napi::Function::New<HostCache>(env, "hostCache"));
  exports.Set("emptyHostCache", Napi::Function::New<EmptyHostCache>(env, "emptyHostCache"));
  exports.Set("gemmNtCheck", Napi::Function::New<GemmNtCheck>(env, "gemmNtCheck"));
  exports.Set("normaliseCheck", Napi::Function::New<NormaliseCheck>(env, "normaliseCheck"));
  exports.Set("roundCheck", Napi::Function::New<RoundCheck>(env, "roundCheck"));
  exports.Set("bf16PairsCheck", Napi::Function::New<Bf16PairsCheck>(env, "bf16PairsCheck"));
  exports.Set("noopKernel", Napi::Function::New<NoopKernel>(env, "noopKernel"));
}

}  // namespace binding
}  // namespace tokensieve
