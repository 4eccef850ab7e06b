"""Benchmarks run from the ``kpr`` command line."""
