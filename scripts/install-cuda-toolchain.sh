#!/usr/bin/env bash
# Install a pinned CUDA 13.0 nvcc from PyPI into the project-local, git-ignored folder .toolchain/.
#
# Usage: scripts/install-cuda-toolchain.sh [--with-cuobjdump]
#
# The last line of stdout is `NVCC=<absolute path>`; build with it:
#   NVCC=<that path> cargo build
# (build.rs also finds .toolchain/ on its own when NVCC is unset and no other nvcc exists.)
#
# Idempotent: when the pinned versions are already installed it only prints the path.
# Needs python3 with the venv module and access to PyPI; no root, no system CUDA.
#
# The pins matter: an unpinned nvidia-nvvm resolves to a newer release whose NVVM emits PTX that the
# 13.0 ptxas rejects, so every component of the compiler is pinned to the same 13.0 release.
set -euo pipefail

NVCC_PINS=(
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-nvvm==13.0.88"
    "nvidia-cuda-crt==13.0.88"
    "nvidia-cuda-runtime==13.0.96"
    "nvidia-cuda-cccl==13.0.85"
)
# cuobjdump/nvdisasm were first published on PyPI with 13.2; they only read fatbins, so a newer
# release than the compiler is fine.
CUOBJDUMP_PINS=(
    "nvidia-cuda-cuobjdump==13.2.51"
    "nvidia-cuda-nvdisasm==13.2.51"
)

with_cuobjdump=0
for arg in "$@"; do
    case "$arg" in
        --with-cuobjdump) with_cuobjdump=1 ;;
        -h | --help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install-cuda-toolchain.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.toolchain/venv"
python="${PYTHON:-python3}"

pins=("${NVCC_PINS[@]}")
if [ "$with_cuobjdump" = 1 ]; then
    pins+=("${CUOBJDUMP_PINS[@]}")
fi

# Print the installed version of a distribution, or nothing when it is absent.
installed_version() {
    "$venv/bin/python" - "$1" <<'EOF'
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

# True when every pin is installed at exactly its pinned version.
all_pins_installed() {
    [ -x "$venv/bin/python" ] || return 1
    local pin
    for pin in "${pins[@]}"; do
        [ "$(installed_version "${pin%%==*}")" = "${pin##*==}" ] || return 1
    done
}

if all_pins_installed; then
    echo "CUDA toolchain already installed in $venv" >&2
else
    if [ ! -x "$venv/bin/python" ]; then
        if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
            echo "install-cuda-toolchain.sh: $python cannot create virtual environments with pip" \
                "(on Debian/Ubuntu: apt-get install python3-venv)" >&2
            exit 1
        fi
        echo "creating virtual environment $venv" >&2
        mkdir -p "$root/.toolchain"
        "$python" -m venv "$venv"
    fi
    echo "installing ${pins[*]}" >&2
    # pip's progress goes to stderr so that stdout stays the one NVCC= line.
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input "${pins[@]}" >&2
fi

# The wheels lay nvcc out as site-packages/nvidia/cu13/bin/nvcc; the python version in the path varies.
nvcc="$(find "$venv" -path '*/nvidia/cu13/bin/nvcc' -type f | sort | head -n 1)"
if [ -z "$nvcc" ]; then
    echo "install-cuda-toolchain.sh: nvcc not found under $venv after installation" >&2
    exit 1
fi
"$nvcc" --version | tail -n 2 >&2
if [ "$with_cuobjdump" = 1 ]; then
    cuobjdump="$(find "$venv" -path '*/nvidia/cu13/bin/cuobjdump' -type f | sort | head -n 1)"
    echo "CUOBJDUMP=$cuobjdump"
fi
echo "NVCC=$nvcc"
