"""Benchmarks (not tests): `python -m bench.ingest`, `python -m bench.api`; see RESULTS.md."""
