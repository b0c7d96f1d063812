// Picks the CPU primitive set once per process: AVX2 when the CPU has AVX2,
// FMA and F16C, unless TOKENSIEVE_CPU_ISA=baseline asks for the portable one
// (tests use it to check both builds give the same answers).
#include <cstdlib>
#include <cstring>

#include "cpu/isa.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace cpu {
namespace {

const IsaKernels* choose() {
  const char* forced = std::getenv("TOKENSIEVE_CPU_ISA");
  if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return &isa_baseline::kernels;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return &isa_avx2::kernels;
#endif
  return &isa_baseline::kernels;
}

}  // namespace

const IsaKernels& isa() {
  static const IsaKernels* chosen = choose();
  return *chosen;
}

const char* active_isa() { return isa().name; }

}  // namespace cpu
}  // namespace tokensieve
