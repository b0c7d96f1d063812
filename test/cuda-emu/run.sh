#!/usr/bin/env bash
# Runs the CUDA back end on the CPU. cuda/attention.cu, select.cu, quantize.cu and merge.cu are
# compiled as host C++ against include/, a small emulation of the CUDA
# subset they use: each block runs as blockDim OS threads with a real
# barrier, warp shuffles exchange through per-warp barriers (and so do the
# WMMA fragment operations of include/mma.h), device memory
# is host memory (fresh scratch is filled with garbage), and only the kernel
# launches are rewritten (transform.js). Four programs:
#   reference_test  the CUDA entry points against float64 references, bad
#                   input, no-leak checks of scratch memory;
#   parity_test     the CUDA entry points against the CPU back end (cpu/*.cc)
#                   on the shapes of test/cuda.test.ts (smaller where slow);
#   quantize_test   quantize/dequantize byte-equal with the CPU back end, and
#                   INT8 attention scores against the CPU's;
#   merge_test      token merging (cuda/merge.cu) against the CPU back end,
#                   precision bf16 (WMMA) also against a float64 reference;
#   diversity_test  k-center, k-medoids and MMTok coverage (cuda/diversity.cu)
#                   against the CPU back end (bit-exact selections); run a
#                   second time on a build whose k-center takes the
#                   launch-per-step path from 9 tokens per segment up;
#   coverage_test   greedy maximum coverage (cuda/diversity.cu) against the CPU;
#   stc_test        STC-Pruner scores (cuda/diversity.cu) against the CPU.
# What it cannot check: blocks run one after another, so races between
# blocks (the last-block tickets) and real warp divergence need a GPU and
# compute-sanitizer; timing means nothing here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build-emu"
mkdir -p "$out/src" "$out/obj"
cd "$root"

node "$here/transform.js" cuda/attention.cu "$out/src/attention.cc"
node "$here/transform.js" cuda/select.cu "$out/src/select.cc"
node "$here/transform.js" cuda/quantize.cu "$out/src/quantize.cc"
node "$here/transform.js" cuda/merge.cu "$out/src/merge.cc"
node "$here/transform.js" cuda/diversity.cu "$out/src/diversity.cc"

EMU="-std=c++20 -O1 -g -Wall -Wno-unused-parameter -Wno-unknown-pragmas -Wno-missing-field-initializers \
  -I$here/include -I$root/include -I$root"
CPU="-std=c++17 -O2 -I$root/include -I$root"
pids=()
compile() { "$@" & pids+=($!); }
compile g++ $EMU -c "$out/src/attention.cc" -o "$out/obj/attention.o"
compile g++ $EMU -c "$out/src/select.cc" -o "$out/obj/select.o"
compile g++ $EMU -c "$out/src/quantize.cc" -o "$out/obj/quantize.o"
compile g++ $EMU -c "$here/reference_test.cc" -o "$out/obj/reference_test.o"
compile g++ $EMU -c "$here/parity_test.cc" -o "$out/obj/parity_test.o"
compile g++ $EMU -c "$here/quantize_test.cc" -o "$out/obj/quantize_test.o"
compile g++ $EMU -c "$out/src/merge.cc" -o "$out/obj/merge.o"
compile g++ $EMU -c "$here/merge_test.cc" -o "$out/obj/merge_test.o"
compile g++ $EMU -c "$out/src/diversity.cc" -o "$out/obj/diversity.o"
compile g++ $EMU -DTS_KCENTER_LOOP_MAX=8 -c "$out/src/diversity.cc" -o "$out/obj/diversity_steps.o"
for t in diversity coverage stc; do
  compile g++ $EMU -c "$here/${t}_test.cc" -o "$out/obj/${t}_test.o"
done
for f in validate attention select quantize merge diversity thread_pool isa_dispatch isa_baseline; do
  compile g++ $CPU -c "cpu/$f.cc" -o "$out/obj/cpu_$f.o"
done
compile g++ $CPU -mavx2 -mfma -mf16c -c cpu/isa_avx2.cc -o "$out/obj/cpu_isa_avx2.o"
for p in "${pids[@]}"; do wait "$p"; done

cuda_objs="$out/obj/attention.o $out/obj/select.o $out/obj/quantize.o"
g++ -o "$out/reference_test" "$out/obj/reference_test.o" $cuda_objs "$out/obj/cpu_validate.o" -lpthread
g++ -o "$out/parity_test" "$out/obj/parity_test.o" $cuda_objs "$out"/obj/cpu_*.o -lpthread
g++ -o "$out/quantize_test" "$out/obj/quantize_test.o" $cuda_objs "$out"/obj/cpu_*.o -lpthread
# token merging (cuda/merge.cu) against the CPU back end
g++ -o "$out/merge_test" "$out/obj/merge_test.o" "$out/obj/merge.o" "$out"/obj/cpu_*.o -lpthread
# the diversity family (cuda/diversity.cu) against the CPU back end
for t in diversity coverage stc; do
  g++ -o "$out/${t}_test" "$out/obj/${t}_test.o" "$out/obj/diversity.o" "$out"/obj/cpu_*.o -lpthread
done
g++ -o "$out/diversity_steps_test" "$out/obj/diversity_test.o" "$out/obj/diversity_steps.o" "$out"/obj/cpu_*.o -lpthread

# The programs run side by side (most of their time is the emulator's thread
# hand-offs, not arithmetic), then report in a fixed order.
names=(reference_test parity_test quantize_test merge_test diversity_test coverage_test stc_test diversity_steps_test)
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
