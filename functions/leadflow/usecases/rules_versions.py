"""Which rules are in force, and publishing or rolling back a version.

The rules file deployed with the functions (`LEADFLOW_RULES`, or the shipped default) is
the first version. Once a version is published it lives in the table, and every function
picks it up within `ttl` seconds (one GetItem of the head per check) without a redeploy.

A version that does not load is never put in force: a publish validates it first, and
a function that finds the version in force unreadable (a newer leadflow reading an old
file differently, a hand edit) keeps the last good one it had, or at a cold start the
newest good one in the history, and logs `rules.invalid` as an error each time it
looks. Only when no version at all loads do the functions refuse work (`/healthz` 503).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from leadflow.domain.errors import Conflict, InvalidInput, RulesError
from leadflow.domain.ports import PublishedRules, VersionTaken
from leadflow.domain.rules import Rules
from leadflow.domain.rules_changes import changes
from leadflow.usecases.rescoring import totals

MAX_RULES_BYTES = 200 * 1024


class RulesVersions(Protocol):
    def head(self) -> tuple[int, str] | None: ...

    def get(self, seq: int, *, text: bool = True) -> Any: ...

    def history(self, limit: int = 50, *, text: bool = False) -> list[Any]: ...

    def add(self, entry: Any) -> None: ...

    def move_head(self, seq: int, version: str) -> bool: ...


@dataclass
class InForce:
    rules: Rules
    seq: int | None  # None: the deployed file (nothing published)
    source: str  # "published" or "file"
    warning: str | None = None  # set while a newer version fails to load and an older one serves


class RulesInForce:
    """The rules every request uses, refreshed at most every `ttl` seconds."""

    def __init__(self, versions: RulesVersions, file_rules: Callable[[], Rules], parse: Callable[[str, str], Rules],
                 *, ttl: float = 60.0, monotonic: Callable[[], float] = time.monotonic,
                 log: Callable[[str, dict], None] | None = None):
        self.versions = versions
        self.file_rules = file_rules
        self.parse = parse
        self.ttl = ttl
        self.monotonic = monotonic
        self.log = log or (lambda _event, _extra: None)
        self._state: InForce | None = None
        self._checked = -float("inf")
        self._lock = threading.Lock()

    def current(self) -> InForce:
        with self._lock:
            if self._state is None or self.monotonic() - self._checked >= self.ttl:
                try:
                    self._state = self._look()
                    self._checked = self.monotonic()
                except RulesError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the table cannot be read: see below
                    # Keep what this function runs, or at a cold start use the deployed
                    # file, and look again at the next call. Nothing can be written while
                    # the table cannot be read, so no lead is moved under the fallback.
                    self.log("rules.unreadable", {"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                    if self._state is None:
                        return InForce(self.file_rules(), None, "file",
                                       "the published rules version could not be read; the deployed file serves")
            return self._state

    def rules(self) -> Rules:
        return self.current().rules

    def forget(self) -> None:
        """Look again at the next use (after a publish in this process)."""
        with self._lock:
            self._checked = -float("inf")

    def _look(self) -> InForce:
        held = self._state
        head = self.versions.head()
        if head is None:
            return InForce(self.file_rules(), None, "file")
        seq, version = head
        if held is not None and held.seq == seq and held.warning is None:
            return held
        try:
            return InForce(self.load(seq), seq, "published")
        except RulesError as exc:
            warning = f"rules version {version} (#{seq}) does not load; kept the last good version: {exc.message}"
            self.log("rules.invalid", {"seq": seq, "version": version, "error": exc.message[:500]})
            if held is not None and held.seq != seq:
                return InForce(held.rules, held.seq, held.source, warning)
            for entry in self.versions.history(20, text=True):  # a cold start: the newest good one
                if entry.seq < seq and entry.text:
                    try:
                        return InForce(self.parse(entry.text, f"rules #{entry.seq}"), entry.seq, "published", warning)
                    except RulesError:
                        continue
            return InForce(self.file_rules(), None, "file", warning)

    def load(self, seq: int) -> Rules:
        entry = self.versions.get(seq)
        if entry is None or entry.text is None:
            raise RulesError(f"rules version #{seq} is missing from the table")
        return self.parse(entry.text, f"rules #{seq} ({entry.version})")


@dataclass
class Published:
    seq: int
    version: str
    changes: list[str]
    action: str

    def answer(self) -> dict[str, Any]:
        return {"seq": self.seq, "version": self.version, "action": self.action, "changes": self.changes}


class Publisher:
    """Publish a version or roll back to an earlier one. Each becomes the next entry of
    the history, in force at once for new work; the re-score run that follows (the
    jobs function's `rules` job) brings every stored lead to it."""

    def __init__(self, versions: RulesVersions, in_force: RulesInForce, file_text: Callable[[], str],
                 clock: Callable[[], datetime]):
        self.versions = versions
        self.in_force = in_force
        self.file_text = file_text
        self.clock = clock

    def publish(self, text: str, *, by: str, announce: bool) -> Published:
        if len(text.encode("utf-8")) > MAX_RULES_BYTES:
            raise InvalidInput(f"source: a rules file is at most {MAX_RULES_BYTES // 1024} KiB", field="source")
        try:
            new = self.in_force.parse(text, "the published rules")
        except RulesError as exc:
            raise InvalidInput(exc.message, field="source", details=exc.details) from None
        return self._put(new, text, by=by, action="publish", announce=announce)

    def rollback(self, *, by: str, to: int | None = None, announce: bool = False) -> Published:
        """Back to version `to`, by default the one the version in force replaced."""
        head = self.versions.head()
        if head is None:
            raise Conflict("nothing was published: the deployed rules file is in force and there is nothing to roll back to")
        current = self.versions.get(head[0], text=False)
        target = to if to is not None else current.previous
        if target is None:
            raise Conflict(f"version #{head[0]} ({head[1]}) is the first one: there is no earlier version")
        if target == head[0]:
            raise Conflict(f"version #{target} is already in force")
        entry = self.versions.get(target)
        if entry is None or entry.text is None:
            raise InvalidInput(f"to: no rules version #{target}", field="to")
        try:
            old = self.in_force.parse(entry.text, f"rules #{target}")
        except RulesError as exc:
            raise Conflict(f"version #{target} no longer loads: {exc.message}") from None
        return self._put(old, entry.text, by=by, action="rollback", announce=announce, restores=target)

    def _put(self, new: Rules, text: str, *, by: str, action: str, announce: bool,
             restores: int | None = None) -> Published:
        now = self.clock().isoformat()
        for _ in range(5):
            head = self.versions.head()
            if head is None:  # the first publish: the deployed file becomes version 1
                base_text = self.file_text()
                base = self.in_force.file_rules()
                try:
                    self.versions.add(PublishedRules(seq=1, version=base.version, text=base_text, by="deploy", at=now,
                                                     action="initial"))
                except VersionTaken:
                    pass
                self.versions.move_head(1, base.version)
                continue
            seq, version = head
            held = self.versions.get(seq)  # read once: its text and its rules
            try:
                current = self.in_force.parse(held.text, f"rules #{seq}") if held and held.text else None
            except RulesError:
                current = None  # the version in force does not load: publishing over it is the way out
            if action == "publish" and held is not None and held.text == text:
                raise Conflict(f"version {new.version} is already in force (#{seq}): nothing to publish")
            if action == "publish" and current is not None:
                if new.version == current.version and not changes(current, new):
                    raise Conflict(f"version {new.version} is already in force (#{seq}): nothing to publish")
                if new.version == current.version:
                    raise Conflict(f"version: {new.version} is the version in force, with other content; "
                                   "give the new rules a new `version`")
                used = {e.version for e in self.versions.history(200)}
                if new.version in used:
                    raise Conflict(f"version: {new.version} was published before with other content; "
                                   "give the new rules a new `version`, or roll back to it")
            what = changes(current, new) if current is not None else []
            entry = PublishedRules(seq=seq + 1, version=new.version, text=text, by=by, at=now, action=action,
                                   previous=seq, restores=restores, announce=announce, changes=what)
            try:
                self.versions.add(entry)
            except VersionTaken:
                continue  # another publish took seq + 1: decide again against it
            self.versions.move_head(entry.seq, entry.version)
            self.in_force.forget()
            return Published(entry.seq, entry.version, what, action)
        raise Conflict("rules are being published concurrently; try again")

    def describe(self, limit: int = 50) -> dict[str, Any]:
        """The version in force (with its YAML) and the history, newest first."""
        state = self.in_force.current()
        head = self.versions.head()
        history = [e.entry() for e in self.versions.history(limit)] if head else []
        source = None
        if state.seq is not None:
            entry = self.versions.get(state.seq)
            source = entry.text if entry else None
        else:
            source = self.file_text()
        load_run = getattr(self.versions, "load_run", None)
        run = load_run("rules") if load_run is not None and head else None
        progress = totals(run, self.versions.segments("rules", run["id"])) if run else None
        return {
            "version": state.rules.version,
            "seq": state.seq,
            "from": state.source,
            "language": state.rules.language,
            "signals_key": state.rules.signals_key,
            "warning": state.warning,
            "source": source,
            "history": history,
            "run": progress,  # the latest publish's re-score, while it runs and after
        }
