// N-API adapters for stcScores.
#include "binding/common.h"
#include "binding/params.h"
#include "tokensieve/stc.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// stcScores(params, x, xMem, memorySum, memorySumMem, scores, scoresMem, chunkMean, chunkMeanMem,
//           channels, channelsMem, stream, async)
// params: StcScoresSlots (binding/params.h); channels may be undefined.
Napi::Value StcScores(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, StcScoresSlots::kCount);
  StcScoresParams p;
  p.x = cx.tensor(1, "x");
  p.memory_sum = cx.tensor(3, "memorySum", true);
  p.scores = cx.output(5, "scores");
  p.chunk_mean = cx.output(7, "chunkMean");
  p.channels = cx.output(9, "channels", true);
  p.stream = cx.stream(11);
  if (a != nullptr) {
    p.memory_count = to_int64(arg(a, StcScoresSlots::memoryCount));
    p.memory_mode = static_cast<StcMemory>(static_cast<int>(arg(a, StcScoresSlots::memoryMode)));
  }
  const bool wait = a != nullptr && arg(a, StcScoresSlots::wait) != 0;
  p.device_checks = wait || p.x.on_host();  // a device status read drains the stream
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::stc_scores(p);
        return finish_device(p.x.device, p.stream, wait, cuda::stc_scores(p));
      },
      cx.flag(12));
}

}  // namespace

void init_stc(Napi::Env env, Napi::Object exports) {
  exports.Set("stcScores", Napi::Function::New<StcScores>(env, "stcScores"));
}

}  // namespace binding
}  // namespace tokensieve
