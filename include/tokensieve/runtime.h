// Process-wide runtime services: the CPU thread pool, CUDA device discovery,
// device memory and copies. Everything CUDA-specific hides behind void*
// handles so this header compiles without the CUDA toolkit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tokensieve/tensor.h"

namespace tokensieve {

struct BuildInfo {
  std::string version;        // TOKENSIEVE_VERSION at build time
  std::string compiler;       // e.g. "GNU 12.2.0"
  std::string build_type;     // CMAKE_BUILD_TYPE
  bool cuda_compiled = false;
  int cuda_compiled_version = 0;     // CUDART_VERSION, e.g. 13000
  std::string cuda_architectures;    // e.g. "80-real 86-real 89-real 90-real 90-virtual"
  std::vector<std::string> cpu_isas; // kernel variants compiled in ("baseline", "avx2")
};

BuildInfo build_info();

namespace cpu {
// The ISA the CPU kernels dispatch to on this machine ("avx512-bf16-vnni",
// "avx512-bf16", "avx512-vnni", "avx512", "avx2" or "baseline").
const char* active_isa();
// Shared thread pool used by every CPU kernel. n <= 0 restores the default
// (TOKENSIEVE_NUM_THREADS, else the number of online cores).
void set_num_threads(int n);
int num_threads();
int default_num_threads();

// This machine's ceilings, measured with the pool's current thread count,
// for benchmarks that report a fraction of the roof.
struct Roof {
  double fma_gflops = 0;        // f32 FMA throughput (2 FLOPs per FMA), all threads
  double bf16_dot_gflops = 0;   // vdpbf16ps throughput (2 FLOPs per pair product), all threads; 0 without the bf16 dot
  double exp_per_second = 0;    // the kernels' vector exp, all threads
  double copy_gbytes_per_second = 0;  // memcpy of a 256 MiB buffer, bytes read + written
  int threads = 0;
};
Roof measure_roof();

// Test hook for the a·bᵀ driver and register tile of cpu/gemm.h (not public
// API): out[i * n + j] = a_i · b_j for row-major a [m, K] and b [n, K], b
// packed as panels and a read as rows or (a_panels) packed too. With upper
// (a == b, m == n) only j >= i is computed, then mirrored. With bf16 (not
// with upper or a_panels): a and b rounded to bf16 first, the product on
// the bf16 dot tile where the CPU has one (cpu::bf16_dot()), else on the
// f32 tile.
void gemm_nt_check(const float* a, int64_t m, const float* b, int64_t n, int64_t K, bool upper, bool a_panels,
                   bool bf16, float* out);
// Test hook for the bf16 dot kernels' operand conversions (not public API):
// x [n] through to_pairs, in place, unpacked into rows_out [n + n % 2] (the
// pad value included), and x's first depth·16 values (depth = floor(n / 16))
// read as a panel [depth][16] through panel_to_pairs, in place, unpacked
// into panel_out [depth + depth % 2][16]. False (nothing written) where the
// CPU has no bf16 dot.
bool bf16_pairs_check(const float* x, int64_t n, float* rows_out, float* panel_out);
// Test hook for ToMe's row normalisation (not public API): x [rows, n]
// normalised by normalise_rows into rows_out [rows, n], and its first
// min(rows, 16) rows by normalise_panel into panel_out [n, 16], with plain
// stores, and into panel_stream_out [n, 16] through the streaming stores.
// False when a row holds NaN or Inf.
bool normalise_check(const float* x, int rows, int64_t n, float* rows_out, float* panel_out, float* panel_stream_out);
// Test hook (not public API): out[i] = x[i] rounded to bf16 (f16 when
// `f16`) and kept as f32 by the CPU set's vectorised rounding (ToMe's bf16
// match precision; block-sparse attention's f16 and bf16 operands), i < n.
void round_check(const float* x, int64_t n, bool f16, float* out);
}  // namespace cpu

namespace cuda {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int major = 0, minor = 0;
  size_t total_memory = 0;
  int multiprocessors = 0;
  // Whether this build holds SASS or PTX the device can run; when false,
  // kernels_reason says why ("no kernel image for sm_75", ...).
  bool kernels_available = false;
  std::string kernels_reason;
};

struct RuntimeInfo {
  bool compiled = false;       // built with CUDA
  bool available = false;      // compiled, driver present, >= 1 device
  int runtime_version = 0;     // cudaRuntimeGetVersion
  int driver_version = 0;      // cudaDriverGetVersion (0: no driver)
  std::string unavailable_reason;  // empty when available
  std::vector<DeviceInfo> devices;
};

RuntimeInfo runtime_info();
// CUDART_VERSION the kernels were compiled against (0 in a CPU-only build)
// and the CMake architectures, space-separated ("" in a CPU-only build).
int compiled_version();
const char* compiled_architectures();

// Stream-ordered device memory on `stream` (cudaMallocAsync/cudaFreeAsync).
Status device_malloc(int device, size_t bytes, void* stream, void** out);
Status device_free(int device, void* ptr, void* stream);
// Copies between host and device (or device and device); blocks the calling
// thread until the copy is complete.
enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };
Status memcpy_sync(int device, void* dst, const void* src, size_t bytes, CopyKind kind, void* stream);
Status stream_synchronize(int device, void* stream);

// Sets the release threshold of `device`'s default memory pool so that
// scratch memory freed by one call is reused by the next instead of going
// back to the driver at every synchronisation (cuda/runtime.cu says why).
// Idempotent and cheap after the first call per device; device_malloc and
// the binding's device calls run it. No-op without memory pools; in a
// CPU-only build, ERR_UNSUPPORTED.
Status configure_memory_pool(int device);

// Test hook (not public API): one empty kernel launched on `stream` of
// `device`, then (wait) a stream synchronisation — the floor against which a
// call's host overhead is measured (bench, test/cuda-quantize.test.ts).
Status noop(int device, void* stream, bool wait);

}  // namespace cuda
}  // namespace tokensieve
