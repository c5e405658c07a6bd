#!/usr/bin/env bash
# Check that moe-kernels builds in the dependency graph of the Rust inference engines that link it:
# tests/engine-consumer (a stand-in engine) with candle-core's cudarc features, at the oldest and the
# newest supported candle-core, and with what mistral.rs adds (cuDNN, NCCL).
#
# Then it lints moe-kernels' own `candle-cuda` feature (candle-core's CUDA backend, whose kernels
# candle-kernels builds with nvcc: about 10 minutes on 2 cores), which needs $NVCC.
#
# Usage: scripts/check-engine-builds.sh
#
# `cargo check` runs every build script (cudarc's refuses contradictory features there) and compiles
# every crate, without linking: the CUDA libraries candle links (cuBLAS, cuRAND, NVRTC, ...) are not
# needed. $NVCC, when set, goes on PATH as nvcc is on an engine's build machine (cudarc asks it for
# the CUDA version).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$root/tests/engine-consumer/Cargo.toml"
export CARGO_TARGET_DIR="$root/target/engine-consumer"
if [[ -n "${NVCC:-}" ]]; then
    PATH="$(dirname "$NVCC"):$PATH"
    export PATH
fi

check() {
    local what="$1"
    shift
    echo "--- $what"
    cargo check --quiet --manifest-path "$manifest" "$@"
    cargo tree --manifest-path "$manifest" -e features -i cudarc "$@" 2>/dev/null |
        grep -oE '"(dynamic-linking|dynamic-loading|fallback-dynamic-loading|cuda-version-from-build-system|cudnn|nccl)"' |
        sort -u | tr '\n' ' '
    echo
}

cargo update --quiet --manifest-path "$manifest" -p candle-core --precise 0.9.2
check "candle-core $(cargo tree --manifest-path "$manifest" -i candle-core --depth 0 | cut -d' ' -f2) (oldest supported)"
cargo update --quiet --manifest-path "$manifest" -p candle-core
check "candle-core $(cargo tree --manifest-path "$manifest" -i candle-core --depth 0 | cut -d' ' -f2) (newest)"
check "mistral.rs's set: candle's features and cudnn, nccl" --features mistralrs

echo "--- moe-kernels with --features candle-cuda (clippy; candle-kernels built for sm_80)"
if [[ -z "${NVCC:-}" ]]; then
    echo "NVCC is not set: candle-core's CUDA backend cannot be built (scripts/install-cuda-toolchain.sh)" >&2
    exit 1
fi
CARGO_TARGET_DIR="$root/target/candle-cuda" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}" \
    cargo clippy --quiet --manifest-path "$root/Cargo.toml" --all-targets --features candle-cuda -- -D warnings
echo "engine builds: ok"
