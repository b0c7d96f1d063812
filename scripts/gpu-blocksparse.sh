#!/usr/bin/env bash
# The GPU checks and measurements of the block-sparse issue (15), as one
# script for a device lease: the CUDA parity suite, compute-sanitizer's
# memcheck and racecheck over it, then the blocksparse bench trials on the
# device beside PyTorch on the same GPU (SDPA dense, FlexAttention with the
# same block mask when this torch has it). Every step has its own time limit
# and log (jest prints a suite only when it ends). About 8 minutes in all.
#
# Here, after `npm install`:  bash ../shared/gpu/bundle.sh
# On the device (carry .gpu-bundle):  bash scripts/gpu-blocksparse.sh
# Writes to $OUT (default ./gpu-blocksparse-out): one log per step,
# bench.json (every trial and baseline) and summary.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-blocksparse-out}
mkdir -p "$out"
[ -f .gpu-bundle/unpack.sh ] && source .gpu-bundle/unpack.sh
jest="node node_modules/jest/bin/jest.js --runInBand"
summary="$out/summary.json"
echo '{' > "$summary"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/device.log" 2>&1

step() { # step <name> <seconds> <command...>
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "  \"$name\": { \"rc\": $rc, \"seconds\": $((SECONDS - t0)) }," >> "$summary"
  echo "$name: rc $rc in $((SECONDS - t0)) s"
}

step suite 200 env TOKENSIEVE_TEST_SUMMARY="$out/suite.json" $jest test/cuda-blocksparse.test.ts test/cuda-paro.test.ts
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" 120 compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 99 \
      $jest test/cuda-blocksparse.test.ts -t "f16 d64|int8"
    errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+' "$out/sanitizer-$tool.log" | awk '{s += $3} END {print s + 0}')
    echo "  \"errors-$tool\": $errors," >> "$summary"
  done
fi
# The bench: the device's kernels and torch on the same GPU (python3 there is
# the virtualenv with CUDA torch).
step bench 300 env TOKENSIEVE_BENCH_PYTHON=python3 node bin/tokensieve.js bench --device cuda --filter blocksparse \
  --json "$out/bench.json" --markdown "$out/bench.md"
echo '  "done": true' >> "$summary"
echo '}' >> "$summary"
cat "$summary"
