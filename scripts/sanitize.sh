#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run for CI: builds the
# CPU-only addon (nvcc hidden, exactly as .ci/run does) into build-asan/ with
# TOKENSIEVE_SANITIZE=ON (CMakeLists.txt: -fsanitize=address,undefined
# -fno-omit-frame-pointer -fno-sanitize-recover=undefined -O1 -g), then runs
# the whole jest suite against it with g++'s libasan preloaded into node.
# TOKENSIEVE_TEST_SUMMARY (jest's counts as JSON) is passed through.
# Fails (non-zero) when the build fails, jest fails, or any process of the run
# (jest, globalSetup's tsc, the node children the tests start) wrote a
# sanitizer report; every report is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# --- build: nvcc hidden from PATH, as in .ci/run
cpu_path=$(node -e '
  const fs = require("fs"), path = require("path");
  console.log(process.env.PATH.split(":").filter((d) => !fs.existsSync(path.join(d, "nvcc"))).join(":"));')
launcher=()
if command -v ccache >/dev/null; then launcher=(--CDCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
t0=$SECONDS
env -u CUDACXX PATH="$cpu_path" node node_modules/cmake-js/bin/cmake-js compile --out build-asan --generator Ninja \
  --CDTOKENSIEVE_SANITIZE=ON --CDTOKENSIEVE_CUDA=OFF "${launcher[@]}" || { echo "::: sanitize: build failed"; exit 1; }
echo "::: sanitize: build took $((SECONDS - t0)) s"
addon="$root/build-asan/Release/tokensieve.node"
# A build dir configured earlier without the option would silently test an unsanitized addon.
# grep reads all of ldd's output: with -q it stops at the first match, and
# under pipefail ldd's SIGPIPE then read as "not linked" (a CI run failed so).
if ! ldd "$addon" | grep libasan >/dev/null; then echo "::: sanitize: $addon is not linked against libasan"; exit 1; fi

# --- the runtime: the .node needs libasan loaded before anything else in node.
# libubsan comes in as the addon's own DT_NEEDED (it intercepts nothing), so
# only libasan is preloaded.
libasan=$(g++ -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then echo "::: sanitize: g++ has no libasan.so ($libasan)"; exit 1; fi
# detect_leaks=1: LSan works under node; node's own V8 heap bookkeeping is
#   suppressed in scripts/lsan.supp (see there), nothing of tokensieve is.
# log_path: every ASan/LSan report of every process (jest, globalSetup's tsc,
#   the node children tests start) lands in $logs, so none is lost in a
#   child's captured stderr; all are printed below. UBSan ignores log_path
#   (g++ 12): its reports go to the process's stderr.
# abort_on_error=1: any report (ASan, UBSan, leaks) ends the process with
#   SIGABRT, so jest, or the test that started the child, fails.
# print_suppressions=0: no "Suppressions used" table for the V8 noise.
common="log_path=$logs/report:abort_on_error=1"
asan_options="$common:detect_leaks=1"
lsan_options="suppressions=$root/scripts/lsan.supp:print_suppressions=0"
ubsan_options="$common:print_stacktrace=1:halt_on_error=1"

t1=$SECONDS
# TOKENSIEVE_UNDER_ASAN=1 skips, with the reason printed, the two tests that
# judge leaks by RSS: ASan's quarantine and per-thread caches make RSS drift
# by more than they allow (8.6 and 12.6 MiB where 8 are allowed), and LSan
# checks leaks directly in this run.
env LD_PRELOAD="$libasan" ASAN_OPTIONS="$asan_options" LSAN_OPTIONS="$lsan_options" \
  UBSAN_OPTIONS="$ubsan_options" TOKENSIEVE_NATIVE="$addon" TOKENSIEVE_UNDER_ASAN=1 \
  npx jest "$@"
jest_rc=$?
echo "::: sanitize: jest under ASan+UBSan took $((SECONDS - t1)) s (exit $jest_rc)"

reports=$(find "$logs" -type f -size +0 | sort)
if [ -n "$reports" ]; then
  for f in $reports; do echo "::: sanitizer report ($f):"; cat "$f"; done
  echo "::: sanitize: FAILED, $(echo "$reports" | wc -l) process(es) wrote a sanitizer report (above)"
  exit 1
fi
[ "$jest_rc" -eq 0 ] || { echo "::: sanitize: FAILED, jest exited $jest_rc"; exit 1; }
echo "::: sanitize: no sanitizer reports; total $((SECONDS - t0)) s"
