#!/usr/bin/env bash
# The GPU machine's Python, reproduced on a CPU: a venv with torch 2.11.0 and torchvision 0.26.0
# (the CUDA 13 builds that machine runs), numpy, pandas, scipy, matplotlib, pyyaml, tqdm,
# nvidia-ml-py, jinja2, pillow and pytest, and NO fvcore and NO Ray. The harness itself is not
# installed: it runs from the tree, as it does there. `make test-min` runs the quick grid and the
# timing, profile and GPU-logic tests in it (docs/gpu.md).
#
#   scripts/minimal_env.sh [VENV]     # default .venv-min (or $VENV_MIN); Python 3.12 where there is one
#
# Lightest install that really imports: the PyPI torch wheel is a CUDA build whose shared objects
# link the CUDA libraries at load time (libtorch_cuda.so NEEDs cudart, cublas, cudnn, cufft, cufile,
# curand, cusparse, cusparseLt, nccl, nvshmem; libtorch_cpu.so cupti; cusparse needs nvJitLink), so
# torch and torchvision go in with --no-deps and then only those libraries, at torch 2.11.0's own
# pins. Left out: triton, cusolver, nvrtc, nvtx and cuda-bindings, which only a GPU or
# torch.compile's GPU backend loads. Measured here, cold (empty pip cache): torch's 531 MB wheel
# downloads in 20 s; the whole install takes about 3 minutes and 4 GB. A venv whose stamp matches
# this script is reused as it is (well under a second), so CI can keep it between runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${1:-${VENV_MIN:-.venv-min}}"
STAMP="$VENV/.installed-min-$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
if [ -f "$STAMP" ]; then
    echo "$VENV/bin/python"
    exit 0
fi

# torch 2.11.0's own pins of the CUDA libraries it links (its METADATA), less those a CPU never loads.
CUDA_LIBS=(
    "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusparse,nvjitlink]==13.0.2"
    "nvidia-cudnn-cu13==9.19.0.56" "nvidia-cusparselt-cu13==0.8.0" "nvidia-nccl-cu13==2.28.9"
    "nvidia-nvshmem-cu13==3.4.5"
)
# torch's pure-Python needs (its METADATA), then what the harness and its tests import.
PY_DEPS=(
    filelock "typing-extensions>=4.10.0" "setuptools<82" "sympy>=1.13.3" "networkx>=2.5.1" jinja2 "fsspec>=0.8.5"
    numpy pillow pandas scipy matplotlib pyyaml tqdm nvidia-ml-py pytest
)

pick_python() {
    local c
    local pyenv_root
    pyenv_root="$(pyenv root 2>/dev/null || true)"
    for c in "${PYTHON_MIN:-}" python3.12 $(ls -d "${pyenv_root:-/nonexistent}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -1) python3; do
        [ -n "$c" ] || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))' 2>/dev/null; then
            echo "$c"
            return
        fi
    done
    echo "minimal_env.sh: no Python >= 3.10 found (set PYTHON_MIN)" >&2
    exit 2
}

start=$(date +%s)
PY_BASE="$(pick_python)"
echo "minimal_env.sh: building $VENV with $("$PY_BASE" --version 2>&1) ($PY_BASE)" >&2
[ -x "$VENV/bin/python" ] || "$PY_BASE" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --no-deps torch==2.11.0 torchvision==0.26.0
"${PIP[@]}" "${CUDA_LIBS[@]}"
"${PIP[@]}" "${PY_DEPS[@]}"

# Proof it is the environment it claims to be: the versions, a matmul and a conv on the CPU, and
# neither fvcore nor Ray importable (a pip resolver that pulled one in would hide what this tests).
"$VENV/bin/python" - <<'PY'
import importlib.util
import torch
import torchvision
assert torch.__version__.split("+")[0] == "2.11.0", torch.__version__
assert torchvision.__version__.split("+")[0] == "0.26.0", torchvision.__version__
assert (torch.ones(2) @ torch.ones(2)).item() == 2.0
assert torch.nn.Conv2d(3, 4, 3)(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 6, 6)
for absent in ("fvcore", "ray"):
    assert importlib.util.find_spec(absent) is None, f"{absent} is installed; the minimal env must not have it"
PY
touch "$STAMP"
echo "minimal_env.sh: ready in $(( $(date +%s) - start )) s" >&2
echo "$VENV/bin/python"
