"""Re-scoring every lead: the hourly decay run, and the run a publish or rollback starts.

A run scans the table in parallel segments (one per ~50,000 items, 1 to 64, from the
table's item count). Each segment is an item of its own with a cursor, counts and a
lease: an invocation claims up to `workers` free segments and works them on threads,
bringing each lead to the rules through `LeadService.refresh_lead` (written only when
its figures, stage or signals changed, conditionally on the version read: a concurrent
event is never overwritten). After every page it checkpoints the segment. It stops
`margin_s` before its deadline, releasing its segments, and whichever invocation comes
next (the every-minute `rules` job) takes them on where they stopped; a crashed
holder's segments are free again once their lease runs out. Several invocations work
one run side by side. The invocation that finishes the last segment closes the run.
"""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Protocol

from leadflow.domain.errors import LeadflowError
from leadflow.domain.rules import Rules

DONE = "done"
RUNNING = "running"
ITEMS_PER_SEGMENT = 50_000
MAX_SEGMENTS = 64


def segments_for(item_count: int) -> int:
    return max(1, min(MAX_SEGMENTS, -(-item_count // ITEMS_PER_SEGMENT)))


class RunStore(Protocol):
    def load_run(self, name: str) -> dict[str, Any] | None: ...

    def begin_run(self, name: str, state: dict[str, Any], *, replacing: str | None) -> bool: ...

    def update_run(self, name: str, state: dict[str, Any], *, expect_status: str, expect_id: str,
                   expect_summary: str | None = None) -> bool: ...

    def add_segments(self, name: str, run_id: str, numbers: list[int]) -> None: ...

    def segments(self, name: str, run_id: str) -> list[dict[str, Any]]: ...

    def claim_segment(self, name: str, run_id: str, n: int, *, owner: str, now: float,
                      lease_until: float) -> dict[str, Any] | None: ...

    def checkpoint(self, name: str, run_id: str, n: int, *, owner: str, cursor: Any, counts: dict[str, Any],
                   done: bool, lease_until: float) -> bool: ...


class Rescoring:
    def __init__(self, service: Any, runs: RunStore, *, workers: int = 4, lease_s: float = 120.0,
                 margin_s: float = 30.0, wall: Callable[[], float] = time.time,
                 clock: Callable[[], datetime] | None = None, page_size: int | None = None):
        self.service = service
        self.page_size = page_size  # items per scan page (None: DynamoDB's 1 MB pages)
        self.runs = runs
        self.workers = workers
        self.lease_s = lease_s
        self.margin_s = margin_s
        self.wall = wall
        self.clock = clock or service.clock
        self.owner = uuid.uuid4().hex  # this invocation (environment), as segment leases name it

    def start(self, name: str, rules: Rules, *, seq: int | None = None, announce: bool = True,
              replacing: str | None = None) -> dict[str, Any] | None:
        """A new run of every lead under `rules`, unless one is running (and is not the
        run `replacing` names). None if it is not started."""
        now = self.clock()
        total = segments_for(self.service.store.item_count())
        state = {"name": name, "id": f"{name}-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", "seq": seq,
                 "version": rules.version, "announce": announce, "segments": total, "status": RUNNING,
                 "started_at": now.isoformat(), "finished_at": None, "summary": None}
        if not self.runs.begin_run(name, state, replacing=replacing):
            return None
        self.runs.add_segments(name, state["id"], list(range(total)))
        return state

    def work(self, name: str, rules: Rules, remaining: Callable[[], float],
             still_current: Callable[[], bool] = lambda: True) -> dict[str, Any] | None:
        """Claim free segments of the running run `name` and work them until they are done,
        until `remaining()` falls under the margin, or until `still_current()` says the
        rules or the run changed under it. Returns the run's totals, with `closed: True`
        for the invocation that finished it; None when there is no running run."""
        header = self.runs.load_run(name)
        if header is None or header.get("status") != RUNNING:
            return None
        run_id = header["id"]
        segs = self.runs.segments(name, run_id)
        missing = sorted(set(range(header["segments"])) - {s["n"] for s in segs})
        if missing:  # a crash between the header and its segments: add what is missing
            self.runs.add_segments(name, run_id, missing)
            segs = self.runs.segments(name, run_id)
        announce = bool(header.get("announce", True))
        free = [s for s in segs if not s["done"] and s["lease_until"] < self.wall()]
        random.shuffle(free)  # invocations starting together try different segments first
        claimed: list[dict[str, Any]] = []
        for seg in free:
            if len(claimed) == self.workers or remaining() <= self.margin_s:
                break
            got = self.runs.claim_segment(name, run_id, seg["n"], owner=self.owner, now=self.wall(),
                                          lease_until=self.wall() + self.lease_s)
            if got is not None:
                claimed.append(got)

        def same_run() -> bool:
            current = self.runs.load_run(name)
            return current is not None and current["id"] == run_id and current.get("status") == RUNNING

        def segment(seg: dict[str, Any]) -> None:
            n, cursor, counts = seg["n"], seg["cursor"], {**_zero(), **seg["counts"]}
            done = False
            while not done:
                if remaining() <= self.margin_s or not still_current() or not same_run():
                    # Out of time, or the run changed: let the next invocation go on at once.
                    self.runs.checkpoint(name, run_id, n, owner=self.owner, cursor=cursor, counts=counts,
                                         done=False, lease_until=0)
                    return
                leads, last = self.service.store.scan_page(n, header["segments"], cursor, self.page_size)
                for lead in leads:
                    counts["leads"] += 1
                    try:
                        result = self.service.refresh_lead(lead, rules, announce=announce)
                    except LeadflowError as exc:  # one lead that cannot be brought over never stalls a run
                        counts["failed"] += 1
                        from leadflow.observability import logger

                        logger.error("rescore.lead_failed", extra={"lead_id": lead.lead_id, "error": exc.code})
                        continue
                    counts["written"] += int(result.written)
                    counts["logs_read"] += result.logs_read
                    for move in result.moves:
                        pair = f"{move.from_stage or 'new'}->{move.to_stage}"
                        counts["moves"][pair] = counts["moves"].get(pair, 0) + 1
                cursor, done = last, last is None
                if not self.runs.checkpoint(name, run_id, n, owner=self.owner, cursor=cursor, counts=counts,
                                            done=done, lease_until=0 if done else self.wall() + self.lease_s):
                    return  # our lease ran out and someone else took the segment over

        if claimed:
            errors: list[BaseException] = []
            with ThreadPoolExecutor(max_workers=len(claimed)) as pool:
                for future in [pool.submit(segment, seg) for seg in claimed]:
                    try:
                        future.result()
                    except BaseException as exc:  # noqa: BLE001 - raised once the others stopped
                        errors.append(exc)
            if errors:
                raise errors[0]
        segs = self.runs.segments(name, run_id)
        result = totals(header, segs)
        if len(segs) >= header["segments"] and all(s["done"] for s in segs):
            closed = {**header, "status": DONE, "finished_at": self.clock().isoformat(),
                      "summary": header.get("summary") or "pending"}
            if self.runs.update_run(name, closed, expect_status=RUNNING, expect_id=run_id):
                return {**totals(closed, segs), "closed": True}
            return {**result, "status": DONE}
        return result


def totals(header: dict[str, Any], segs: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's counts summed over its segments."""
    out = _zero()
    for seg in segs:
        for key, value in seg.get("counts", {}).items():
            if key == "moves":
                for pair, n in value.items():
                    out["moves"][pair] = out["moves"].get(pair, 0) + n
            elif key in out:
                out[key] += value
    return {**out, "segments": header.get("segments"), "segments_done": sum(1 for s in segs if s["done"]),
            "status": header.get("status"), "version": header.get("version"), "seq": header.get("seq"),
            "started_at": header.get("started_at"), "finished_at": header.get("finished_at"),
            "announce": header.get("announce")}


def _zero() -> dict[str, Any]:
    return {"leads": 0, "written": 0, "logs_read": 0, "failed": 0, "moves": {}}


# -- the jobs ----------------------------------------------------------------------------


def scheduled(rescoring: Rescoring, rules_in_force: Callable[[], Rules], remaining: Callable[[], float]) -> dict[str, Any]:
    """The hourly run: start a pass unless one is still running, and work on it (its moves
    are recorded and mirrored to the CRM, never alerted one by one). The
    every-minute `rules` job helps with any segments left, so a pass over a large table
    does not wait for the next hour. It pauses if a publish changes the rules in force
    (the publish's own run re-scores every lead)."""
    rules = rules_in_force()
    header = rescoring.runs.load_run("rescore")
    if header is None or header.get("status") == DONE:
        # Decay never moves a lead forward: a move this pass makes comes from a rules
        # change (a redeployed file), which, like an unannounced publish, alerts nobody.
        rescoring.start("rescore", rules, announce=False)
    result = rescoring.work("rescore", rules, remaining, still_current=lambda: rules_in_force() is rules)
    return result or {"skipped": "no running re-score"}


def follow_published(rescoring: Rescoring, in_force: Any, versions: Any, announcer: Any,
                     remaining: Callable[[], float], *, delay_s: float, log: Callable[[str, dict], None]) -> dict[str, Any]:
    """Every minute: bring the leads to the version in force once every function runs it
    (`delay_s` after its publish: the rules' refresh interval), work on that run's free
    segments (resuming what an earlier invocation left), and when it is done record what
    it did on the version and send the one summary its quiet moves call for. Time left
    over goes to the hourly pass's free segments."""
    from leadflow.domain.errors import RulesError

    out: dict[str, Any] = {}
    head = versions.head()
    if head is not None:
        seq, version = head
        header = rescoring.runs.load_run("rules")
        if header is None or header.get("seq") != seq:
            entry = versions.get(seq, text=False)
            if rescoring.wall() < datetime.fromisoformat(entry.at).timestamp() + delay_s:
                return {"waiting": f"version {version} (#{seq}) is re-scored once every function runs it"}
            try:
                rules = in_force.load(seq)
            except RulesError as exc:
                log("rules.invalid", {"seq": seq, "version": version, "error": exc.message[:500]})
                return {"error": f"version #{seq} does not load"}
            replacing = header["id"] if header is not None and header.get("status") != DONE else None
            rescoring.start("rules", rules, seq=seq, announce=entry.announce, replacing=replacing)
            header = rescoring.runs.load_run("rules")
        if header is not None and header.get("status") != DONE:
            result = rescoring.work("rules", in_force.load(seq), remaining)
            out = result or {}
            header = rescoring.runs.load_run("rules")
        if header is not None and header.get("status") == DONE and header.get("summary") in ("pending", "failed"):
            out = _finish(rescoring, versions, announcer, header, log)
        elif not out and header is not None:
            out = totals(header, rescoring.runs.segments("rules", header["id"]))
    if remaining() > rescoring.margin_s:
        rescore = rescoring.runs.load_run("rescore")
        if rescore is not None and rescore.get("status") == RUNNING:
            helped = rescoring.work("rescore", in_force.rules(), remaining,
                                    still_current=lambda: in_force.rules().version == rescore["version"])
            if helped:
                out = {**out, "rescore": helped} if out else {"rescore": helped}
    return out or {"published": None}


def _finish(rescoring: Rescoring, versions: Any, announcer: Any, header: dict[str, Any],
            log: Callable[[str, dict], None]) -> dict[str, Any]:
    """Record the run's result on its version, then send the summary once: the header
    moves from pending to sending conditionally, so one invocation sends it."""
    runs = rescoring.runs
    result = totals(header, runs.segments("rules", header["id"]))
    seq = header["seq"]
    versions.record_result(seq, result)
    alerts = {pair: n for pair, n in result["moves"].items() if pair.endswith(("->mql", "->sql"))}
    was = header.get("summary") or ""
    if header.get("announce") or not sum(alerts.values()) or announcer is None:
        runs.update_run("rules", {**header, "summary": "none"}, expect_status=DONE, expect_id=header["id"],
                        expect_summary=was)
        return {**result, "summary": "none"}
    if not runs.update_run("rules", {**header, "summary": "sending"}, expect_status=DONE, expect_id=header["id"],
                           expect_summary=was):
        return result  # another invocation is sending it
    entry = versions.get(seq, text=False)
    try:
        announcer.rules_summary(version=entry.version, seq=seq, action=entry.action, by=entry.by, moves=alerts,
                                leads=result["leads"], changes=entry.changes)
    except Exception as exc:  # noqa: BLE001 - tried again at the next minute's job
        log("rules.summary_failed", {"seq": seq, "error": str(exc)[:200]})
        runs.update_run("rules", {**header, "summary": "failed"}, expect_status=DONE, expect_id=header["id"],
                        expect_summary="sending")
        return {**result, "summary": "failed"}
    runs.update_run("rules", {**header, "summary": "sent"}, expect_status=DONE, expect_id=header["id"],
                    expect_summary="sending")
    return {**result, "summary": "sent"}
