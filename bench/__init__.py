"""Benchmarks: each one is a module run as ``python -m bench.NAME``; see bench/README.md."""
