// Picks the CPU primitive set once per process: AVX-512 when the CPU has
// AVX-512F/VL (and AVX2, FMA, F16C), else AVX2 when it has AVX2, FMA and
// F16C, unless TOKENSIEVE_CPU_ISA asks for `avx2` or `baseline` (the
// portable one); tests use it to check the builds give the same answers.
// On top of AVX-512, the bf16 dot kernels where the CPU has AVX512_BF16 and
// the INT8 ones where it has AVX512_VNNI (active_isa() "avx512-bf16",
// "avx512-vnni" or "avx512-bf16-vnni"), unless TOKENSIEVE_CPU_ISA is `avx512`.
#include <cstdlib>
#include <cstring>

#include "cpu/isa.h"
#include "tokensieve/runtime.h"

namespace tokensieve {
namespace cpu {
namespace {

bool forced_to(const char* name) {
  const char* forced = std::getenv("TOKENSIEVE_CPU_ISA");
  return forced != nullptr && std::strcmp(forced, name) == 0;
}

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

const Bf16DotKernels* bf16_dot() {
  static const Bf16DotKernels* chosen = [] {
    const Bf16DotKernels* k = nullptr;
#if defined(__x86_64__) || defined(__i386__)
    if (&isa() == &isa_avx512::kernels && !forced_to("avx512") && __builtin_cpu_supports("avx512bf16"))
      k = &isa_avx512_bf16::kernels;
#endif
    return k;
  }();
  return chosen;
}

const Int8DotKernels* int8_dot() {
  static const Int8DotKernels* chosen = [] {
    const Int8DotKernels* k = nullptr;
#if defined(__x86_64__) || defined(__i386__)
    if (&isa() == &isa_avx512::kernels && !forced_to("avx512") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx512bw"))
      k = &isa_avx512_vnni::kernels;
#endif
    return k;
  }();
  return chosen;
}

const char* active_isa() {
  const bool bf16 = bf16_dot() != nullptr, vnni = int8_dot() != nullptr;
  return bf16 && vnni ? "avx512-bf16-vnni" : bf16 ? "avx512-bf16" : vnni ? "avx512-vnni" : isa().name;
}

}  // namespace cpu
}  // namespace tokensieve
