#!/usr/bin/env bash
# The GPU check of the speed and reliability issues, as one script for a
# device lease on a host with no Node.js and no registry: the CUDA jest
# suites (the garbage-collector test on its own), compute-sanitizer memcheck
# over the suites and racecheck over the merge and diversity suites, then the
# cuda bench with PyTorch on the same GPU. Every step has its own time limit
# (jest prints a suite only when it ends); the limits add up to 5 min 30 s,
# leaving half a minute for the unpacking, nvidia-smi and the summary. A
# step that hits its limit is reported as such (rc 124, and a sanitizer
# count of null with "complete": false), never as a clean run.
#
# Here, after `npm install`:  bash ../shared/gpu/bundle.sh
# On the device (carry .gpu-bundle):  bash scripts/gpu-check.sh
# Writes at most 6 files to $OUT (default ./gpu-check-out): summary.json
# (device, each step's exit status and seconds, jest counts, sanitizer error
# counts), suites.log, sanitizer.log, bench.log, bench.json, bench.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
[ -f .gpu-bundle/unpack.sh ] && source .gpu-bundle/unpack.sh
jest="node node_modules/jest/bin/jest.js --runInBand"
suites="$(ls test/cuda-*.test.ts) test/bench-hooks.test.ts"
gc_test='garbage collector'
tmp=$(mktemp -d)
steps=()

step() { # step <name> <seconds> <log> <command...>: runs it with a limit, appends to the log
  local name=$1 secs=$2 log=$3; shift 3
  local t0=$SECONDS
  echo "==== $name (limit ${secs} s): $*" >> "$log"
  timeout "$secs" "$@" >> "$log" 2>&1
  rc=$?  # global: the caller may read it
  steps+=("\"$name\": { \"rc\": $rc, \"seconds\": $((SECONDS - t0)) }")
  echo "$name: rc $rc in $((SECONDS - t0)) s"
}

device=$(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | head -1)

# 1. The CUDA suites without the GC test, then the GC test alone.
step suites 90 "$out/suites.log" env TOKENSIEVE_TEST_SUMMARY="$tmp/suites.json" $jest $suites -t "^(?!.*$gc_test)"
step gc 30 "$out/suites.log" env TOKENSIEVE_TEST_SUMMARY="$tmp/gc.json" $jest test/cuda-tensor.test.ts -t "$gc_test"

# 2. compute-sanitizer: memcheck over the suites, racecheck where blocks
#    share memory through tickets and atomics (merge, diversity).
memcheck_errors=null racecheck_errors=null
if command -v compute-sanitizer >/dev/null; then
  san="compute-sanitizer --target-processes all --error-exitcode 99"
  step memcheck 75 "$tmp/memcheck.log" $san --tool memcheck --leak-check full $jest $suites -t "^(?!.*$gc_test)"
  memcheck_rc=$rc
  step racecheck 45 "$tmp/racecheck.log" $san --tool racecheck $jest test/cuda-merge.test.ts test/cuda-diversity.test.ts
  racecheck_rc=$rc
  # { "errors": the summed ERROR SUMMARY counts (null when the tool printed
  #   none), "complete": the step ended before its limit }
  count() {
    local n; n=$(grep -Eo 'ERROR SUMMARY: [0-9]+' "$1" | awk '{s += $3; k++} END {print k ? s : "null"}')
    echo "{ \"errors\": $n, \"complete\": $([ "$2" -ne 124 ] && [ "$2" -ne 137 ] && echo true || echo false) }"
  }
  memcheck_errors=$(count "$tmp/memcheck.log" "$memcheck_rc")
  racecheck_errors=$(count "$tmp/racecheck.log" "$racecheck_rc")
  cat "$tmp/memcheck.log" "$tmp/racecheck.log" > "$out/sanitizer.log"
else
  echo "compute-sanitizer not found" > "$out/sanitizer.log"
fi

# 3. The bench on the GPU beside torch on the same GPU (python3 on PATH is
#    the virtualenv with CUDA torch on these hosts; bench finds it).
step bench 90 "$out/bench.log" node bin/tokensieve.js bench --device cuda --quick \
  --json "$out/bench.json" --markdown "$out/bench.md"

# summary.json: one object, folded by node (no jq on these hosts).
STEPS="$(IFS=,; echo "${steps[*]}")" DEVICE="$device" MEM="$memcheck_errors" RACE="$racecheck_errors" TMP="$tmp" \
  node -e '
    const fs = require("fs");
    const read = (f) => { try { return JSON.parse(fs.readFileSync(f, "utf8")); } catch { return null; } };
    const s = {
      device: process.env.DEVICE,
      steps: JSON.parse(`{${process.env.STEPS}}`),
      jest: { suites: read(`${process.env.TMP}/suites.json`), gc: read(`${process.env.TMP}/gc.json`) },
      sanitizer: { memcheck: JSON.parse(process.env.MEM), racecheck: JSON.parse(process.env.RACE) },
    };
    fs.writeFileSync(process.argv[1], JSON.stringify(s, null, 2) + "\n");
    process.stdout.write(JSON.stringify(s, null, 2) + "\n");
  ' "$out/summary.json"
rm -rf "$tmp"
