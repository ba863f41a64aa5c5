"""Performance benchmark of the CRS CDS Hooks service (issue 5); run ``python bench/run_bench.py``."""
