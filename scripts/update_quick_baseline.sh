#!/usr/bin/env bash
# Regenerate the committed CPU baseline of grids/quick.yaml:
#   results/baselines/quick-cpu.csv + quick-cpu.json
# Run it on a quiet machine after a change that legitimately moves the numbers
# (a model fix, a new or changed column, a training change), then review
# `git diff results/baselines/` and commit it with the change that caused it.
#
#   scripts/update_quick_baseline.sh            # -> quick-cpu
#   scripts/update_quick_baseline.sh other-name # -> other-name
#   PYTHON=python3 THREADS=2 scripts/update_quick_baseline.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
NAME="${1:-quick-cpu}"
THREADS="${THREADS:-2}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The grid pins torch's intra-op threads (threads: 2); pin the OpenMP/MKL pools
# to the same count so the run is reproducible and its fingerprint stable.
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"

# The run exits non-zero when any cell fails; set -e then stops here, so a
# broken run never becomes the baseline.
"$PYTHON" benchmark.py --grid grids/quick.yaml --out "$tmp/quick.csv" --no-report --no-progress
"$PYTHON" benchmark.py baseline "$tmp/quick.csv" --name "$NAME" --force
# Sanity check: the fresh baseline must pass against the run it came from.
"$PYTHON" benchmark.py compare "$tmp/quick.csv" --baseline "results/baselines/$NAME.csv" >/dev/null
echo "now review: git diff --stat results/baselines/"
