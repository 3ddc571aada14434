"""Benchmarks for leadflow's write path against the local stack's moto server.

Not tests: nothing here is collected by pytest. Run ``python -m bench.ingest`` from
the repository root (``make bench``).
"""
