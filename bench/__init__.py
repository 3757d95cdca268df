"""Benchmarks and chaos runs (run by hand: python -m bench.chaos)."""
