#!/usr/bin/env bash
# Builds the CPU core and addon with a sanitizer and runs the test suite (or, for ThreadSanitizer, the C++
# programs: Node does not start under TSan) against it. Exit status non-zero on a failed test or any report.
#   bash bench/sanitize.sh [address|undefined|thread|all|ci] [--kernels]   (default: all)
# ci: one build with address and undefined together, the suite once, and hypersd_ops_smoke under ThreadSanitizer
# (what .ci/run runs: ~5 min on 2 cores).
# --kernels also runs the suite with HYPERSD_CPU_KERNELS=avx2 and =portable (address / undefined).
# Logs go to $OUT (default /tmp/hypersd-sanitize). Takes ~2 min per suite run under ASan on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
kernels=0
[ "${2:-}" = "--kernels" ] && kernels=1
out="${OUT:-/tmp/hypersd-sanitize}"
mkdir -p "$out"
fail=0

build() {  # build <sanitizer> <folder>
  echo "== build $2 (HYPERSD_SANITIZE=$1)"
  if ! HYPERSD_CUDA=0 HYPERSD_SANITIZE="$1" npx cmake-js compile -O "$2" >"$out/build-$1.log" 2>&1; then
    echo "build failed: $out/build-$1.log"; tail -20 "$out/build-$1.log"; exit 1
  fi
  # The instrumentation must be there (a CMAKE_CXX_FLAGS given to cmake-js was silently dropped once).
  local syms
  syms=$(nm -D "$2/Release/hypersd.node")
  if ! grep -q "__${3}" <<<"$syms"; then
    echo "$2/Release/hypersd.node has no __$3 symbols: not instrumented"; exit 1
  fi
}

suite() {  # suite <name> <log pattern> <env...>
  local name="$1" pat="$2"; shift 2
  local log="$out/suite-$name.log"
  echo "== suite $name"
  env "$@" npx uvu -r tsx test "\.test\.ts$" >"$log" 2>&1
  local rc=$?
  local reports
  reports=$(grep -ac "$pat" "$log")
  grep -a "Total:\|Passed:" "$log" | sed 's/\x1b\[[0-9;]*m//g'
  if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then
    echo "FAILED: exit $rc, $reports reports ($log)"; fail=1
  fi
}


leaks() {  # leaks <build folder>: the ops smoke program with LeakSanitizer (Node leaks at exit; this C++ program
           # gives its cached blocks back first, so any report is a real leak of the core)
  local log="$out/lsan-$1.log"
  echo "== leaks: $1/hypersd_ops_smoke"
  (cd "$1" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 timeout 600 ./hypersd_ops_smoke) >"$log" 2>&1
  local rc=$?
  if [ "$rc" -ne 0 ] || grep -q "ERROR: LeakSanitizer\|ERROR: AddressSanitizer\|runtime error" "$log"; then
    echo "FAILED: exit $rc ($log)"; fail=1
  fi
}

suites() {  # suites <name> <log pattern> <env...>: the suite, and with --kernels the avx2 / portable sets too
  local name="$1" pat="$2"; shift 2
  suite "$name" "$pat" "$@"
  if [ "$kernels" = 1 ]; then
    suite "$name-avx2" "$pat" "$@" HYPERSD_CPU_KERNELS=avx2
    suite "$name-portable" "$pat" "$@" HYPERSD_CPU_KERNELS=portable
  fi
}

if [ "$what" = ci ]; then
  build address,undefined build-sanitize asan
  syms=$(nm -D build-sanitize/Release/hypersd.node)
  grep -q "__ubsan" <<<"$syms" || { echo "build-sanitize has no __ubsan symbols"; exit 1; }
  suite asan+ubsan "ERROR: AddressSanitizer\|runtime error" LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 HYPERSD_ADDON="$PWD/build-sanitize/Release/hypersd.node"
  leaks build-sanitize
fi

if [ "$what" = address ] || [ "$what" = all ]; then
  build address build-asan asan
  suites asan "ERROR: AddressSanitizer" LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0 \
    HYPERSD_ADDON="$PWD/build-asan/Release/hypersd.node"
  leaks build-asan
fi

if [ "$what" = undefined ] || [ "$what" = all ]; then
  build undefined build-ubsan ubsan
  suites ubsan "runtime error" UBSAN_OPTIONS=print_stacktrace=1 HYPERSD_ADDON="$PWD/build-ubsan/Release/hypersd.node"
fi

tsan_progs=("hypersd_example" "hypersd_ops_smoke" "hypersd_pointwise_bench 2"
            "hypersd_engine_gemm 4096 320 320 2 2" "hypersd_engine_gemm 77 768 320 2 2")
[ "$what" = ci ] && tsan_progs=("hypersd_ops_smoke")  # CI: every heavy kernel and the concurrent clients
if [ "$what" = thread ] || [ "$what" = all ] || [ "$what" = ci ]; then
  build thread build-tsan tsan
  for prog in "${tsan_progs[@]}"; do
    log="$out/tsan-${prog// /_}.log"
    echo "== tsan $prog"
    # shellcheck disable=SC2086
    (cd build-tsan && timeout 600 ./$prog) >"$log" 2>&1
    rc=$?
    reports=$(grep -c "WARNING: ThreadSanitizer" "$log")
    if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ]; then
      echo "FAILED: exit $rc, $reports reports ($log)"; fail=1
    fi
  done
fi

[ "$fail" = 0 ] && echo "sanitize: no report" || echo "sanitize: FAILED (logs in $out)"
exit "$fail"
