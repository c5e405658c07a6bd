#!/usr/bin/env bash
# Check that moe-kernels builds in the dependency graph of the Rust inference engines that link it:
# tests/engine-consumer (a stand-in engine) with candle-core's cudarc features, at the oldest and the
# newest supported candle-core, and with what mistral.rs adds (cuDNN, NCCL).
#
# Then it builds moe-kernels' own `candle-cuda` feature against candle-core's CUDA backend (whose
# kernels candle-kernels builds with nvcc, which needs $NVCC) and runs the candle tests on CUDA
# tensors on the emulated GPU.
#
# Usage: scripts/check-engine-builds.sh
#
# `cargo check` runs every build script (cudarc's refuses contradictory features there) and compiles
# every crate, without linking. The candle-cuda tests link: the emulator stands for the CUDA
# libraries candle links (cuBLAS, cuRAND, NVRTC, ...). $NVCC, when set, goes on PATH as nvcc is on
# an engine's build machine (cudarc asks it for the CUDA version).
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

# moe-kernels' own candle-cuda feature against candle-core's CUDA backend, at the oldest supported
# candle (whose kernels nvcc builds in about 3 minutes; 0.11's take about 17 on 2 cores): the candle
# tests (tests/candle_ops.rs, compiled in this graph) on CPU and CUDA tensors, run on the emulated
# GPU, which also stands for the CUDA libraries candle-core links (scripts/with-emulated-gpu).
# Warnings in moe-kernels and in the tests fail it (registry crates' lints are capped by cargo).
echo "--- moe-kernels --features candle-cuda at candle-core 0.9.2: tests/candle_ops.rs on the emulated GPU"
if [[ -z "${NVCC:-}" ]]; then
    echo "NVCC is not set: candle-core's CUDA backend cannot be built (scripts/install-cuda-toolchain.sh)" >&2
    exit 1
fi
cargo update --quiet --manifest-path "$manifest" -p candle-core --precise 0.9.2
# The emulator builds in the workspace's own target directory, the consumer in its own.
env -u CARGO_TARGET_DIR "$root/scripts/with-emulated-gpu" \
    env CUDA_ROOT="$(dirname "$(dirname "$NVCC")")" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}" \
    RUSTFLAGS="-D warnings" CARGO_TARGET_DIR="$root/target/engine-consumer-cuda" \
    cargo test --quiet --manifest-path "$manifest" --features candle-cuda --test candle_ops
echo "engine builds: ok"
