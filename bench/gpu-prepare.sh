#!/usr/bin/env bash
# Prepares a GPU check (bench/gpu-check.sh) on the development machine, so that the lent GPU machine spends
# its minutes testing instead of building. The device tool copies the working tree (64 MiB at most) and the
# paths named in `carry`; our tracked fixtures alone are ~95 MB, so the check takes only what it needs.
#
#   bash bench/gpu-prepare.sh pack     # .devcarry/: node.xz, nm.tar.xz, hypersd.node.xz (CUDA, sm_90),
#                                      # fix.tar.xz (the tiny models' diffusers folders and io), tokenizer/
#   bash bench/gpu-prepare.sh slim     # untrack test/fixtures in the index (NOT committed) and ignore it
#   ... device run: command `OUT=$OUT bash bench/gpu-check.sh`, carry [.devcarry] (~61 MB in all)
#   bash bench/gpu-prepare.sh restore  # puts the index and .git/info/exclude back (run it right after!)
set -euo pipefail
cd "$(dirname "$0")/.."
EXCL=.git/info/exclude
case "${1:-}" in
  pack)
    mkdir -p .devcarry
    grep -qx '/.devcarry/' "$EXCL" || echo '/.devcarry/' >> "$EXCL"
    HYPERSD_CUDA=1 HYPERSD_CUDA_ARCHS=${HYPERSD_CUDA_ARCHS:-90} npx cmake-js compile -O build-cuda90
    xz -T2 -9 -c build-cuda90/Release/hypersd.node > .devcarry/hypersd.node.xz
    echo "sm_${HYPERSD_CUDA_ARCHS:-90}, $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty), built $(date -u +%FT%TZ)" > .devcarry/hypersd.node.txt
    [ -f .devcarry/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .devcarry/node.xz
    tar -cJf .devcarry/nm.tar.xz --exclude='node_modules/@typescript' --exclude='node_modules/typescript' \
      --exclude='node_modules/@types' node_modules
    if [ -f ../shared/fixtures/tokenizer/vocab.json ]; then
      mkdir -p .devcarry/tokenizer && cp ../shared/fixtures/tokenizer/{vocab.json,merges.txt} .devcarry/tokenizer/
    fi
    tar -cf - test/fixtures/tiny-sd15/diffusers test/fixtures/tiny-sd15/io.safetensors \
      test/fixtures/tiny-sdxl/diffusers test/fixtures/tiny-sdxl/io.safetensors | xz -T2 -6 > .devcarry/fix.tar.xz
    du -sh .devcarry/*
    ;;
  slim)
    git diff --cached --quiet || { echo "the index has staged changes: commit or unstage them first" >&2; exit 1; }
    git rm -r -q --cached test/fixtures
    grep -qx '/test/fixtures/' "$EXCL" || echo '/test/fixtures/' >> "$EXCL"
    echo "test/fixtures untracked in the index (not committed). Run 'bash bench/gpu-prepare.sh restore' after the device run."
    ;;
  restore)
    git reset -q -- test/fixtures
    sed -i '\#^/test/fixtures/$#d' "$EXCL"
    git status --short | head
    ;;
  *) echo "usage: bash bench/gpu-prepare.sh pack|slim|restore" >&2; exit 2 ;;
esac
