#!/usr/bin/env bash
# One run on a fresh GPU machine (a copy of the repository; nothing downloadable there):
#   0. setup: node, node_modules and the tiny fixture models from .devcarry/ when the machine lacks them
#      (bench/gpu-prepare.sh makes .devcarry/ here: node.xz, nm.tar.xz, fix.tar.xz, a CUDA addon built for
#      sm_90, the CLIP vocabulary)
#   1. the addon: the carried .devcarry/hypersd.node if it loads and sees the GPU, else a build with CUDA
#      (cmake-js, offline) for this GPU's architecture (HYPERSD_CUDA_ARCHS overrides)
#   2. op tests on the GPU, one process per file, HYPERSD_SYNC=1 so a faulting kernel names its op:
#      test/ops (forward ops vs float64 references), test/autograd (backward kernels vs finite differences),
#      test/train/optim (AdamW etc.; autograd/conv_input_grad runs conv2d's input gradient both ways, the backward
#      kernel and HYPERSD_CONV_BWD=fwd's forward convolution, not yet run on a GPU); then the gemm file on each Hopper GEMM (TMA 128 / 256 columns, cp.async)
#      and the attention file on each flash variant (one / two m tiles a warp, uncapped registers, and the
#      Hopper wgmma kernel forced on every shape it takes, HYPERSD_ATTN_WGMMA=1; the mma.sync stages set it to 0)
#   3. the tiny SD1.5/SDXL networks and pipelines on the GPU against the diffusers fixtures
#   4. compute-sanitizer memcheck over every op test file (SANITIZE_TESTS) and the gemm / attention variants,
#      racecheck over the kernels that share tiles in shared memory (RACECHECK_TESTS) and the wgmma attention
#   5. benchmarks: bench/ops_gpu.ts (TFLOP/s, GB/s beside measured ceilings; the GEMMs again with
#      HYPERSD_WGMMA=0 for the mma.sync kernel and HYPERSD_WGMMA_TMA=0 for the cp.async wgmma one, LoRA
#      without split-K, the attention rows on each variant), Nsight Compute reports (the K = 320 GEMMs, the
#      d = 64 flash kernel), each kernel's own duration under Nsight Compute
#      (bench/gpu_kernels.ts; $OUT/ncu_kernels.csv), full-size UNets and VAE, a per-op profile, end-to-end
#      (SASS=1 also lists the tensor-core instructions in the addon)
# Every stage runs even when an earlier one failed, each under a timeout clipped to an overall deadline
# (DEADLINE_S, default 345 s, so that a whole run ends within issue 3's 6 minutes); the tests and sanitizers
# stop BENCH_RESERVE_S (default 60 s on a full run, 0 with ONLY) before it, so the benchmarks always get their
# turn; a stage that would start past its deadline is listed as SKIPPED. The script ends with a summary and
# exits non-zero when any stage failed or was skipped.
# Everything goes to stdout and, when $OUT is set, to $OUT/gpu-check.log (plus $OUT/ops_gpu.{md,json}).
# It installs nothing from a network.
#
#   bash bench/gpu-check.sh            # from the repository root or anywhere
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
T_START=$(date +%s)
DEADLINE=$((T_START + ${DEADLINE_S:-345}))
STAGE_END=$DEADLINE  # the current phase's deadline (stage() clips to it)
LOG=${OUT:+$OUT/gpu-check.log}
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && : > "$LOG"; fi

say() {
  if [ -n "$LOG" ]; then echo "$@" | tee -a "$LOG"; else echo "$@"; fi
}

declare -a NAMES RESULTS TIMES
# stage NAME TIMEOUT_S CMD...: runs CMD with a timeout (clipped to the deadline), output to stdout and the
# log, records the outcome.
stage() {
  local name=$1 limit=$2
  shift 2
  if [ -n "${ONLY:-}" ] && ! [[ "$name" =~ $ONLY ]]; then return; fi  # ONLY=regex: just the matching stages
  local left=$((STAGE_END - $(date +%s)))
  if [ "$left" -lt 8 ]; then
    say "=== [$name] SKIPPED: past the deadline"
    NAMES+=("$name"); RESULTS+=("SKIPPED (deadline)"); TIMES+=(0)
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say ""
  say "=== [$name] $* (timeout ${limit}s, +$(( $(date +%s) - T_START ))s)"
  local t0=$(date +%s) rc
  if [ -n "$LOG" ]; then
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
  else
    timeout --kill-after=5 "$limit" "$@" 2>&1
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

# ---- 0. setup
say "hypersd gpu-check, $(date -u +%Y-%m-%dT%H:%M:%SZ), in $ROOT"
if ! command -v node > /dev/null 2>&1 && [ -f .devcarry/node.xz ]; then
  mkdir -p /tmp/hsd-node/bin && xz -dc .devcarry/node.xz > /tmp/hsd-node/bin/node && chmod +x /tmp/hsd-node/bin/node
  export PATH=/tmp/hsd-node/bin:$PATH
  say "node: the carried binary"
fi
if [ ! -d node_modules/uvu ] && [ -f .devcarry/nm.tar.xz ]; then
  tar -xJf .devcarry/nm.tar.xz && say "node_modules: the carried archive"
fi
if [ ! -f test/fixtures/tiny-sd15/io.safetensors ] && [ -f .devcarry/fix.tar.xz ]; then
  tar -xJf .devcarry/fix.tar.xz && say "test/fixtures: the carried tiny models"
fi
export PATH=$ROOT/node_modules/.bin:$PATH
UVU="node $ROOT/node_modules/uvu/bin.js -r tsx"
stage info 15 bash -c 'nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv; (nvcc --version | tail -2) || true; node --version; cmake --version | head -1; uname -r; nproc'

if [ -z "${HYPERSD_CUDA_ARCHS:-}" ]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  case "$cap" in
    80|86|89|90) export HYPERSD_CUDA_ARCHS=$cap ;;
    *) export HYPERSD_CUDA_ARCHS=90 ;;  # newer GPUs JIT the compute_90 PTX that this build embeds
  esac
fi

# ---- 1. the addon
probe() { node -e "const s = require('$1').cudaStatus(); console.log('cudaStatus', JSON.stringify(s)); process.exit(s.available ? 0 : 1)"; }
ADDON=""
if [ -f .devcarry/hypersd.node.xz ] && [ "${HYPERSD_REBUILD:-0}" != 1 ]; then
  mkdir -p /tmp/hsd-addon && xz -dc .devcarry/hypersd.node.xz > /tmp/hsd-addon/hypersd.node
  probe /tmp/hsd-addon/hypersd.node > /tmp/hsd-addon/probe.txt 2>&1; prc=$?
  say "$(cat /tmp/hsd-addon/probe.txt)"
  if [ "$prc" = 0 ]; then
    ADDON=/tmp/hsd-addon/hypersd.node
    say "addon: the carried build ($(cat .devcarry/hypersd.node.txt 2>/dev/null))"
  else
    say "addon: the carried build does not load or sees no GPU; building"
  fi
fi
if [ -z "$ADDON" ]; then
  say "building for sm_${HYPERSD_CUDA_ARCHS}"
  export HYPERSD_CUDA=1
  export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
  stage build 240 node node_modules/cmake-js/bin/cmake-js compile
  ADDON=$ROOT/build/Release/hypersd.node
fi
export HYPERSD_ADDON=$ADDON
stage cuda-status 15 node -e "
const n = require(process.env.HYPERSD_ADDON);
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

# ---- 2. op tests on the GPU, one process per file (a sticky CUDA fault stays in its file)
# phases 2-4 leave the benchmarks their reserve
if [ -z "${ONLY:-}" ]; then RESERVE=${BENCH_RESERVE_S:-60}; else RESERVE=${BENCH_RESERVE_S:-0}; fi
STAGE_END=$((DEADLINE - RESERVE))
export HYPERSD_TEST_DEVICE=cuda
export NODE_DISABLE_COLORS=1 FORCE_COLOR=0
# (autograd/unet_lora runs on the CPU whatever the device: left out)
for f in test/ops/*.test.ts test/autograd/{attention_norm_act,attention_half,conv_input_grad,elementwise_shape,gemm_conv,tape}.test.ts test/train/optim.test.ts; do
  d=$(dirname "$f"); b=$(basename "$f")
  stage "${d#test/}/${b%.test.ts}" 60 env HYPERSD_SYNC=1 $UVU "$d" "^${b//./\\.}\$"
done

# the GEMM file again on each Hopper kernel: TMA with 128- and 256-column tiles forced, the cp.async kernel
for v in 128 256 0; do
  stage "ops/gemm-tma$v" 60 env HYPERSD_SYNC=1 HYPERSD_WGMMA_TMA=$v $UVU test/ops "^gemm\\.test\\.ts\$"
done
# the GEMM file and the path-coverage file on the mma.sync kernel alone (HYPERSD_WGMMA=0): on Hopper every
# eligible 16-bit GEMM otherwise goes to wgmma, and mma.sync is the only kernel on sm_80 / 86 / 89
stage "ops/gemm-mma" 60 env HYPERSD_SYNC=1 HYPERSD_WGMMA=0 $UVU test/ops "^gemm\\.test\\.ts\$"
stage "ops/cuda_paths-mma" 60 env HYPERSD_SYNC=1 HYPERSD_WGMMA=0 $UVU test/ops "^cuda_paths\\.test\\.ts\$"
# the attention file again on each flash-kernel variant (64-row blocks, 128-row blocks for head dims <= 64)
for wm in 1 2; do
  stage "ops/attention-wm$wm" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_WGMMA=0 HYPERSD_ATTN_WM=$wm $UVU test/ops "^attention\\.test\\.ts\$"
done
stage "ops/attention-occ3" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_WGMMA=0 HYPERSD_ATTN_OCC=3 $UVU test/ops "^attention\\.test\\.ts\$"
# the Hopper wgmma flash kernel (attention_sm90a.cu) forced on every shape it takes, short key lists too
stage "ops/attention-wgmma" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_WGMMA=1 $UVU test/ops "^attention\\.test\\.ts\$"

# the norm file again on the group-norm variants: the statistics summed by the statistics kernel's last block;
# the apply kernel as a plain launch (not a programmatic dependent one)
stage "ops/norm-variants" 60 env HYPERSD_SYNC=1 HYPERSD_GN_REDUCE_IN_STATS=1 $UVU test/ops "^norm\\.test\\.ts\$"
stage "ops/norm-nopdl" 60 env HYPERSD_SYNC=1 HYPERSD_GN_PDL=0 $UVU test/ops "^norm\\.test\\.ts\$"

# the half-precision attention gradients again on the SIMT backward (the default is the tensor-core one:
# attention.cu attn_bwd_*_mma_kernel)
stage "autograd/attention_half-simt" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_BWD=simt $UVU test/autograd "^attention_half\\.test\\.ts\$"
# and with head dims 80-160 on tensor cores too (HYPERSD_ATTN_BWD=mma-all: written in session 21, not yet run)
stage "autograd/attention_half-mma-all" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_BWD=mma-all $UVU test/autograd "^attention_half\\.test\\.ts\$"

# ---- 3. networks and pipelines against the diffusers fixtures, on the GPU
if [ -f .devcarry/tokenizer/vocab.json ]; then export HYPERSD_SHARED_FIXTURES=$ROOT/.devcarry; fi
stage networks 90 env HYPERSD_TEST_LAYOUTS=diffusers $UVU test "^(models/networks|pipelines/pipeline)\\.test\\.ts\$"
# the networks with the convolutions' channel statistics handed to the group norms (opt-in on CUDA until this
# has passed on a GPU: session 22)
stage networks-gn-stats 90 env HYPERSD_GN_STATS=1 HYPERSD_TEST_LAYOUTS=diffusers $UVU test "^models/networks\\.test\\.ts\$"

# ---- 4. memcheck on small op test files
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ]; then
  for t in ${SANITIZE_TESTS:-attention norm chanstats gemm conv shape elementwise embedding activation random}; do
    stage "memcheck-$t" 60 env HYPERSD_SYNC=1 "$SAN" --tool memcheck --target-processes all --error-exitcode 9 \
      --print-limit 20 $UVU test/ops "^$t\\.test\\.ts\$"
  done
  stage "memcheck-attention-wm2" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_WGMMA=0 HYPERSD_ATTN_WM=2 "$SAN" --tool memcheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/ops "^attention\\.test\\.ts\$"
  stage "memcheck-attention-wgmma" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_WGMMA=1 "$SAN" --tool memcheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/ops "^attention\\.test\\.ts\$"
  stage "racecheck-attention-wgmma" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_WGMMA=1 "$SAN" --tool racecheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/ops "^attention\\.test\\.ts\$"
  stage "memcheck-attention-bwd" 60 env HYPERSD_SYNC=1 "$SAN" --tool memcheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/autograd "^attention_half\\.test\\.ts\$"
  stage "racecheck-attention-bwd" 60 env HYPERSD_SYNC=1 "$SAN" --tool racecheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/autograd "^attention_half\\.test\\.ts\$"
  stage "memcheck-attention-bwd-mma-all" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_BWD=mma-all "$SAN" --tool memcheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/autograd "^attention_half\\.test\\.ts\$"
  stage "racecheck-attention-bwd-mma-all" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_BWD=mma-all "$SAN" --tool racecheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/autograd "^attention_half\\.test\\.ts\$"
  stage "memcheck-gemm-tma256" 60 env HYPERSD_SYNC=1 HYPERSD_WGMMA_TMA=256 "$SAN" --tool memcheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/ops "^gemm\\.test\\.ts\$"
  stage "racecheck-chanstats" 60 env HYPERSD_SYNC=1 "$SAN" --tool racecheck --target-processes all --error-exitcode 9 \
    --print-limit 20 $UVU test/ops "^chanstats\\.test\\.ts\$"
  stage "racecheck-attention-mma" 60 env HYPERSD_SYNC=1 HYPERSD_ATTN_WGMMA=0 "$SAN" --tool racecheck --target-processes all \
    --error-exitcode 9 --print-limit 20 $UVU test/ops "^attention\\.test\\.ts\$"
  for t in ${RACECHECK_TESTS:-attention gemm norm}; do
    stage "racecheck-$t" 60 env HYPERSD_SYNC=1 "$SAN" --tool racecheck --target-processes all --error-exitcode 9 \
      --print-limit 20 $UVU test/ops "^$t\\.test\\.ts\$"
  done
elif [ -z "${ONLY:-}" ] || [[ "$ONLY" == *memcheck* || "$ONLY" == *racecheck* ]]; then
  say "=== [memcheck] compute-sanitizer not found"
  NAMES+=(memcheck); RESULTS+=("SKIPPED (no compute-sanitizer)"); TIMES+=(0)
fi
unset HYPERSD_TEST_DEVICE

# ---- 5. benchmarks (up to the overall deadline)
STAGE_END=$DEADLINE
# the per-op floor (JS, the queue, the worker's host code, the launch) under every small op
stage op-floor 30 node node_modules/tsx/dist/cli.mjs bench/op_floor.ts cuda
stage bench-ops 60 node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts ${QUICK:+--quick} ${BENCH_ONLY:+--only $BENCH_ONLY}
# group norm back to back on its variants, twice each, alternated: the partials summed by the apply blocks or by
# the statistics kernel's last block, each with and without the apply kernel as a programmatic dependent launch
# (HYPERSD_GN_PDL=0 / 1)
stage bench-norm-ab 60 bash -c 'for r in 1 2; do for v in "HYPERSD_GN_REDUCE_IN_STATS=0 HYPERSD_GN_PDL=0" \
  "HYPERSD_GN_REDUCE_IN_STATS=0 HYPERSD_GN_PDL=1" "HYPERSD_GN_REDUCE_IN_STATS=1 HYPERSD_GN_PDL=0" \
  "HYPERSD_GN_REDUCE_IN_STATS=1 HYPERSD_GN_PDL=1"; do echo "-- $v (round $r)"; env $v OUT= node node_modules/tsx/dist/cli.mjs \
  bench/ops_gpu.ts --only norm | grep -E "^(group_norm|copy)"; done; done'
# each kernel's own duration (Nsight Compute, one metric, clocks left alone), free of the per-op host cost that
# the back-to-back timings above include for small ops; one CSV row per launch, in launch order
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
if [ -x "$NCU" ] && [ "${NCU_KERNELS:-1}" = 1 ]; then
  stage ncu-kernels 90 "$NCU" --clock-control none --target-processes all --metrics gpu__time_duration.sum --csv \
    ${OUT:+--log-file "$OUT/ncu_kernels.csv"} node node_modules/tsx/dist/cli.mjs bench/gpu_kernels.ts
fi
# where the wgmma GEMM's time goes at the UNet's small K (the SD1.5 projections: 8192 x 320 x 320 and the GEGLU
# input 8192 x 320 x 2560): throughput, stall reasons, occupancy of one launch of each
if [ -x "$NCU" ] && [ "${NCU_GEMM:-1}" = 1 ]; then
  stage ncu-gemm 60 "$NCU" --clock-control none --target-processes all -k regex:wgmma_ --launch-skip 2 --launch-count 2 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
    node node_modules/tsx/dist/cli.mjs bench/gpu_kernels.ts
fi
# where the flash-attention kernel's time goes at d = 64 (SDXL self-attention, the issue's 300 TFLOP/s shape):
# the second launch of that shape in bench/gpu_kernels.ts (the fourth shape: 3 x REPS earlier flash launches)
if [ -x "$NCU" ] && [ "${NCU_ATTN:-1}" = 1 ]; then
  stage ncu-attn 60 "$NCU" --clock-control none --target-processes all -k regex:flash_attn --launch-skip 10 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis node node_modules/tsx/dist/cli.mjs bench/gpu_kernels.ts
fi
# group norm's kernels at six sizes on each variant (bench/gpu_kernels.ts GN_ONLY=1), beside a same-size SiLU;
# caches left warm between kernels (--cache-control none), as in a network, where x was just written
if [ -x "$NCU" ] && [ "${NCU_GN_VARIANTS:-1}" = 1 ]; then
  stage ncu-gn-variants 90 env GN_ONLY=1 "$NCU" --clock-control none --cache-control none --target-processes all --metrics gpu__time_duration.sum --csv \
    ${OUT:+--log-file "$OUT/ncu_gn_variants.csv"} node node_modules/tsx/dist/cli.mjs bench/gpu_kernels.ts
fi
# where group norm's two kernels spend their time at the SD1.5 UNet's 64x64 x 320 (f16, SiLU): the second rep's
# statistics and apply launches of bench/gpu_kernels.ts's first group-norm shape
if [ -x "$NCU" ] && [ "${NCU_GN:-1}" = 1 ]; then
  stage ncu-gn 60 "$NCU" --clock-control none --target-processes all -k regex:gn_ --launch-skip 2 --launch-count 2 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
    node node_modules/tsx/dist/cli.mjs bench/gpu_kernels.ts
fi
# the same GEMMs on the mma.sync kernel (HYPERSD_WGMMA=0), for the comparison; and which instructions it has
stage bench-attn-bwd-simt 40 env HYPERSD_ATTN_BWD=simt OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only train
stage bench-attn-bwd-mma-all 40 env HYPERSD_ATTN_BWD=mma-all OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only train
stage bench-gemm-mma 40 env HYPERSD_WGMMA=0 OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only gemm,lora
stage bench-lora-nosplit 30 env HYPERSD_LORA_SPLIT=0 OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only lora
stage bench-gemm-cpasync 40 env HYPERSD_WGMMA_TMA=0 OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only gemm,lora
# the attention rows on the one-tile flash kernel, for the side-by-side comparison with the default choice
stage bench-attn-wm1 30 env HYPERSD_ATTN_WGMMA=0 HYPERSD_ATTN_WM=1 OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only attn
stage bench-attn-mma 30 env HYPERSD_ATTN_WGMMA=0 OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only attn
stage bench-attn-occ3 30 env HYPERSD_ATTN_WGMMA=0 HYPERSD_ATTN_OCC=3 OUT= node node_modules/tsx/dist/cli.mjs bench/ops_gpu.ts --only attn
[ -n "${SASS:-}" ] && stage sass 20 bash -c "cuobjdump -sass '$HYPERSD_ADDON' | grep -oE '(HGMMA|HMMA)\.[A-Z0-9.]+' | sort | uniq -c | sort -rn | head -8"
stage bench-unet 60 node node_modules/tsx/dist/cli.mjs bench/unet.ts --device cuda --dtype f16,bf16 --reps 5 --only sd15
stage bench-vae 60 node node_modules/tsx/dist/cli.mjs bench/unet.ts --device cuda --dtype f32,bf16 --reps 3 --only vae
stage bench-vae-gn-stats 60 env HYPERSD_GN_STATS=1 node node_modules/tsx/dist/cli.mjs bench/unet.ts --device cuda --dtype bf16 --reps 3 --only vae
stage bench-gn-stats 60 node node_modules/tsx/dist/cli.mjs bench/gn_stats.ts --device cuda --rounds 2
stage profile-unet 60 env HYPERSD_SYNC=1 node node_modules/tsx/dist/cli.mjs bench/unet.ts --device cuda --dtype bf16 --reps 1 --only sd15 --profile
stage bench-unet-xl 60 node node_modules/tsx/dist/cli.mjs bench/unet.ts --device cuda --dtype bf16 --reps 5 --only sdxl --xl-128
if [ -f .devcarry/tokenizer/vocab.json ]; then
  stage bench-e2e 60 node node_modules/tsx/dist/cli.mjs bench/e2e.ts --device cuda --dtype bf16 --vae-dtype bf16 --steps 1,4 --reps 2 --tokenizer .devcarry/tokenizer
fi

# ---- summary
say ""
say "=== summary (total $(( $(date +%s) - T_START ))s)"
fail=0
for i in "${!NAMES[@]}"; do
  say "$(printf '%-22s %-28s %5ss' "${NAMES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}")"
  [ "${RESULTS[$i]}" = PASS ] || fail=1
done
if [ -n "${OUT:-}" ] && [ -f "$OUT/ops_gpu.md" ]; then say "benchmark table: $OUT/ops_gpu.md"; fi
exit $fail
