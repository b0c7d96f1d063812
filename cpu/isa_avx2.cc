// AVX2 + FMA + F16C build of the CPU primitives (see cpu/isa_impl.inc);
// CMakeLists.txt compiles this file alone with -mavx2 -mfma -mf16c.
#define TS_ISA_NAMESPACE isa_avx2
#define TS_ISA_LABEL "avx2"
#include "cpu/isa_impl.inc"
