"""Benchmarks: measured speed and request counts, kept next to the code (never timed assertions in tests)."""
