// paramNames(): every op's params slots by name (binding/params.h), for
// test/native-params.test.ts to compare with lib/native.ts's PARAM_NAMES.
#include "binding/common.h"
#include "binding/params.h"

namespace tokensieve {
namespace binding {
namespace {

Napi::Value ParamNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
#define TS_EXPORT_NAMES(js, Op, LIST)                           \
  {                                                             \
    Napi::Array names = Napi::Array::New(env, Op##Slots::kCount); \
    for (size_t i = 0; i < Op##Slots::kCount; ++i)              \
      names.Set(static_cast<uint32_t>(i), Napi::String::New(env, Op##Slots::kNames[i])); \
    out.Set(js, names);                                         \
  }
  TS_FOR_EACH_OP(TS_EXPORT_NAMES)
#undef TS_EXPORT_NAMES
  return out;
}

}  // namespace

void init_params(Napi::Env env, Napi::Object exports) {
  exports.Set("paramNames", Napi::Function::New<ParamNames>(env, "paramNames"));
}

}  // namespace binding
}  // namespace tokensieve
