"""Benchmarks of readside: ``python -m bench``."""
