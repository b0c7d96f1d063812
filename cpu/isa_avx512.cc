// AVX-512 build of the CPU primitives (see cpu/isa_impl.inc): the AVX2 set
// plus -mavx512f -mavx512vl, where the GEMM tile and the FMA probe use zmm
// registers (on Zen 5 a 512-bit FMA has twice the throughput of two 256-bit
// ones); CMakeLists.txt compiles this file alone with those flags.
#define TS_ISA_NAMESPACE isa_avx512
#define TS_ISA_LABEL "avx512"
#include "cpu/isa_impl.inc"
