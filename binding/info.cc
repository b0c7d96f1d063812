// info(), thread-count control, device-memory counts.
#include "binding/common.h"
#include "binding/device_buffer.h"
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
  o.Set("expPerSecond", r.exp_per_second);
  o.Set("copyGBps", r.copy_gbytes_per_second);
  o.Set("threads", r.threads);
  return o;
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

}  // namespace

void init_info(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New<Info>(env, "info"));
  exports.Set("setThreads", Napi::Function::New<SetThreads>(env, "setThreads"));
  exports.Set("getThreads", Napi::Function::New<GetThreads>(env, "getThreads"));
  exports.Set("defaultThreads", Napi::Function::New<DefaultThreads>(env, "defaultThreads"));
  exports.Set("measureRoof", Napi::Function::New<MeasureRoof>(env, "measureRoof"));
  exports.Set("deviceMemory", Napi::Function::New<DeviceMemory>(env, "deviceMemory"));
}

}  // namespace binding
}  // namespace tokensieve
