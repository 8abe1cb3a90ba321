"""Benchmarks: run with `bash scripts/run-bench.sh`; results go to docs/benchmarks.md."""
