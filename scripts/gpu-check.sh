#!/usr/bin/env bash
# The GPU check: run on the GPU machine from the repository root, with gpu-bundle/ (made by
# scripts/build-gpu-bundle.sh) present, or only gpu-bundle/bundle.tar.xz, which is then unpacked.
# Needs nvidia-smi and compute-sanitizer; no Rust toolchain.
#
# Usage: [OUT=<dir>] scripts/gpu-check.sh
#
# Steps, each recorded as PASS or FAIL without stopping the others:
#   nvidia-smi                      the device and driver
#   test:<name>                     every GPU test binary with MOE_KERNELS_REQUIRE_GPU=1 (a skip fails)
#   graph                           the CUDA-graph capture/replay test on its own
#   emulator-compare                every kernel family on the GPU and on the emulated GPU, compared
#                                   (scripts/compare-emulator.sh; report in $OUT/emulator-compare)
#   memcheck, racecheck, synccheck, initcheck
#                                   compute-sanitizer over the small `sanitizer_smoke` test of every
#                                   binary (any sanitizer error fails)
#   bench                           `moe bench --device cuda` on every preset at BENCH_TOKENS
#                                   (default 1,16,128,1024,4096: about 8 minutes on an H200), with
#                                   the PyTorch peers (the machine's python3) and cuBLAS; the report
#                                   (results.json, results.md, SVG plots) goes to $OUT/bench
#                                   (BENCH=0 skips it)
# Logs go to $OUT (default ./gpu-out), with summary.md; the exit status is non-zero if anything
# failed; a short table is printed last.
set -u

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 2
bundle="$root/gpu-bundle"
OUT="${OUT:-./gpu-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

names=()
statuses=()
notes=()

# record <name> <PASS|FAIL> <note>
record() {
    names+=("$1")
    statuses+=("$2")
    notes+=("$3")
}

# step <name> <command...>: run with output to $OUT/<name>.log, record PASS on exit status 0.
step() {
    local name="$1"
    shift
    local log="$OUT/${name//[:\/]/_}.log"
    local start end rc
    start=$(date +%s)
    echo "== $name: $*" | tee "$log"
    "$@" >>"$log" 2>&1
    rc=$?
    end=$(date +%s)
    if [[ $rc -eq 0 ]]; then
        record "$name" PASS "$((end - start)) s"
    else
        record "$name" FAIL "exit $rc after $((end - start)) s, see $(basename "$log")"
    fi
    return 0
}

# No test may skip: MOE_KERNELS_REQUIRE_GPU=1 makes a missing GPU panic, and this catches any other
# SKIPPED line as well.
run_test_binary() {
    local bin="$1"
    shift
    local log
    log="$(mktemp)"
    MOE_KERNELS_REQUIRE_GPU=1 "$bin" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    if grep -q '^SKIPPED' "$log"; then
        echo "gpu-check: a test skipped although a GPU is required" >&2
        rc=1
    fi
    rm -f "$log"
    return "$rc"
}

if [[ ! -d "$bundle/tests" && -f "$bundle/bundle.tar.xz" ]]; then
    echo "== unpacking gpu-bundle/bundle.tar.xz"
    if command -v xz >/dev/null; then
        xz -dc "$bundle/bundle.tar.xz" | tar xf - -C "$bundle"
    else
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
            "$bundle/bundle.tar.xz" "$bundle"
    fi
fi
if [[ ! -d "$bundle/tests" ]]; then
    record bundle FAIL "no gpu-bundle/tests: run scripts/build-gpu-bundle.sh and carry gpu-bundle/"
else
    record bundle PASS "$(find "$bundle/tests" -type f | wc -l) test binaries"
fi

step nvidia-smi nvidia-smi

tests=()
if [[ -d "$bundle/tests" ]]; then
    while IFS= read -r t; do
        tests+=("$t")
    done < <(find "$bundle/tests" -type f -perm -u+x ! -name '*.so' | sort)
fi

for bin in "${tests[@]}"; do
    step "test:$(basename "$bin")" run_test_binary "$bin"
done

if [[ -x "$bundle/tests/gpu_layer" ]]; then
    step graph run_test_binary "$bundle/tests/gpu_layer" cuda_graph_replay_equals_a_direct_forward --exact
else
    record graph FAIL "no gpu_layer test binary in the bundle"
fi

if [[ -x "$bundle/tests/emulator_compare" && -f "$bundle/tests/libptx_emu.so" ]]; then
    step emulator-compare env OUT="$OUT" "$root/scripts/compare-emulator.sh"
else
    record emulator-compare FAIL "no emulator_compare test or libptx_emu.so in the bundle"
fi

sanitizer="$(command -v compute-sanitizer || true)"
if [[ -z "$sanitizer" ]]; then
    for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer; do
        [[ -x "$c" ]] && sanitizer="$c" && break
    done
fi

# sanitize <tool>: every binary's sanitizer_smoke test under compute-sanitizer --tool <tool>.
sanitize() {
    local tool="$1"
    local rc=0 bin
    for bin in "${tests[@]}"; do
        echo "-- $(basename "$bin")"
        MOE_KERNELS_REQUIRE_GPU=1 "$sanitizer" --tool "$tool" --error-exitcode 99 \
            --target-processes all "$bin" sanitizer_smoke --test-threads=1 || rc=1
    done
    return "$rc"
}

for tool in memcheck racecheck synccheck initcheck; do
    if [[ -z "$sanitizer" ]]; then
        record "$tool" FAIL "compute-sanitizer not found"
    elif [[ ${#tests[@]} -eq 0 ]]; then
        record "$tool" FAIL "no test binaries"
    else
        step "$tool" sanitize "$tool"
    fi
done

# The benchmark. cuBLAS comes from PyTorch's wheels (nvidia-cublas) when no system copy is on the
# library path.
run_bench() {
    local cublas_lib commit
    cublas_lib="$(python3 -c 'import os, nvidia.cublas as c; print(os.path.join(os.path.dirname(c.__file__), "lib"))' 2>/dev/null || true)"
    commit="$(grep -m1 '^commit:' "$bundle/MANIFEST.txt" 2>/dev/null | cut -d' ' -f2-)"
    LD_LIBRARY_PATH="${cublas_lib:+$cublas_lib:}${LD_LIBRARY_PATH:-}" \
        MOE_BENCH_COMMIT="${commit:-unknown}" MOE_BENCH_PYTHON="${MOE_BENCH_PYTHON:-python3}" \
        "$bundle/bin/moe" bench --device cuda --tokens "${BENCH_TOKENS:-1,16,128,1024,4096}" \
        --out "$OUT/bench"
}
if [[ "${BENCH:-1}" == 0 ]]; then
    record bench PASS "skipped (BENCH=0)"
elif [[ -x "$bundle/bin/moe" ]]; then
    step bench run_bench
else
    record bench FAIL "no gpu-bundle/bin/moe"
fi

failed=0
{
    echo "# GPU check"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
    if [[ -f "$bundle/MANIFEST.txt" ]]; then
        echo "- bundle: $(grep -m1 '^commit:' "$bundle/MANIFEST.txt")"
    fi
    echo
    echo "| step | result | note |"
    echo "|---|---|---|"
    for i in "${!names[@]}"; do
        echo "| ${names[$i]} | ${statuses[$i]} | ${notes[$i]} |"
        [[ "${statuses[$i]}" == PASS ]] || failed=1
    done
} >"$OUT/summary.md"

if [[ -f "$OUT/bench/results.md" ]]; then
    echo
    echo "Whole layer, moe-kernels cuda (from $OUT/bench/results.md):"
    grep -E '^\| [^|]+ \| [0-9]+ \| moe-kernels cuda( graph)? \| layer \|' "$OUT/bench/results.md" \
        | cut -d'|' -f2-6,9-11,13
fi
echo
echo "GPU check summary ($OUT/summary.md):"
for i in "${!names[@]}"; do
    printf '  %-24s %-4s  %s\n' "${names[$i]}" "${statuses[$i]}" "${notes[$i]}"
done
if [[ $failed -ne 0 ]]; then
    echo "GPU check FAILED"
    exit 1
fi
echo "GPU check passed"
