"""Benchmarks and load scripts; run them as `python bench/<name>.py --help`."""
