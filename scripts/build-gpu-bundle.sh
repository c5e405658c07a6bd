#!/usr/bin/env bash
# Build everything the GPU machine runs, in release, into gpu-bundle/ (git-ignored), with a manifest.
#
# Usage: NVCC=<path to nvcc> scripts/build-gpu-bundle.sh
#
# The GPU machine has no Rust toolchain and no network, so this builds here: every GPU test binary
# (tests/gpu_*.rs and tests/emulator_compare.rs; found through `cargo test --release --no-run
# --message-format=json`), the emulated GPU (ptx-emu's libptx_emu.so, beside the tests, for
# scripts/compare-emulator.sh), the `moe` command and the examples. The kernels must be compiled
# in (MOE_KERNELS_REQUIRE_NVCC=1 is set), or the tests would only skip. Then carry gpu-bundle/ to the GPU machine and run
# scripts/gpu-check.sh there from the repository root.
#
# gpu-bundle/
#   tests/<name>        GPU test binaries (libtest harness: `<bin> [filter] --test-threads=N`)
#   tests/libptx_emu.so the emulated GPU, which the tests load with MOE_KERNELS_EMULATOR=1
#   bin/moe             the command-line tool
#   examples/<name>     the examples
#   MANIFEST.txt        commit, toolchain, and every file with its size and sha256
#   bundle.tar.xz       all of the above in one archive
#
# Every binary embeds the same fatbins (about 20 MB each), so the folder is large but the archive,
# whose xz dictionary spans the copies, is a few MB: carrying gpu-bundle/bundle.tar.xz alone is
# enough, scripts/gpu-check.sh unpacks it when gpu-bundle/tests is missing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bundle="$root/gpu-bundle"

if [[ -z "${NVCC:-}" ]]; then
    echo "build-gpu-bundle.sh: set NVCC to nvcc (scripts/install-cuda-toolchain.sh prints it)" >&2
    exit 2
fi
export MOE_KERNELS_REQUIRE_NVCC=1

echo "== building the moe command and the examples (release)"
cargo build --release --bin moe --examples

echo "== building the test binaries (release)"
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo test --release --no-run --message-format=json >"$json"

rm -rf "$bundle"
mkdir -p "$bundle/tests" "$bundle/bin" "$bundle/examples"

# Test executables of the integration tests named gpu_*, one line "<name> <path>" each.
python3 - "$json" >"$bundle/.tests" <<'PY'
import json, sys
seen = set()
for line in open(sys.argv[1]):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    target = msg["target"]
    wanted = target["name"].startswith("gpu_") or target["name"] == "emulator_compare"
    if "test" in target["kind"] and wanted and target["name"] not in seen:
        seen.add(target["name"])
        print(target["name"], msg["executable"])
PY
if [[ ! -s "$bundle/.tests" ]]; then
    echo "build-gpu-bundle.sh: no gpu_* test binary was built" >&2
    exit 1
fi
while read -r name path; do
    cp "$path" "$bundle/tests/$name"
done <"$bundle/.tests"
rm -f "$bundle/.tests"
emulator="$(ls -t target/release/deps/libptx_emu.so target/release/libptx_emu.so 2>/dev/null | head -n 1)"
if [[ -z "$emulator" ]]; then
    echo "build-gpu-bundle.sh: the emulated GPU (libptx_emu.so) was not built" >&2
    exit 1
fi
cp "$emulator" "$bundle/tests/libptx_emu.so"

cp target/release/moe "$bundle/bin/moe"
for src in examples/*.rs; do
    name="$(basename "$src" .rs)"
    cp "target/release/examples/$name" "$bundle/examples/$name"
done

{
    echo "# gpu-bundle manifest"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "rustc: $(rustc --version)"
    echo "nvcc: $("$NVCC" --version | tail -n 1)"
    echo
    echo "# size sha256 path"
    (cd "$bundle" && find . -type f ! -name MANIFEST.txt | sort | while read -r f; do
        printf '%s %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)" "${f#./}"
    done)
} >"$bundle/MANIFEST.txt"

# One xz stream with a 64 MiB dictionary, so that the repeated fatbins compress to one copy.
tar cf - -C "$bundle" MANIFEST.txt tests bin examples | xz -9 >"$bundle/bundle.tar.xz"

echo "== gpu-bundle/ is ready:"
cat "$bundle/MANIFEST.txt"
echo "archive: $(stat -c %s "$bundle/bundle.tar.xz") bytes, gpu-bundle/bundle.tar.xz"
