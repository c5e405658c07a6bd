#!/usr/bin/env bash
# Emulator against hardware: run every kernel family on the same fixed inputs on the real GPU and on
# the emulated GPU (ptx-emu), then compare the outputs (tests/emulator_compare.rs): bit for bit
# outside mma and .approx functions, within a few ulps after .approx functions, within relative L2
# tolerances after mma. Run on a GPU machine from the repository root.
#
# Usage: [OUT=<dir>] scripts/compare-emulator.sh
#
# Uses gpu-bundle/tests/emulator_compare (with gpu-bundle/tests/libptx_emu.so beside it, made by
# scripts/build-gpu-bundle.sh) when present, else builds the test with cargo. Writes
# $OUT/emulator-compare/{gpu,emulated}/ (the dumps) and report.md; exits non-zero on a mismatch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-./gpu-out}"
dir="$OUT/emulator-compare"
rm -rf "$dir"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

bin="$root/gpu-bundle/tests/emulator_compare"
if [[ ! -x "$bin" ]]; then
    echo "== building tests/emulator_compare.rs (release)"
    bin="$(cargo test --release --test emulator_compare --no-run --message-format=json \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "emulator_compare":
        print(m["executable"])' | tail -n 1)"
fi

echo "== dump on the GPU"
MOE_KERNELS_EMULATOR=0 MOE_KERNELS_REQUIRE_GPU=1 MOE_KERNELS_DUMP_DIR="$dir/gpu" \
    "$bin" --exact dump --nocapture
echo "== dump on the emulated GPU"
MOE_KERNELS_EMULATOR=1 MOE_KERNELS_REQUIRE_GPU=1 MOE_KERNELS_DUMP_DIR="$dir/emulated" \
    "$bin" --exact dump --nocapture
echo "== compare"
MOE_KERNELS_COMPARE="$dir/gpu:$dir/emulated" MOE_KERNELS_COMPARE_REPORT="$dir/report.md" \
    "$bin" --exact compare --nocapture
