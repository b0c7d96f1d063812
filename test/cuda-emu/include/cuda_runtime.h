// Host emulation of the subset of CUDA used by tokensieve's cuda/*.cu.
// One block at a time; its blockDim threads are fibers on the launching OS
// thread, switched cooperatively at barriers (a thread runs until it waits
// at __syncthreads or a warp-wide operation, then the next one runs). Warps
// exchange through a buffer guarded by per-warp barriers. Strict: a barrier
// not reached by every thread deadlocks, and the scheduler aborts when no
// fiber can run. Fibers instead of OS threads: a barrier hand-off between
// OS threads costs a futex wake and a context switch (microseconds, and
// two cores shared by eleven programs in CI); a fiber switch is six
// register pushes.
#pragma once
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sys/mman.h>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define CUDART_VERSION 13000

using std::isfinite;
using std::isnan;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
struct alignas(8) uint2 { unsigned x, y; };

namespace emu {
inline thread_local dim3 tIdx, bIdx;
inline dim3 gDim, bDim;
struct Barrier;
inline Barrier* block_bar = nullptr;
inline std::vector<std::unique_ptr<Barrier>> warp_bars;
inline uint64_t warp_buf[32][32];
inline std::atomic<int> or_acc{0};
inline std::atomic<long> progress{0};
inline std::atomic<bool> launch_running{false};
inline int pools_supported = 1;
inline long live_allocs = 0;
inline std::mutex alloc_mu;
inline std::set<void*> allocs;
inline long launches = 0;
inline int shuffle_random = 0;
}  // namespace emu

// ---- fibers ------------------------------------------------------------------
// emu_fiber_switch(save, load): pushes the callee-saved registers, stores the
// stack pointer to *save, loads `load` and pops the other fiber's registers.
// Weak: every translation unit that includes this header defines it.
extern "C" void emu_fiber_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .weak emu_fiber_switch
  .type emu_fiber_switch, @function
emu_fiber_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_fiber_switch, .-emu_fiber_switch
)");
namespace emu {
struct Fiber { void* sp = nullptr; char* stack = nullptr; dim3 tidx, bidx; bool done = false; };
// 1 MB stacks (kernels keep register tiles as local arrays), committed only
// as touched; a guard page below each turns an overflow into a fault.
inline constexpr size_t kFiberStack = size_t{1} << 20;
inline std::vector<Fiber> fibers;
inline unsigned cur = 0, live = 0, step = 1;
inline void* host_sp = nullptr;
inline long idle = 0;  // waits resumed since the last arrival anywhere: > 2 * live means no fiber can move
inline void (*body)(void*) = nullptr;
inline void* body_arg = nullptr;
inline void switch_to(unsigned next) {
  Fiber& a = fibers[cur];
  a.tidx = tIdx; a.bidx = bIdx;
  cur = next;
  Fiber& b = fibers[next];
  tIdx = b.tidx; bIdx = b.bidx;
  emu_fiber_switch(&a.sp, b.sp);
}
inline unsigned next_live() {
  const unsigned n = static_cast<unsigned>(bDim.x);
  unsigned i = cur;
  do { i = (i + step) % n; } while (fibers[i].done && i != cur);
  return i;
}
// Waits (switching to other fibers) until *gen differs from g.
inline void wait_for(const unsigned long* gen, unsigned long g) {
  while (*gen == g) {
    if (++idle > 2 * static_cast<long>(live) + 2) {
      fprintf(stderr, "emu: every thread of block %u waits at a barrier that not all of them reach: deadlock (non-uniform barrier?)\n", bIdx.x);
      abort();
    }
    const unsigned n = next_live();
    if (n != cur) switch_to(n);
  }
}
struct Barrier {
  unsigned n, count = 0;
  unsigned long gen = 0;
  explicit Barrier(unsigned n_) : n(n_) {}
  void arrive_and_wait() {
    progress++;
    idle = 0;
    if (++count == n) { count = 0; gen++; return; }
    wait_for(&gen, gen);
  }
};
extern "C" [[noreturn]] inline void emu_fiber_entry() {
  for (unsigned b = 0; b < gDim.x; ++b) {
    bIdx = {b, 0, 0};
    body(body_arg);
    progress++;
    block_bar->arrive_and_wait();
  }
  fibers[cur].done = true;
  live--;
  idle = 0;
  Fiber& me = fibers[cur];
  if (live == 0) emu_fiber_switch(&me.sp, host_sp);
  switch_to(next_live());
  abort();  // a finished fiber is never resumed
}
inline void start_fiber(unsigned t) {
  Fiber& f = fibers[t];
  if (!f.stack) {
    void* m = mmap(nullptr, kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) { perror("emu: fiber stack"); abort(); }
    mprotect(m, 4096, PROT_NONE);
    f.stack = static_cast<char*>(m);
  }
  // The stack emu_fiber_switch pops: six zero registers, then the entry as
  // the return address, then a dummy return address of the entry so that it
  // starts with the stack aligned as after a call.
  auto top = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(f.stack + kFiberStack) & ~uintptr_t{15});
  *--top = nullptr;
  *--top = reinterpret_cast<void*>(&emu_fiber_entry);
  for (int r = 0; r < 6; ++r) *--top = nullptr;
  f.sp = top;
  f.tidx = {t, 0, 0};
  f.bidx = {0, 0, 0};
  f.done = false;
}
}  // namespace emu
#define threadIdx (emu::tIdx)
#define blockIdx (emu::bIdx)
#define gridDim (emu::gDim)
#define blockDim (emu::bDim)

inline void __syncthreads() { emu::progress++; emu::block_bar->arrive_and_wait(); }
inline int __syncthreads_or(int p) {
  __syncthreads();
  if (p) emu::or_acc.fetch_or(1);
  __syncthreads();
  const int r = emu::or_acc.load();
  __syncthreads();
  if (threadIdx.x == 0) emu::or_acc.store(0);
  __syncthreads();
  return r;
}
namespace emu {
inline uint64_t warp_exchange(uint64_t v, int src_lane) {
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  warp_buf[w][lane] = v;
  progress++;  // a warp-wide barrier: progress for the watchdog, as __syncwarp
  warp_bars[w]->arrive_and_wait();
  const uint64_t r = warp_buf[w][src_lane];
  warp_bars[w]->arrive_and_wait();
  return r;
}
}  // namespace emu
inline float __shfl_xor_sync(unsigned mask, float v, int o, int width = 32) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial shuffle mask\n"); abort(); }
  const int lane = threadIdx.x % 32;
  const int src = (lane & ~(width - 1)) | ((lane ^ o) & (width - 1));
  uint32_t bits; std::memcpy(&bits, &v, 4);
  const uint32_t r = static_cast<uint32_t>(emu::warp_exchange(bits, src));
  float f; std::memcpy(&f, &r, 4); return f;
}
inline unsigned __match_any_sync(unsigned mask, unsigned v) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial match mask\n"); abort(); }
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  emu::warp_buf[w][lane] = v;
  emu::warp_bars[w]->arrive_and_wait();
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) if (emu::warp_buf[w][l] == v) m |= 1u << l;
  emu::warp_bars[w]->arrive_and_wait();
  return m;
}
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline float atomicAdd(float* p, float v) {
  float old, want;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  do { want = old + v; } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return old;
}
inline int atomicOr(int* p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
template <class T> inline T __ldcg(const T* p) { return *static_cast<const volatile T*>(p); }
// The read-only cache load: a plain load (memcpy: no alignment assumed).
template <class T> inline T __ldg(const T* p) { T v; std::memcpy(&v, p, sizeof(T)); return v; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
// IEEE f32 arithmetic, rounded to nearest: the host's (no -ffast-math, and
// the volatile keeps the compiler from contracting a product into an FMA).
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline unsigned atomicMax(unsigned* p, unsigned v) {
  unsigned old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
// Four signed byte products plus c, as the dp4a instruction.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i)
    c += static_cast<int>(static_cast<int8_t>(static_cast<uint32_t>(a) >> (8 * i))) *
         static_cast<int>(static_cast<int8_t>(static_cast<uint32_t>(b) >> (8 * i)));
  return c;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial syncwarp mask\n"); abort(); }
  emu::progress++;
  emu::warp_bars[threadIdx.x / 32]->arrive_and_wait();
}
// Integer and double lane exchanges, ballots (the diversity kernels).
inline int __shfl_xor_sync(unsigned mask, int v, int o, int width = 32) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial shuffle mask\n"); abort(); }
  const int lane = threadIdx.x % 32;
  const int src = (lane & ~(width - 1)) | ((lane ^ o) & (width - 1));
  return static_cast<int>(static_cast<uint32_t>(emu::warp_exchange(static_cast<uint32_t>(v), src)));
}
inline double __shfl_xor_sync(unsigned mask, double v, int o, int width = 32) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial shuffle mask\n"); abort(); }
  const int lane = threadIdx.x % 32;
  const int src = (lane & ~(width - 1)) | ((lane ^ o) & (width - 1));
  uint64_t bits; std::memcpy(&bits, &v, 8);
  const uint64_t r = emu::warp_exchange(bits, src);
  double d; std::memcpy(&d, &r, 8); return d;
}
inline float __shfl_sync(unsigned mask, float v, int src_lane, int width = 32) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial shuffle mask\n"); abort(); }
  const int lane = threadIdx.x % 32;
  uint32_t bits; std::memcpy(&bits, &v, 4);
  const uint32_t r = static_cast<uint32_t>(emu::warp_exchange(bits, (lane & ~(width - 1)) | (src_lane & (width - 1))));
  float f; std::memcpy(&f, &r, 4); return f;
}
inline int __shfl_sync(unsigned mask, int v, int src_lane, int width = 32) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial shuffle mask\n"); abort(); }
  const int lane = threadIdx.x % 32;
  return static_cast<int>(static_cast<uint32_t>(
      emu::warp_exchange(static_cast<uint32_t>(v), (lane & ~(width - 1)) | (src_lane & (width - 1)))));
}
inline unsigned __ballot_sync(unsigned mask, int p) {
  if (mask != 0xffffffffu) { fprintf(stderr, "emu: partial ballot mask\n"); abort(); }
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  emu::warp_buf[w][lane] = p ? 1 : 0;
  emu::progress++;
  emu::warp_bars[w]->arrive_and_wait();
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) if (emu::warp_buf[w][l]) m |= 1u << l;
  emu::warp_bars[w]->arrive_and_wait();
  return m;
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T emu_atomic_min(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
inline unsigned atomicMin(unsigned* p, unsigned v) { return emu_atomic_min(p, v); }
inline int atomicMin(int* p, int v) { return emu_atomic_min(p, v); }
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) { return emu_atomic_min(p, v); }
inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
  unsigned long long old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
// IEEE f64 arithmetic, rounded to nearest (no contraction into an FMA).
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
inline double __dsub_rn(double a, double b) { volatile double r = a - b; return r; }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
inline double __ddiv_rn(double a, double b) { volatile double r = a / b; return r; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

// ---- runtime API --------------------------------------------------------------
enum cudaError { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35, cudaErrorNoDevice = 100, cudaErrorInvalidDevice = 101,
  cudaErrorInvalidConfiguration = 9, cudaErrorNoKernelImageForDevice = 209, cudaErrorInvalidDeviceFunction = 98,
  cudaErrorUnsupportedPtxVersion = 222 };
typedef enum cudaError cudaError_t;
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum cudaDeviceAttr { cudaDevAttrMemoryPoolsSupported = 115 };
namespace emu { inline thread_local cudaError_t last_err = cudaSuccess; }
inline cudaError_t cudaGetLastError() { cudaError_t e = emu::last_err; emu::last_err = cudaSuccess; return e; }
inline const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmu"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : (emu::last_err = cudaErrorInvalidDevice); }
inline cudaError_t cudaGetDeviceCount(int* c) { *c = 1; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { *v = emu::pools_supported; return cudaSuccess; }
namespace emu {
inline cudaError_t alloc(void** p, size_t n) {
  const size_t m = (n + 255) / 256 * 256;
  *p = std::aligned_alloc(256, m ? m : 256);
  std::memset(*p, 0xA7, m);  // poison: kernels must not rely on fresh scratch content
  std::lock_guard<std::mutex> g(alloc_mu); allocs.insert(*p); live_allocs++;
  return cudaSuccess;
}
inline cudaError_t dealloc(void* p) {
  std::lock_guard<std::mutex> g(alloc_mu);
  if (!allocs.erase(p)) { fprintf(stderr, "emu: free of unknown pointer\n"); abort(); }
  live_allocs--; std::free(p); return cudaSuccess;
}
}  // namespace emu
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { if (!emu::pools_supported) abort(); return emu::alloc(p, n); }
inline cudaError_t cudaMalloc(void** p, size_t n) { if (emu::pools_supported) abort(); return emu::alloc(p, n); }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { if (!emu::pools_supported) abort(); return emu::dealloc(p); }
inline cudaError_t cudaFree(void* p) { if (emu::pools_supported) abort(); return emu::dealloc(p); }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

namespace emu {
// A program-wide watchdog for kernels that loop without reaching a barrier:
// no fiber switch for 120 s (the programs share two cores in CI).
inline void start_watchdog() {
  static bool started = false;
  if (started) return;
  started = true;
  std::thread([] {
    long last = -1; int still = 0;
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      const long now = progress.load();
      if (now == last && launch_running.load()) {
        if (++still > 120) { fprintf(stderr, "emu: no barrier progress for 120 s (a kernel loops?)\n"); abort(); }
      } else { still = 0; last = now; }
    }
  }).detach();
}
template <class F>
void launch_impl(F&& f, unsigned grid, unsigned block) {
  launches++;
  if (grid == 0 || block == 0 || block > 1024 || block % 32 != 0) { last_err = cudaErrorInvalidConfiguration; return; }
  start_watchdog();
  gDim = {grid, 1, 1};
  bDim = {block, 1, 1};
  Barrier bar(block);
  block_bar = &bar;
  warp_bars.clear();
  for (unsigned w = 0; w < block / 32; ++w) warp_bars.emplace_back(new Barrier(32));
  using Fn = std::remove_reference_t<F>;
  body = [](void* p) { (*static_cast<Fn*>(p))(); };
  body_arg = const_cast<void*>(static_cast<const void*>(&f));
  if (fibers.size() < block) fibers.resize(block);
  for (unsigned t = 0; t < block; ++t) start_fiber(t);
  // The order threads run between barriers alternates with the launches
  // (ascending, descending), so that a missing barrier between a write and a
  // read by another thread shows in one of them.
  step = (launches % 2) ? 1 : block - 1;
  live = block;
  idle = 0;
  cur = 0;
  const dim3 host_t = tIdx, host_b = bIdx;
  launch_running = true;
  tIdx = fibers[0].tidx; bIdx = fibers[0].bidx;
  emu_fiber_switch(&host_sp, fibers[0].sp);
  launch_running = false;
  tIdx = host_t; bIdx = host_b;
}
template <class F, class G, class... Rest>
void launch(F&& f, G grid, unsigned block, Rest...) { launch_impl(f, static_cast<unsigned>(grid), block); }
}  // namespace emu
