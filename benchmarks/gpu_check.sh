#!/usr/bin/env bash
# On a machine with a GPU, in one call: build fastflow (CUDA kernels for the GPU present),
# run the whole test suite including the CUDA tests, and run the benchmarks (the runner
# in its full configuration, then the quick cases as pytest-benchmark tests;
# FASTFLOW_BENCH_FULL=1 makes those the full ones, a much longer run).
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
MAX_JOBS="${MAX_JOBS:-8}" pip install --no-deps --no-build-isolation -e . 2>&1 | tail -n 2
python -c "import fastflow; print(fastflow.info())"
python -m pytest tests -q -x -p no:cacheprovider -W ignore::DeprecationWarning 2>&1 | tail -n 25
python -m fastflow.bench --full || echo "fastflow.bench: some providers FAILED their check (see the table)"
python -m pytest benchmarks --benchmark-only -q -p no:cacheprovider --benchmark-columns=median,iqr --benchmark-sort=name 2>&1 | tail -n 120
