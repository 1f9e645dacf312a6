"""pytest-benchmark micro benchmarks (run by `python -m bench` with --benchmark-only)."""
