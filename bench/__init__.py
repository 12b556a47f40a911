"""Benchmarks: each `bench_*.py` measures its baseline in the same run and prints the ratio."""
