// Baseline x86-64 build of the CPU primitives (see cpu/isa_impl.inc).
#define TS_ISA_NAMESPACE isa_baseline
#define TS_ISA_LABEL "baseline"
#include "cpu/isa_impl.inc"
