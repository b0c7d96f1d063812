#!/usr/bin/env bash
# Runs the CUDA back end on the CPU. cuda/*.cu (all but runtime.cu) are
# compiled as host C++ against include/, a small emulation of the CUDA
# subset they use: each block runs as blockDim fibers on one OS thread,
# switched at a real barrier (in ascending thread order on odd launches,
# descending on even ones), warp shuffles exchange through per-warp barriers
# (and so do the WMMA fragment operations of include/mma.h), device memory
# is host memory (fresh scratch is filled with garbage), and only the kernel
# launches are rewritten (transform.js). One program per family, sharing
# check.h (EXPECT, tensor views, the scratch-leak check):
#   attention_test  attention scores and reductions (cuda/attention.cu)
#                   against float64 references (bad input, no-leak checks of
#                   scratch memory) and against the CPU back end;
#   attention_rows_test the few-rows path (cuda/attention_rows.cu) against
#                   float64 and the CPU back end under the tolerance rule;
#   select_test     top-k and gather (cuda/select.cu) likewise;
#   quantize_test   quantize/dequantize byte-equal with the CPU back end, and
#                   INT8 attention scores against the CPU's;
#   merge_test      token merging (cuda/merge.cu) against the CPU back end,
#                   precision bf16 (WMMA) also against a float64 reference;
#   diversity_test  k-center and k-medoids (cuda/diversity.cu) against the
#                   CPU back end (bit-exact selections); run a second time
#                   (diversity_steps_test) on a build whose k-center takes
#                   the launch-per-step path from 9 tokens per segment up;
#   coverage_test   greedy maximum coverage and MMTok's coverage matrix
#                   (cuda/coverage.cu) against the CPU;
#   stc_test        STC-Pruner scores (cuda/stc.cu) against the CPU.
#   blocksparse_test block-sparse attention (mma.sync, emulated per PTX
#                   fragment layout) against float64 and the CPU under the
#                   tolerance rule; block mass, pooling, reordering vs the CPU.
#   mma_test        the tensor-core wrappers of cuda/mma.cuh (mma.sync f16,
#                   bf16, tf32; cvt.rna.tf32; ldmatrix) against float64;
#                   the emulator's barriers, and its abort on a barrier that
#                   not every thread reaches.
# Some programs only: run.sh merge_test stc_test ...
# What it cannot check: blocks run one after another, so races between
# blocks (the last-block tickets) and real warp divergence need a GPU and
# compute-sanitizer; timing means nothing here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build-emu"
mkdir -p "$out/src/cuda" "$out/obj"
cd "$root"

all=(attention_test attention_rows_test select_test quantize_test merge_test diversity_test coverage_test stc_test diversity_steps_test blocksparse_test mma_test)
if [ $# -gt 0 ]; then names=("$@"); else names=("${all[@]}"); fi
want() { local n; for n in "${names[@]}"; do [ "$n" = "$1" ] && return 0; done; return 1; }

# The CUDA sources (emulated) each program links, and the CPU back end.
declare -A cuda_of=(
  [attention_test]="attention attention_rows select quantize" [attention_rows_test]="attention attention_rows select quantize"
  [select_test]="attention attention_rows select quantize" [quantize_test]="attention attention_rows select quantize" [merge_test]="merge"
  [diversity_test]="features diversity" [coverage_test]="features coverage" [stc_test]="stc"
  [diversity_steps_test]="features diversity_steps" [blocksparse_test]="blocksparse" [mma_test]="")

EMU="-std=c++20 -O1 -g -Wall -Wno-unused-parameter -Wno-unknown-pragmas -Wno-missing-field-initializers \
  -I$here/include -I$out/src -I$root/include -I$root"
CPU="-std=c++17 -O2 -I$root/include -I$root"
# cuda/common.cuh launches a kernel too (the shared NaN/Inf scan): its
# rewritten copy shadows the original on the include path.
node "$here/transform.js" cuda/common.cuh "$out/src/cuda/common.cuh"
pids=()
compile() { "$@" & pids+=($!); }
need=()
for t in "${names[@]}"; do need+=(${cuda_of[$t]}); done
for s in $(printf '%s\n' "${need[@]}" | sort -u); do
  if [ "$s" = diversity_steps ]; then
    node "$here/transform.js" cuda/diversity.cu "$out/src/diversity_steps.cc"
    compile g++ $EMU -DTS_KCENTER_LOOP_MAX=8 -c "$out/src/diversity_steps.cc" -o "$out/obj/diversity_steps.o"
  else
    node "$here/transform.js" "cuda/$s.cu" "$out/src/$s.cc"
    compile g++ $EMU -c "$out/src/$s.cc" -o "$out/obj/$s.o"
  fi
done
for t in "${names[@]}"; do
  src="$here/$t.cc"
  [ "$t" = diversity_steps_test ] && src="$here/diversity_test.cc"
  compile g++ $EMU -c "$src" -o "$out/obj/$t.o"
done
# The CPU back end (core/ and cpu/) as one archive: each program takes what it uses.
rm -f "$out"/obj/cpu_*.o "$out"/obj/core_*.o "$out/libcpu.a"
for f in core/*.cc; do
  compile g++ $CPU -c "$f" -o "$out/obj/core_$(basename "$f" .cc).o"
done
for f in thread_pool host_pool isa_dispatch isa_baseline attention select quantize merge gemm rows diversity coverage stc blocksparse; do
  compile g++ $CPU -c "cpu/$f.cc" -o "$out/obj/cpu_$f.o"
done
compile g++ $CPU -mavx2 -mfma -mf16c -c cpu/isa_avx2.cc -o "$out/obj/cpu_isa_avx2.o"
compile g++ $CPU -mavx2 -mfma -mf16c -mavx512f -mavx512vl -c cpu/isa_avx512.cc -o "$out/obj/cpu_isa_avx512.o"
compile g++ $CPU -mavx2 -mfma -mf16c -mavx512f -mavx512vl -mavx512bw -mavx512bf16 -c cpu/isa_avx512_bf16.cc -o "$out/obj/cpu_isa_avx512_bf16.o"
compile g++ $CPU -mavx2 -mfma -mf16c -mavx512f -mavx512vl -mavx512bw -mavx512vnni -c cpu/isa_avx512_vnni.cc -o "$out/obj/cpu_isa_avx512_vnni.o"
for p in "${pids[@]}"; do wait "$p"; done
ar rcs "$out/libcpu.a" "$out"/obj/core_*.o "$out"/obj/cpu_*.o

for t in "${names[@]}"; do
  objs=()
  for s in ${cuda_of[$t]}; do objs+=("$out/obj/$s.o"); done
  g++ -o "$out/$t" "$out/obj/$t.o" "${objs[@]}" "$out/libcpu.a" -lpthread
done

# The programs run side by side (one OS thread each, plus the CPU back end's
# pool), then report in a fixed order.
declare -A run_pid
for t in "${names[@]}"; do
  args=()
  [ "$t" = diversity_steps_test ] && args=(--kcenter)  # the launch-per-step k-center build
  "$out/$t" "${args[@]}" > "$out/$t.log" 2>&1 &
  run_pid[$t]=$!
done
status=0
for t in "${names[@]}"; do
  rc=0
  wait "${run_pid[$t]}" || rc=$?
  [ $rc -eq 0 ] || status=1
  echo "cuda-emu: $t"
  tail -n 1 "$out/$t.log"
done
if [ $status -ne 0 ]; then
  grep -h FAIL "$out"/*.log | head -20
fi
exit $status
