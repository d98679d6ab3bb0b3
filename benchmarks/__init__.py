"""Benchmarks of dtda (not tests): ``python -m benchmarks.ops`` times every op implementation."""
