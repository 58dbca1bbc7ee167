#!/usr/bin/env bash
# GPU smoke run: CUDA-event timing, memory columns (torch + NVML), bf16 and
# channels_last on a small grid, plus the environment NVML reports. Under 5
# minutes on one modern GPU.
#
#   scripts/gpu_smoke.sh OUTDIR        # writes OUTDIR/<device>.csv, .json, gpu-smoke.log,
#                                      # OUTDIR/profile-{resnet50,resnext50_32x4d}-<device>.profile.csv
#
# Commit the CSV and its sidecar under results/gpu/ afterwards.
set -euo pipefail
out=${1:?usage: scripts/gpu_smoke.sh OUTDIR}
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$out"
log="$out/gpu-smoke.log"
slug=$($PY - <<'PY'
import re, torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no-gpu"
print(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
PY
)
{
  echo "== $(date -u +%FT%TZ) gpu smoke on $slug"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  timeout 280 $PY benchmark.py --grid grids/gpu-smoke.yaml --device cuda --out "$out/$slug.csv" --no-progress --no-report
  echo "== exit $?"
  # where the time goes: ResNet-50 vs ResNeXt-50 at equal-ish MACs, bf16 + channels_last (docs/profile.md)
  for model in resnet50 resnext50_32x4d; do
    rc=0
    timeout 150 $PY benchmark.py profile "$model" --batch-size 64 --device cuda --precision bf16 \
      --memory-format channels_last --out "$out/profile-$model-$slug.profile.csv" --force || rc=$?
    echo "== profile $model exit $rc"
  done
} 2>&1 | tee "$log"
