#!/usr/bin/env bash
# Full-size GPU check of the paper network (issue 19): training s/step + CUDA peak for fp32, bf16 and
# bf16 + checkpointing, and s/volume for DDIM-25 and DPM-Solver++-20, into one CSV.
#   bash benchmarks/gpu_check.sh            # on a machine with one GPU (< 8 min)
#   bash benchmarks/gpu_check.sh --dry      # on a CPU in seconds: checks that the script and its stages run
# Uses .venv/bin/python when present (make install), else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" benchmarks/gpu_check.py "$@"
