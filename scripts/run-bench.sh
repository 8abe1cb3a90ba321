#!/usr/bin/env bash
# Run the benchmark suite (bench/): sets up .venv with the bench extra, then
# writes docs/benchmarks.md and docs/benchmarks.png.
#   scripts/run-bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh bench
exec python -m bench.run "$@"
