#!/usr/bin/env bash
# Run the benchmark suite (bench/): sets up .venv with the bench extra, then
# writes docs/benchmarks.md (issue 9's Targets table, the peers measured in the
# same sitting, py-spy breakdowns) and docs/benchmarks.png.
#   scripts/run-bench.sh [--quick] [--rounds N] [--no-peers] [--no-profile]
# Load comes from wrk (Debian's package) when installed; as root on Debian it is
# installed here if missing, else bench/loadgen.py (Python) stands in.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh bench
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq wrk >/dev/null 2>&1 || echo "[bench] apt-get install wrk failed; load from bench.loadgen" >&2
fi
exec python -m bench.run "$@"
