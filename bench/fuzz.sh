#!/usr/bin/env bash
# Randomized checks of the CPU ops against float64 references (bench/fuzz/*: session 19's fuzzers), every
# family under each CPU kernel set (AVX-512 where the CPU has it, avx2, portable), seeded, each run time-boxed.
# Outputs sit in NaN / sentinel guards, so a read or write past a tensor shows as a failure too.
#
#   bash bench/fuzz.sh [seconds a run (60)] [seed (1)]      logs in $FUZZ_OUT (default /tmp/hypersd-fuzz)
#   HYPERSD_ADDON=path/to/sanitizer/hypersd.node LD_PRELOAD=... bash bench/fuzz.sh   (an ASan / UBSan addon: see
#   bench/sanitize.sh; sanitizer reports are counted too)
#
# It prints, per run, the failures it saw and the sanitizer reports; bench/fuzz/README.md lists the misses
# that are the references' strictness rather than the kernels (f16 outputs of ~1e-40 inputs, and the like).
# Not part of CI (minutes of runs); run it after changing a kernel. ~15 min at the default budget.
set -uo pipefail
cd "$(dirname "$0")/.."
S=${1:-60}
SEED=${2:-1}
OUT=${FUZZ_OUT:-/tmp/hypersd-fuzz}
mkdir -p "$OUT"
export HYPERSD_ADDON=${HYPERSD_ADDON:-$PWD/build/Release/hypersd.node}
TSX="node node_modules/tsx/dist/cli.mjs"
total=0
run() {  # run <name> <env/command...>
  local name=$1; shift
  local log="$OUT/$name.log"
  env "$@" >"$log" 2>&1
  local rc=$?
  local fails reports
  fails=$(grep -ac "FAIL\|^NO ERROR\|^BADMSG\|^WRONG" "$log")
  reports=$(grep -ac "ERROR: AddressSanitizer\|runtime error" "$log")
  local j
  j=$(grep -ao '"fails":[0-9]*' "$log" | tail -1 | cut -d: -f2)
  [ -n "$j" ] && [ "$j" -gt "$fails" ] && fails=$j
  printf '%-22s exit %-3s failures %-4s sanitizer reports %s\n' "$name" "$rc" "$fails" "$reports"
  grep -a "FAIL\|^NO ERROR\|^BADMSG\|^WRONG" "$log" | head -3 | cut -c1-200 | sed 's/^/    /'
  [ "$rc" -ne 0 ] || [ "$fails" -ne 0 ] || [ "$reports" -ne 0 ] && total=$((total + 1))
}
for ks in "" avx2 portable; do
  k=${ks:-default}
  run "conv-$k"      HYPERSD_CPU_KERNELS=$ks SEED=$SEED N=100000 BUDGET_S=$S timeout $((S + 60)) $TSX bench/fuzz/conv/conv.ts
  run "shape-$k"     HYPERSD_CPU_KERNELS=$ks SEED=$SEED N=300 timeout $((S + 60)) $TSX bench/fuzz/conv/shape.ts
  run "chanstats-$k" HYPERSD_CPU_KERNELS=$ks SEED=$SEED N=100000 BUDGET_S=$S timeout $((S + 90)) $TSX bench/fuzz/conv/chanstats.ts
  run "gemm-$k"      HYPERSD_CPU_KERNELS=$ks timeout $((S + 60)) $TSX bench/fuzz/gemm/gemm.ts "$SEED" 100000 "$S"
  run "lora-geglu-$k" HYPERSD_CPU_KERNELS=$ks timeout $((S + 60)) $TSX bench/fuzz/gemm/lora.ts "$SEED" 100000 "$S"
  run "attention-$k" HYPERSD_CPU_KERNELS=$ks timeout $((S + 60)) $TSX bench/fuzz/gemm/attn.ts "$SEED" 100000 "$S"
  for f in norm ln act elem softmax geglu misc; do
    run "$f-$k" HYPERSD_CPU_KERNELS=$ks SEED=$SEED ITERS=$((S * 2)) timeout $((S + 120)) $TSX bench/fuzz/pointwise/$f.ts
  done
  for f in gc na es big edge; do
    run "grad-$f-$k" HYPERSD_CPU_KERNELS=$ks timeout $((S + 120)) $TSX bench/fuzz/grad/$f.ts $((S / 6 + 1)) "$SEED"
  done
done
run "bf16-math-gemm"      HYPERSD_CPU_MATH=bf16 timeout $((S + 60)) $TSX bench/fuzz/gemm/gemm.ts "$SEED" 100000 "$S"
run "bf16-math-attention" HYPERSD_CPU_MATH=bf16 timeout $((S + 60)) $TSX bench/fuzz/gemm/attn.ts "$SEED" 100000 "$S"
run "errors" timeout 120 $TSX bench/fuzz/gemm/errors.ts
run "args" timeout 120 $TSX bench/fuzz/pointwise/args.ts
echo "fuzz: $total runs with failures or reports (logs in $OUT)"
