// Picks the CPU primitive set once per process: AVX-512 when the CPU has
// AVX-512F/VL (and AVX2, FMA, F16C), else AVX2 when it has AVX2, FMA and
// F16C, unless TOKENSIEVE_CPU_ISA asks for `avx2` or `baseline` (the
// portable one); tests use it to check the builds give the same answers.
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
  __builtin_cpu_init();  // libgcc's checks include the OS's XSAVE support for ymm/zmm state
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  if (avx512 && !(forced != nullptr && std::strcmp(forced, "avx2") == 0)) return &isa_avx512::kernels;
  if (avx2) return &isa_avx2::kernels;
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
