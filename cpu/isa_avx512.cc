// AVX-512 build of the CPU primitives (see cpu/isa_impl.inc): the AVX2 set
// plus -mavx512f -mavx512vl, where the GEMM tile and the FMA probe use zmm
// registers (on Zen 5 a 512-bit FMA has twice the throughput of two 256-bit
// ones); CMakeLists.txt compiles this file alone with those flags.
// GCC 12's AVX-512 intrinsics pass an undefined vector as the unused
// merge source (_mm512_undefined_*), which -Wmaybe-uninitialized reports
// inside <avx512fintrin.h> once they are inlined; the code is correct.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#define TS_ISA_NAMESPACE isa_avx512
#define TS_ISA_LABEL "avx512"
#include "cpu/isa_impl.inc"
