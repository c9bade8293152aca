"""Benchmarks: programs, not tests. See docs/benchmarks.md and `python -m bench.run --help`."""
