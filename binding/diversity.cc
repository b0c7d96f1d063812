// N-API adapters for kCenter, maxCoverage and mmtokCoverage.
#include "binding/common.h"
#include "tokensieve/diversity.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace binding {
namespace {

// kCenter(params, x, xMem, exclude, excludeMem, order, orderMem, sorted, sortedMem,
//         distances, distancesMem, stream, async)
// params: [k, segments, metric, seed, seedIndex, wait]
Napi::Value KCenter(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, 6);
  KCenterParams p;
  p.x = cx.tensor(1, "x");
  p.exclude = cx.tensor(3, "exclude", /*optional=*/true);
  p.order = cx.output(5, "order");
  p.sorted = cx.output(7, "sorted", true);
  p.distances = cx.output(9, "distances", true);
  p.stream = cx.stream(11);
  if (a != nullptr) {
    p.k = to_int64(a[0]);
    p.segments = to_int64(a[1]);
    p.metric = static_cast<DistanceMetric>(to_enum(a[2]));
    p.seed = static_cast<CenterSeed>(to_enum(a[3]));
    p.seed_index = to_int64(a[4]);
  }
  const bool wait = a != nullptr && a[5] != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::k_center(p);
        return finish_device(p.x.device, p.stream, wait, cuda::k_center(p));
      },
      cx.flag(12));
}

// kMedoids(params, x, xMem, medoids, medoidsMem, assignments, assignmentsMem,
//          iterations, iterationsMem, stream, async)
// params: [k, segments, metric, maxIters, tol, wait]
Napi::Value KMedoids(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, 6);
  KMedoidsParams p;
  p.x = cx.tensor(1, "x");
  p.medoids = cx.output(3, "medoids");
  p.assignments = cx.output(5, "assignments");
  p.iterations = cx.output(7, "iterations", true);
  p.stream = cx.stream(9);
  if (a != nullptr) {
    p.k = to_int64(a[0]);
    p.segments = to_int64(a[1]);
    p.metric = static_cast<DistanceMetric>(to_enum(a[2]));
    p.max_iters = to_int64(a[3]);
    p.tol = a[4];
  }
  const bool wait = a != nullptr && a[5] != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::k_medoids(p);
        return finish_device(p.x.device, p.stream, wait, cuda::k_medoids(p));
      },
      cx.flag(10));
}

// stcScores(params, x, xMem, memorySum, memorySumMem, scores, scoresMem, chunkMean, chunkMeanMem,
//           channels, channelsMem, stream, async)
// params: [memoryCount, wait, memoryMode (0 authors, 1 aligned)]; channels may be undefined.
Napi::Value StcScores(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, 3);
  StcScoresParams p;
  p.x = cx.tensor(1, "x");
  p.memory_sum = cx.tensor(3, "memorySum", true);
  p.scores = cx.output(5, "scores");
  p.chunk_mean = cx.output(7, "chunkMean");
  p.channels = cx.output(9, "channels", true);
  p.stream = cx.stream(11);
  if (a != nullptr) {
    p.memory_count = to_int64(a[0]);
    p.memory_mode = static_cast<StcMemory>(static_cast<int>(a[2]));
  }
  const bool wait = a != nullptr && a[1] != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.x.on_host()) return cpu::stc_scores(p);
        return finish_device(p.x.device, p.stream, wait, cuda::stc_scores(p));
      },
      cx.flag(12));
}

// maxCoverage(params, coverage, coverageMem, exclude, excludeMem, order, orderMem,
//             sorted, sortedMem, gains, gainsMem, stream, async)
// params: [k, wait]
Napi::Value MaxCoverage(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, 2);
  MaxCoverageParams p;
  p.coverage = cx.tensor(1, "coverage");
  p.exclude = cx.tensor(3, "exclude", true);
  p.order = cx.output(5, "order");
  p.sorted = cx.output(7, "sorted", true);
  p.gains = cx.output(9, "gains", true);
  p.stream = cx.stream(11);
  if (a != nullptr) p.k = to_int64(a[0]);
  const bool wait = a != nullptr && a[1] != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.coverage.on_host()) return cpu::max_coverage(p);
        return finish_device(p.coverage.device, p.stream, wait, cuda::max_coverage(p));
      },
      cx.flag(12));
}

// mmtokCoverage(params, text, textMem, vision, visionMem, aux, auxMem, out, outMem, stream, async)
// params: [tauTV, tauVV, alpha, wait]
Napi::Value MmtokCoverage(const Napi::CallbackInfo& info) {
  CallContext cx(info);
  const double* a = cx.params(0, 4);
  MmtokCoverageParams p;
  p.text = cx.tensor(1, "text");
  p.vision = cx.tensor(3, "vision");
  p.vision_aux = cx.tensor(5, "visionAux", true);
  p.out = cx.output(7, "out");
  p.stream = cx.stream(9);
  if (a != nullptr) {
    p.tau_tv = a[0];
    p.tau_vv = a[1];
    p.alpha = a[2];
  }
  const bool wait = a != nullptr && a[3] != 0;
  return cx.dispatch(
      [p, wait]() -> Status {
        if (p.vision.on_host()) return cpu::mmtok_coverage(p);
        return finish_device(p.vision.device, p.stream, wait, cuda::mmtok_coverage(p));
      },
      cx.flag(10));
}

}  // namespace

void init_diversity(Napi::Env env, Napi::Object exports) {
  exports.Set("kCenter", Napi::Function::New<KCenter>(env, "kCenter"));
  exports.Set("kMedoids", Napi::Function::New<KMedoids>(env, "kMedoids"));
  exports.Set("stcScores", Napi::Function::New<StcScores>(env, "stcScores"));
  exports.Set("maxCoverage", Napi::Function::New<MaxCoverage>(env, "maxCoverage"));
  exports.Set("mmtokCoverage", Napi::Function::New<MmtokCoverage>(env, "mmtokCoverage"));
}

}  // namespace binding
}  // namespace tokensieve
