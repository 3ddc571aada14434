"""`GET /v1/leads` without `email`: a page of leads from an index, never a table scan.

A query reads one index (search reads the five search indexes one after the other), asks
it for exactly as many keys as the page still lacks, reads those leads in one
`BatchGetItem`, and keeps the ones every filter accepts. Because every key asked for is
either shown or filtered out, the index's own last key is where the next page starts: no
lead is skipped or shown twice, and a search shows a lead found through two of its fields
only under the first (its email before its name, its name before its company…).
A request makes at most ``MAX_QUERIES`` index reads: a page of a very selective
combination of filters can come back short, with ``next_cursor`` to read on.
"""

from __future__ import annotations

from typing import Any

from leadflow.domain.listing import ListQuery, decode_cursor, encode_cursor, fingerprint, matched_field, matches, plan
from leadflow.usecases.leads import LeadService

MAX_QUERIES = 10


class LeadLister:
    def __init__(self, service: LeadService):
        self.service = service

    def page(self, query: ListQuery, cursor: str | None = None) -> dict[str, Any]:
        steps = plan(query)
        at, start = 0, None
        if cursor:
            position = decode_cursor(cursor, query)
            at = next((n for n, s in enumerate(steps) if s.index == position["i"]), None)
            if at is None:
                from leadflow.domain.errors import InvalidInput

                raise InvalidInput("cursor: not a cursor of this list", field="cursor")
            start = position["k"]
        store, items, queries = self.service.store, [], 0
        while at < len(steps) and len(items) < query.limit and queries < MAX_QUERIES:
            step = steps[at]
            ids, start = store.index_page(step.index, step.partition, prefix=step.prefix,
                                          ascending=query.sort == "oldest", start=start,
                                          limit=query.limit - len(items))
            queries += 1
            leads = store.get_many(ids) if ids else {}
            for lead_id in ids:
                lead = leads.get(lead_id)
                if lead is None or not matches(lead, query):
                    continue
                if step.field and matched_field(lead, query.q or "") != step.field:
                    continue  # shown under an earlier search field
                items.append(self.service.summary(lead))
            if start is None:
                at += 1
        more = at < len(steps)
        next_cursor = encode_cursor({"f": fingerprint(query), "i": steps[at].index, "k": start}) if more else None
        return {"items": items, "next_cursor": next_cursor}
