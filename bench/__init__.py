"""Benchmarks for leadflow's write path against the local stack's moto server.

Not tests: nothing here is collected by pytest. Run ``python -m bench.ingest`` from
the repository root (``make bench``).
"""

# The lead-id key the benchmarks derive ids with, and give the stacks they start, so the
# ids they compute are the ones the stack derives.
BENCH_LEAD_ID_KEY = "bench-lead-id-key-0123456789abcdef0123456789"


def bench_lead_ids():
    from leadflow.domain.lead import LeadIds

    return LeadIds(BENCH_LEAD_ID_KEY.encode())
