#!/usr/bin/env bash
# Install the PyTorch peers' dependencies for `moe bench` (scripts/bench_torch.py) into the project-local,
# git-ignored folder .toolchain/bench-venv, which `moe bench` finds on its own.
#
# Usage: scripts/install-bench-deps.sh
#
# PyPI's Linux torch wheel brings its CUDA libraries with it (about 7 GB installed); it runs on the CPU
# too. Idempotent: a second run only checks the version. The last line of stdout is
# `MOE_BENCH_PYTHON=<path>`.
set -euo pipefail

TORCH_PIN="torch==2.9.1"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.toolchain/bench-venv"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${TORCH_PIN#torch==}')" 2>/dev/null; then
    echo "PyTorch already installed in $venv" >&2
else
    mkdir -p "$root/.toolchain"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    echo "installing $TORCH_PIN into $venv (several GB)" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input "$TORCH_PIN" numpy >&2
fi
"$venv/bin/python" -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())" >&2
echo "MOE_BENCH_PYTHON=$venv/bin/python"
