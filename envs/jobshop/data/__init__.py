"""Bundled job-shop benchmark data (OR-Library text files and their bounds)."""
