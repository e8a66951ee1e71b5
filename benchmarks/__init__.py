"""Speed and quality measurements, run as `python -m benchmarks.NAME` (never part of tests)."""
