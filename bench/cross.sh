#!/usr/bin/env bash
# The C++ core for a CPU without x86 (aarch64 Linux: Graviton, Ampere, a Raspberry Pi 4/5; the same portable
# kernels an Apple Silicon build gets), cross-compiled, and the ops smoke program (every heavy kernel, client
# threads racing pool swaps, outputs checked finite) run under qemu-user. Only the portable code paths exist
# there, so this catches x86 intrinsics or x86 assumptions leaking out of their guards.
#
#   bash bench/cross.sh [--if-available]
#
# Needs Debian's g++-aarch64-linux-gnu (and qemu-user to run the program). With --if-available (CI), a machine
# without them skips, saying so, instead of failing. ~70 s to build on 2 cores, ~30 s under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=aarch64-linux-gnu-g++
if ! command -v "$CXX" >/dev/null 2>&1; then
  if [ "${1:-}" = "--if-available" ]; then
    echo "cross.sh: $CXX not found (apt-get install g++-aarch64-linux-gnu qemu-user): aarch64 build skipped"
    exit 0
  fi
  echo "cross.sh: $CXX not found (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
  exit 1
fi
B=${CROSS_BUILD_DIR:-build-aarch64}
HYPERSD_CUDA=0 cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux \
  -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER="$CXX" >/dev/null
# Warnings in our sources fail the cross build (the x86 builds see other code behind the same #ifs).
ninja -C "$B" hypersd_core hypersd_example hypersd_ops_smoke 2>&1 | tee "$B/build.log" | grep -E "error|warning" || true
if grep -E "^/.*(native|examples|bench)/.*(error|warning):" "$B/build.log" >/dev/null; then
  echo "cross.sh: the aarch64 build printed errors or warnings in our sources" >&2
  exit 1
fi
if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  echo "cross.sh: built for aarch64; qemu-aarch64 not found, so the programs were not run"
  exit 0
fi
QEMU="qemu-aarch64 -L /usr/aarch64-linux-gnu"
$QEMU "$B/hypersd_example"
$QEMU "$B/hypersd_ops_smoke"
echo "cross.sh: aarch64 core built and its programs passed under qemu"
