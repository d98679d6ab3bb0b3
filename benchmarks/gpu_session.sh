#!/usr/bin/env bash
# One call on a lent GPU machine (no network): install the build tools from a wheelhouse carried
# along (see docs/wheels.md, "Offline builds"), build dtda with CUDA, then check and time every
# CUDA and Triton op (benchmarks/gpu_check.py). Usage: bash benchmarks/gpu_session.sh [gpu_check args]
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
python -c "import triton; print('triton', triton.__version__)" || true
if [ -d wheelhouse ]; then
  pip install -q --no-index --find-links wheelhouse scikit-build-core pybind11 scipy-openblas32 cmake ninja packaging pathspec safetensors tqdm
fi
start=$(date +%s)
DTDA_CUDA=ON DTDA_CUDA_ARCHITECTURES=${DTDA_CUDA_ARCHITECTURES:-90} pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -20
echo "build: $(( $(date +%s) - start )) s"
python -m dtda info
python benchmarks/gpu_check.py --no-build "$@"
