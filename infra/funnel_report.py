"""`leadflow funnel`: the funnel from history in the terminal, as CSV, or rebuilt.

It reads `GET /v1/funnel` (by cut and cohort) from the stack it targets and prints
readable tables: conversion per value of the cut, the cohorts of the whole funnel,
velocity, and why leads were rejected or lost. `--rebuild` recounts every lead into a
new generation (the table, with your credentials or the local endpoint).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

STEPS = (("lead_to_mql", "lead→MQL"), ("mql_to_sql", "MQL→SQL"), ("sql_to_opportunity", "SQL→opp"),
         ("opportunity_to_customer", "opp→won"), ("mql_to_customer", "MQL→won"))
REACHED = (("lead", "leads"), ("mql", "MQL"), ("sql", "SQL"), ("opportunity", "opp"), ("customer", "won"))


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _days(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("median_days") is None:
        return "–"
    return f"{figure['median_days']:g} / {figure['p90_days']:g}"


def fetch(base: str, query: dict[str, str], api_key: str | None) -> tuple[int, bytes, str]:
    url = base.rstrip("/") + "/v1/funnel" + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {"user-agent": "leadflow-cli"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as answer:
            return answer.status, answer.read(), answer.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), error.headers.get("content-type", "")


def render(answer: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    by, total = answer.get("by"), answer["total"]
    title = f"Funnel by {by}" if by else "Funnel"
    span = " · ".join(x for x in (f"cohorts by {answer['cohort']}", answer.get("since") and f"from {answer['since']}",
                                   answer.get("until") and f"before {answer['until']}") if x)
    rows = [*(answer.get("groups") or []), {"value": "all", **total}] if by else [{"value": "all", **total}]
    table = Table(title=f"{title} ({span})", title_justify="left")
    table.add_column(by or "", overflow="fold")
    for _, label in REACHED:
        table.add_column(label, justify="right")
    for _, label in STEPS:
        table.add_column(label, justify="right")
    table.add_column("days to SQL (median / p90)", justify="right")
    table.add_column("days to won", justify="right")
    for row in rows:
        table.add_row(str(row["value"]), *(f"{row['reached'][s]:,}" for s, _ in REACHED),
                      *(_share(row["conversion"][k]) for k, _ in STEPS),
                      _days(row["velocity"]["days_to_sql"]), _days(row["velocity"]["days_to_won"]),
                      end_section=row is rows[-2] if len(rows) > 1 else False)
    console.print(table)

    cohorts = Table(title="Cohorts (the period a lead entered its first stage)", title_justify="left")
    cohorts.add_column("cohort")
    cohorts.add_column("leads", justify="right")
    for _, label in REACHED[1:]:
        cohorts.add_column(label, justify="right")
    for key, label in STEPS:
        cohorts.add_column(label, justify="right")
    for row in total.get("cohorts", []):
        cohorts.add_row(row["period"], f"{row['leads']:,}", *(f"{row['reached'][s]:,}" for s, _ in REACHED[1:]),
                        *(_share(row["conversion"][k]) for k, _ in STEPS))
    console.print(cohorts)

    velocity = Table(title="Velocity (all leads in these cohorts)", title_justify="left")
    for name, justify in (("", "left"), ("leads", "right"), ("median", "right"), ("p90", "right")):
        velocity.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name, figure in total["velocity"].items():
        if name == "first_touch":
            unit, median, p90 = "", figure.get("median_seconds"), figure.get("p90_seconds")
            label = "first touch after SQL"
            shown = [_seconds(median), _seconds(p90)]
        else:
            median, p90 = figure.get("median_days"), figure.get("p90_days")
            label = name.replace("_", " ")
            unit = " d"
            shown = ["–" if median is None else f"{median:g}{unit}", "–" if p90 is None else f"{p90:g}{unit}"]
        velocity.add_row(label, f"{figure['leads']:,}", *shown)
    console.print(velocity)

    for key, label in (("rejection_reasons", "Why sales rejected leads"), ("loss_reasons", "Why deals were lost")):
        reasons = total.get(key) or {}
        if reasons:
            table = Table(title=label, title_justify="left")
            table.add_column("reason", overflow="fold")
            table.add_column("leads", justify="right")
            for reason, count in list(reasons.items())[:15]:
                table.add_row(reason, f"{count:,}")
            console.print(table)


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 3600:
        return f"{value / 60:g} min"
    if value < 172800:
        return f"{value / 3600:g} h"
    return f"{value / 86400:g} d"


def funnel_command(args: Any) -> int:
    from rich.console import Console

    from leadflow_infra.target import NoTarget, resolve

    try:
        target = resolve(args, "funnel")
        if args.rebuild:
            return rebuild(target, Console(stderr=True))
        base = target.need_api("funnel")
    except NoTarget as exc:
        print(str(exc), file=sys.stderr)
        return 2
    query = {k: v for k, v in (("by", args.by), ("cohort", args.cohort or "month"), ("since", args.since),
                               ("until", args.until)) if v}
    if args.csv:
        query["format"] = "csv"
    api_key = args.api_key or os.environ.get("LEADFLOW_API_KEY") or None
    status, body, _ = fetch(base, query, api_key)
    if status != 200:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = body.decode("utf-8", "replace")[:300]
        print(f"leadflow funnel: {status}: {message}", file=sys.stderr)
        return 1
    if args.csv:
        if args.csv == "-":
            sys.stdout.write(body.decode("utf-8"))
        else:
            with open(args.csv, "wb") as handle:
                handle.write(body)
            print(f"wrote {args.csv}", file=sys.stderr)
        return 0
    answer = json.loads(body)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        render(answer, Console())
    return 0


def rebuild(target: Any, console: Any) -> int:
    from leadflow.adapters.dynamodb.funnel_store import DynamoFunnelStore
    from leadflow.adapters.dynamodb.store import DynamoLeadStore
    from leadflow.usecases.funnel import FunnelKeeper

    table = target.need_table("funnel --rebuild")
    client = target.aws("dynamodb")
    keeper = FunnelKeeper(DynamoFunnelStore(table, client=client))
    with console.status("counting leads…") as status:
        result = keeper.rebuild(DynamoLeadStore(table, client=client).scan_leads(consistent=True),
                                progress=lambda n: status.update(f"counting leads… {n:,}"))
    console.print(f"funnel rebuilt from {result['leads']:,} leads: generation {result['generation']} in force, "
                  f"{result['dropped_items']:,} items of the old one deleted"
                  + (f"; {result['failed']} leads could not be counted (changing under the rebuild): run it again"
                     if result["failed"] else ""))
    return 1 if result["failed"] else 0
