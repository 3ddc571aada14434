"""Re-scoring every lead: the hourly decay run, and the run a publish or rollback starts.

A run scans the table in parallel segments (one per ~50,000 items, 1 to 64, from the
table's item count), several segments at a time on threads, and brings each lead to
the rules through `LeadService.refresh_lead`: written only when its figures or stage
changed, conditionally on the version read. After every page it checkpoints the
segment's cursor and counts in the run's item, so an invocation that runs out of time
stops cleanly (`margin_s` before its deadline) and the next one resumes where it
stopped. One invocation holds a run at a time (a token, and a lease that a crashed
holder's successor waits out); a newer publish replaces an unfinished run, and the
replaced holder stops at its next checkpoint.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Protocol

from leadflow.domain.rules import Rules

DONE = "done"
ITEMS_PER_SEGMENT = 50_000
MAX_SEGMENTS = 64


def segments_for(item_count: int) -> int:
    return max(1, min(MAX_SEGMENTS, -(-item_count // ITEMS_PER_SEGMENT)))


class RunStore(Protocol):
    def load_run(self, name: str) -> dict[str, Any] | None: ...

    def save_run(self, name: str, state: dict[str, Any], *, expect_token: str | None, token: str) -> bool: ...

    def run_token(self, name: str) -> str | None: ...


class Lost(Exception):
    """Another invocation took the run over, or a newer run replaced it."""


class Rescoring:
    def __init__(self, service: Any, runs: RunStore, *, workers: int = 4, lease_s: float = 180.0,
                 margin_s: float = 30.0, wall: Callable[[], float] = time.time,
                 clock: Callable[[], datetime] | None = None):
        self.service = service
        self.runs = runs
        self.workers = workers
        self.lease_s = lease_s
        self.margin_s = margin_s
        self.wall = wall
        self.clock = clock or service.clock

    # -- starting and taking over -------------------------------------------------------

    def start(self, name: str, rules: Rules, *, seq: int | None = None, announce: bool = True,
              replace: bool = False) -> tuple[dict[str, Any], str] | None:
        """A new run of every lead under `rules`. It replaces a finished run; an unfinished
        one only with `replace` (a newer publish). None if someone else got there first."""
        old = self.runs.load_run(name)
        if old is not None and old.get("status") != DONE and not replace:
            return None
        total = segments_for(self.service.store.item_count())
        token = uuid.uuid4().hex
        state = {
            "name": name, "id": f"{name}-{self.clock().strftime('%Y%m%dT%H%M%S')}", "seq": seq,
            "version": rules.version, "announce": announce, "segments": total, "cursors": {},
            "counts": {str(n): _zero() for n in range(total)}, "status": "running",
            "started_at": self.clock().isoformat(), "finished_at": None,
            "lease_until": self.wall() + self.lease_s, "summary": None,
        }
        expect = self.runs.run_token(name) if old is not None else None
        if not self.runs.save_run(name, state, expect_token=expect, token=token):
            return None
        return state, token

    def take_over(self, name: str) -> tuple[dict[str, Any], str] | None:
        """An unfinished run whose holder's lease ran out (it timed out or crashed)."""
        state = self.runs.load_run(name)
        if state is None or state.get("status") == DONE or state.get("lease_until", 0) > self.wall():
            return None
        token = uuid.uuid4().hex
        state["lease_until"] = self.wall() + self.lease_s
        if not self.runs.save_run(name, state, expect_token=self.runs.run_token(name), token=token):
            return None
        return state, token

    # -- the work -------------------------------------------------------------------------

    def work(self, state: dict[str, Any], token: str, rules: Rules, remaining: Callable[[], float],
             still_current: Callable[[], bool] = lambda: True) -> dict[str, Any]:
        """Segments until done, until `remaining()` seconds fall under the margin, or until
        `still_current()` says the rules changed under the run (it pauses; whoever resumes
        it goes on under the rules then in force). Returns the state as saved last
        (status `done` when every segment is)."""
        name = state["name"]
        lock = threading.Lock()
        stop = threading.Event()
        announce = bool(state.get("announce", True))

        def checkpoint(segment: int, cursor: Any, add: dict[str, Any]) -> None:
            with lock:
                if stop.is_set():
                    raise Lost()
                counts = state["counts"][str(segment)]
                for key, value in add.items():
                    if key == "moves":
                        for pair, n in value.items():
                            counts["moves"][pair] = counts["moves"].get(pair, 0) + n
                    else:
                        counts[key] += value
                state["cursors"][str(segment)] = cursor
                state["lease_until"] = self.wall() + self.lease_s
                if not self.runs.save_run(name, state, expect_token=token, token=token):
                    stop.set()
                    raise Lost()

        def segment(n: int) -> None:
            cursor = state["cursors"].get(str(n))
            while cursor != DONE and not stop.is_set() and remaining() > self.margin_s and still_current():
                leads, last = self.service.store.scan_page(n, state["segments"], cursor)
                add: dict[str, Any] = _zero()
                for lead in leads:
                    result = self.service.refresh_lead(lead, rules, announce=announce)
                    add["leads"] += 1
                    add["written"] += int(result.written)
                    add["logs_read"] += result.logs_read
                    for move in result.moves:
                        pair = f"{move.from_stage or 'new'}->{move.to_stage}"
                        add["moves"][pair] = add["moves"].get(pair, 0) + 1
                cursor = last if last else DONE
                checkpoint(n, cursor, add)

        pending = [n for n in range(state["segments"]) if state["cursors"].get(str(n)) != DONE]
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(pending) or 1))) as pool:
            for future in [pool.submit(segment, n) for n in pending]:
                try:
                    future.result()
                except Lost:
                    pass
                except BaseException as exc:  # noqa: BLE001 - reported after the others stop
                    stop.set()
                    errors.append(exc)
        if errors:
            raise errors[0]
        if stop.is_set():
            raise Lost()
        if all(state["cursors"].get(str(n)) == DONE for n in range(state["segments"])):
            state["status"] = DONE
            state["finished_at"] = self.clock().isoformat()
            state["lease_until"] = 0
            if not self.runs.save_run(name, state, expect_token=token, token=token):
                raise Lost()
        else:
            state["lease_until"] = 0  # out of time: the next invocation resumes at once
            self.runs.save_run(name, state, expect_token=token, token=token)
        return state


def totals(state: dict[str, Any]) -> dict[str, Any]:
    """A run's counts summed over its segments."""
    out = _zero()
    for counts in state.get("counts", {}).values():
        for key, value in counts.items():
            if key == "moves":
                for pair, n in value.items():
                    out["moves"][pair] = out["moves"].get(pair, 0) + n
            else:
                out[key] += value
    done = sum(1 for c in state.get("cursors", {}).values() if c == DONE)
    return {**out, "segments": state.get("segments"), "segments_done": done, "status": state.get("status"),
            "version": state.get("version"), "seq": state.get("seq"), "started_at": state.get("started_at"),
            "finished_at": state.get("finished_at"), "announce": state.get("announce")}


def _zero() -> dict[str, Any]:
    return {"leads": 0, "written": 0, "logs_read": 0, "moves": {}}


# -- the jobs ----------------------------------------------------------------------------


def scheduled(rescoring: Rescoring, rules_in_force: Callable[[], Rules], remaining: Callable[[], float]) -> dict[str, Any]:
    """The hourly run: resume an unfinished one whose holder is gone, else start anew. It
    pauses if a publish changes the rules in force meanwhile (the publish's own run
    re-scores every lead; this one resumes under the new rules at the next hour)."""
    rules = rules_in_force()
    got = rescoring.take_over("rescore") or rescoring.start("rescore", rules)
    if got is None:
        return {"skipped": "another invocation holds the re-score run"}
    state, token = got
    try:
        state = rescoring.work(state, token, rules, remaining, still_current=lambda: rules_in_force() is rules)
    except Lost:
        return {"stopped": "the run was taken over"}
    return totals(state)


def follow_published(rescoring: Rescoring, in_force: Any, versions: Any, announcer: Any,
                     remaining: Callable[[], float], *, delay_s: float, log: Callable[[str, dict], None]) -> dict[str, Any]:
    """Every minute: bring the leads to the version in force once every function runs it
    (`delay_s` after its publish: the rules' refresh interval), resume that run after a
    timeout, and when it is done record what it did on the version and send the one
    summary message its quiet moves call for."""
    from leadflow.domain.errors import RulesError

    head = versions.head()
    if head is None:
        return {"published": None}
    seq, version = head
    state = rescoring.runs.load_run("rules")
    got = None
    if state is None or state.get("seq") != seq:
        entry = versions.get(seq, text=False)
        published = datetime.fromisoformat(entry.at).timestamp()
        if rescoring.wall() < published + delay_s:
            return {"waiting": f"version {version} (#{seq}) is re-scored once every function runs it"}
        try:
            rules = in_force.load(seq)
        except RulesError as exc:
            log("rules.invalid", {"seq": seq, "version": version, "error": exc.message[:500]})
            return {"error": f"version #{seq} does not load"}
        got = rescoring.start("rules", rules, seq=seq, announce=entry.announce, replace=True)
    elif state.get("status") != DONE:
        got = rescoring.take_over("rules")
        if got is None:
            return {"running": totals(state)}
        rules = in_force.load(seq)
    if got is not None:
        state, token = got
        try:
            state = rescoring.work(state, token, rules, remaining)
        except Lost:
            return {"stopped": "the run was taken over or replaced"}
        if state.get("status") != DONE:
            return {"paused": totals(state)}
    assert state is not None
    if state.get("summary") in ("sent", "none"):
        return totals(state)
    return _finish(rescoring, versions, announcer, state, log)


def _finish(rescoring: Rescoring, versions: Any, announcer: Any, state: dict[str, Any],
            log: Callable[[str, dict], None]) -> dict[str, Any]:
    """Record the run's result on its version, then the summary (once: the run's state
    says whether it went)."""
    result = totals(state)
    seq = state["seq"]
    versions.record_result(seq, result)
    alerts = {pair: n for pair, n in result["moves"].items() if pair.endswith(("->mql", "->sql"))}
    quiet = not state.get("announce") and sum(alerts.values()) > 0
    token = rescoring.runs.run_token("rules")
    if not quiet or announcer is None:
        state["summary"] = "none"
        rescoring.runs.save_run("rules", state, expect_token=token, token=token or uuid.uuid4().hex)
        return result
    entry = versions.get(seq, text=False)
    try:
        announcer.rules_summary(version=entry.version, seq=seq, action=entry.action, by=entry.by, moves=alerts,
                                leads=result["leads"], changes=entry.changes)
    except Exception as exc:  # noqa: BLE001 - tried again at the next minute's job
        log("rules.summary_failed", {"seq": seq, "error": str(exc)[:200]})
        return {**result, "summary": "failed"}
    state["summary"] = "sent"
    rescoring.runs.save_run("rules", state, expect_token=token, token=token or uuid.uuid4().hex)
    return {**result, "summary": "sent"}
