#!/usr/bin/env bash
# One run on a fresh GPU machine (a copy of the repository with node_modules present, nothing downloadable):
#   1. build the addon with CUDA for this GPU's architecture (HYPERSD_CUDA_ARCHS overrides; cmake-js, offline)
#   2. the op tests on the GPU: npm run test:gpu (HYPERSD_TEST_DEVICE=cuda)
#   3. compute-sanitizer memcheck over one small op test file (SANITIZE_TEST, default attention.test.ts)
#   4. the GPU op benchmark, bench/ops_gpu.ts (TFLOP/s, GB/s beside measured ceilings)
# Every stage runs even when an earlier one failed; the script ends with a summary and exits non-zero when
# any stage failed. Everything goes to stdout and, when $OUT is set, to $OUT/gpu-check.log (plus the
# benchmark's $OUT/ops_gpu.{md,json}). It installs nothing. Time: typically 3-4 minutes; the per-stage
# timeouts below add up to 6 minutes. QUICK=1 shortens the benchmark.
#
#   bash bench/gpu-check.sh            # from the repository root or anywhere
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOG=${OUT:+$OUT/gpu-check.log}
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && : > "$LOG"; fi

say() {
  if [ -n "$LOG" ]; then echo "$@" | tee -a "$LOG"; else echo "$@"; fi
}

declare -a NAMES RESULTS TIMES
# stage NAME TIMEOUT_S CMD...: runs CMD with a timeout, output to stdout and the log, records the outcome.
stage() {
  local name=$1 limit=$2
  shift 2
  say ""
  say "=== [$name] $* (timeout ${limit}s)"
  local t0=$(date +%s) rc
  if [ -n "$LOG" ]; then
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
  else
    timeout --kill-after=10 "$limit" "$@" 2>&1
    rc=$?
  fi
  local dt=$(( $(date +%s) - t0 ))
  local res=PASS
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then res="TIMEOUT"; elif [ "$rc" != 0 ]; then res="FAIL (rc $rc)"; fi
  say "=== [$name] $res in ${dt}s"
  NAMES+=("$name")
  RESULTS+=("$res")
  TIMES+=("$dt")
}

# ---- 0. the machine
say "hypersd gpu-check, $(date -u +%Y-%m-%dT%H:%M:%SZ), in $ROOT"
stage info 10 bash -c 'nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv; nvcc --version | tail -2; node --version; cmake --version | head -1'

if [ -z "${HYPERSD_CUDA_ARCHS:-}" ]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  case "$cap" in
    80|86|89|90) export HYPERSD_CUDA_ARCHS=$cap ;;
    *) export HYPERSD_CUDA_ARCHS=90 ;;  # newer GPUs JIT the compute_90 PTX that this build embeds
  esac
fi
say "building for sm_${HYPERSD_CUDA_ARCHS}"

# ---- 1. build (cmake-js with the package's napi_versions uses node-api-headers from node_modules: no download)
export HYPERSD_CUDA=1
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
stage build 120 npx --no-install cmake-js compile
ADDON=$ROOT/build/Release/hypersd.node
if [ -f "$ADDON" ]; then export HYPERSD_ADDON=$ADDON; fi
stage cuda-status 10 node -e "
const n = require(process.env.HYPERSD_ADDON || '$ADDON');
const s = n.cudaStatus();
console.log('cudaStatus', s);
const doc = require('fs').readFileSync('native/include/hypersd/OPS.md', 'utf8');
const listed = new Set();
for (const line of doc.split('\\n')) { const m = /^\\| ([^|]+)\\|/.exec(line); if (m) for (const k of m[1].matchAll(/\\x60([a-z0-9_]+)\\x60/g)) listed.add(k[1]); }
const ops = n.ops();
const missing = [...listed].filter((name) => !ops.some((o) => o.name === name && o.cuda));
const extra = ops.filter((o) => !o.cuda && !listed.has(o.name)).map((o) => o.name);
console.log(listed.size + ' ops in OPS.md; without a CUDA kernel: ' + (missing.join(', ') || 'none'));
if (extra.length) console.log('(CPU-only ops not in OPS.md: ' + extra.join(', ') + ')');
process.exit(s.available && missing.length === 0 ? 0 : 1);"

# ---- 2. op tests on the GPU
stage test-gpu 120 npm run --silent test:gpu

# ---- 3. memcheck on one small op test file
SAN_TEST=${SANITIZE_TEST:-attention.test.ts}
if command -v compute-sanitizer > /dev/null 2>&1; then
  SAN=compute-sanitizer
elif [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  SAN=/usr/local/cuda/bin/compute-sanitizer
else
  SAN=""
fi
if [ -n "$SAN" ]; then
  stage memcheck 50 env HYPERSD_TEST_DEVICE=cuda "$SAN" --tool memcheck --target-processes all --error-exitcode 9 \
    --print-limit 20 node "$ROOT/node_modules/uvu/bin.js" -r tsx test/ops "^${SAN_TEST//./\\.}\$"
else
  say "=== [memcheck] compute-sanitizer not found"
  NAMES+=(memcheck); RESULTS+=("SKIPPED (no compute-sanitizer)"); TIMES+=(0)
fi

# ---- 4. the benchmark
stage bench 45 npx --no-install tsx bench/ops_gpu.ts ${QUICK:+--quick}

# ---- summary
say ""
say "=== summary"
fail=0
for i in "${!NAMES[@]}"; do
  say "$(printf '%-12s %-28s %5ss' "${NAMES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}")"
  [ "${RESULTS[$i]}" = PASS ] || fail=1
done
if [ -n "${OUT:-}" ] && [ -f "$OUT/ops_gpu.md" ]; then say "benchmark table: $OUT/ops_gpu.md"; fi
exit $fail
