"""The scheduled jobs on a timer: the local stand-in for the template's ScheduleV2 events.

Each job first runs one interval after start (like a rate() schedule created at
deploy time), never at start. Jobs never overlap, and a failing job is logged
and runs again at its next slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_JOBS: dict[str, float] = {"rescore": 3600.0, "funnel": 86400.0}


class Scheduler:
    """Invoke ``handler({"job": name})`` every ``interval`` seconds for each job."""

    def __init__(
        self,
        handler: Callable[[dict[str, Any]], Any] | None,
        jobs: Mapping[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handler = handler
        self._jobs = dict(DEFAULT_JOBS if jobs is None else jobs)
        for name, interval in self._jobs.items():
            if interval <= 0:
                raise ValueError(f"job {name}: interval must be positive, got {interval}")
        self._clock = clock
        self._next_run: dict[str, float] = {}
        self._stop = threading.Event()
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {name: 0 for name in self._jobs}
        self.failures: dict[str, int] = {name: 0 for name in self._jobs}

    @property
    def enabled(self) -> bool:
        return self._handler is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ready(self) -> bool:
        """Running, or deliberately without a jobs handler."""
        return self.running or (not self.enabled and not self._stop.is_set())

    @property
    def jobs(self) -> dict[str, float]:
        return dict(self._jobs)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("scheduler already started")
        self._stop.clear()
        if not self.enabled:
            logger.warning("no jobs handler: scheduled jobs are off")
            return
        now = self._clock()
        self._next_run = {name: now + interval for name, interval in self._jobs.items()}
        self._thread = threading.Thread(target=self._run, name="leadflow-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the timer; a job that is running is allowed to finish (up to ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_now(self, job: str) -> Any:
        """Run one job synchronously and return the handler's result (exceptions propagate)."""
        if self._handler is None:
            raise RuntimeError("no jobs handler")
        with self._run_lock:
            self.runs[job] = self.runs.get(job, 0) + 1
            try:
                return self._handler({"job": job})
            except Exception:
                self.failures[job] = self.failures.get(job, 0) + 1
                raise

    def _run(self) -> None:
        while not self._stop.is_set():
            name, due = min(self._next_run.items(), key=lambda item: item[1])
            wait = due - self._clock()
            if wait > 0:
                # Wake at least every second so a changed clock or stop is noticed.
                self._stop.wait(min(wait, 1.0))
                continue
            # A slot missed (suspended laptop, a long job) is skipped, not caught up.
            following = due + self._jobs[name]
            now = self._clock()
            self._next_run[name] = following if following > now else now + self._jobs[name]
            started = time.monotonic()
            try:
                self.run_now(name)
                logger.info("scheduled job %s done in %.2fs", name, time.monotonic() - started)
            except Exception:
                logger.exception("scheduled job %s failed; next run in %ss", name, self._jobs[name])
