"""Benchmarks for `make bench` (`python -m bench`): ratios measured in one run, in bench/results.md."""
