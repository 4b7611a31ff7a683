"""Benchmarks run by `vist-rt bench ...` (figures, not tests)."""
