#!/usr/bin/env bash
# The GPU checks of the reliability issue, as one script for a device lease
# (see README "Development"): the CUDA suites, the garbage-collector test on
# its own, then compute-sanitizer's memcheck, racecheck, initcheck and
# synccheck over the CUDA suites. Every step has its own time limit and log,
# because jest prints a suite only when it ends.
#
# Here, after `npm install`:  bash ../shared/gpu/bundle.sh
# On the device (carry .gpu-bundle):  bash scripts/gpu-check.sh [seconds per sanitizer tool]
# Writes to $OUT (default ./gpu-check-out): one log per step and summary.json
# with the jest counts and each tool's error count.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
per_tool=${1:-90}
[ -f .gpu-bundle/unpack.sh ] && source .gpu-bundle/unpack.sh
jest="node node_modules/jest/bin/jest.js --runInBand"
suites=$(ls test/cuda-*.test.ts)
gc_test='garbage collector'
summary="$out/summary.json"
echo '{' > "$summary"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/device.log" 2>&1

step() { # step <name> <seconds> <command...>: runs it with a limit, logs, records its exit status
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "  \"$name\": { \"rc\": $rc, \"seconds\": $((SECONDS - t0)) }," >> "$summary"
  echo "$name: rc $rc in $((SECONDS - t0)) s"
}

# 1. The CUDA suites without the GC test, then the GC test alone.
step suites 300 env TOKENSIEVE_TEST_SUMMARY="$out/suites.json" $jest $suites -t "^(?!.*$gc_test)"
step gc 120 env TOKENSIEVE_TEST_SUMMARY="$out/gc.json" $jest test/cuda-tensor.test.ts -t "$gc_test"

# 2. compute-sanitizer, one tool at a time over the suites (not the GC test,
#    whose deliberate over-allocation would eat the time).
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck initcheck synccheck; do
    extra=()
    [ "$tool" = memcheck ] && extra=(--leak-check full)
    step "sanitizer-$tool" "$per_tool" compute-sanitizer --tool "$tool" "${extra[@]}" --target-processes all --error-exitcode 99 \
      $jest $suites -t "^(?!.*$gc_test)"
    errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+' "$out/sanitizer-$tool.log" | awk '{s += $3} END {print s + 0}')
    echo "  \"errors-$tool\": $errors," >> "$summary"
  done
else
  echo '  "sanitizer": "compute-sanitizer not found",' >> "$summary"
fi
echo '  "done": true' >> "$summary"
echo '}' >> "$summary"
cat "$summary"
