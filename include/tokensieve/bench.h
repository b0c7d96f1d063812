// Benchmark support (not public API; bench/ reaches it through the addon):
// inputs generated where they live, the GPU's ceilings measured in the run,
// and device time between two points of a stream by CUDA events.
#pragma once

#include <cstdint>

#include "tokensieve/tensor.h"

namespace tokensieve {

// Fills a contiguous f32/f16/bf16 tensor with x[i] = lo + (hi − lo)·u(seed, i),
// u a counter-based hash of (seed, i) in [0, 1) (splitmix64), rounded to the
// dtype: the same values on either back end, so a trial's inputs need no
// host generation and no upload on the GPU.
struct FillUniformParams {
  TensorView out;  // contiguous, any shape
  uint64_t seed = 0;
  float lo = -1.0f, hi = 1.0f;
  void* stream = nullptr;
};
Status validate(const FillUniformParams& p);

// One GPU's ceilings, measured now on this device (~0.5 s): device-to-device
// copy (bytes read + written per second, 16-byte loads and stores over a
// buffer far larger than L2), dense mma.sync throughput (bf16 m16n8k16 and
// tf32 m16n8k8 into f32, FLOP/s, 2 per multiply-add) and ex2.approx
// throughput (exp/s) on every SM.
struct DeviceRoof {
  double copy_bytes_per_second = 0;
  double bf16_mma_flops = 0;
  double tf32_mma_flops = 0;
  double exp_per_second = 0;
};

namespace cpu {
Status fill_uniform(const FillUniformParams& p);
}  // namespace cpu

namespace cuda {
Status fill_uniform(const FillUniformParams& p);
Status measure_device_roof(int device, DeviceRoof* out);
// Records a start event on `stream` (per device, one pair of events for the
// process: the bench times one call at a time), then stop_timer records the
// stop event, waits for it, and gives the milliseconds between the two.
// With lead_us > 0 a kernel spinning that long goes first, so the host has
// enqueued the timed work before the start event fires and the interval is
// the work's kernels back to back (calls that synchronize inside still show
// their gaps).
Status start_timer(int device, void* stream, double lead_us);
Status stop_timer(int device, void* stream, float* ms);
}  // namespace cuda

}  // namespace tokensieve
