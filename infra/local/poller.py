"""What the local event source mappings share: one thread polling a source, and a drain.

A subclass implements :meth:`Poller._poll_once` (read once, deliver what was read,
return whether anything was found) and may override :meth:`Poller._recover` (after
a failed poll) and :meth:`Poller._settled` (an extra condition for :meth:`drain`).
The base runs the loop, counts, stops and drains:

- a *cycle* is one call of ``_poll_once``; an *idle* cycle found nothing;
- :meth:`drain` returns once a cycle that started after the call was idle (and the
  source is settled): everything in the source when it was called has been handled;
- while records flow the loop polls every ``poll_interval``; after a second of idle
  cycles, every ``idle_poll_interval``;
- a poll that raises is counted in ``poll_errors``, logged, and retried a second later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)


class Poller:
    """One polling thread with start, stop, drain and counters."""

    thread_name = "leadflow-poller"
    source_kind = "source"  # for log lines: "stream", "queue"

    def __init__(
        self,
        *,
        counters: Iterable[str],
        poll_interval: float = 0.05,
        idle_poll_interval: float | None = None,
        join_timeout: float = 5.0,
    ) -> None:
        self._poll_interval = poll_interval
        self._idle_poll_interval = max(idle_poll_interval or poll_interval, poll_interval)
        self._join_timeout = join_timeout
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._cycles_started = 0
        self._last_idle_cycle = 0
        self._counters = {name: 0 for name in (*counters, "poll_errors")}
        self._counter_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def _start_thread(self) -> None:
        if self._thread is not None:
            raise RuntimeError("poller already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, drain_timeout: float = 10.0) -> bool:
        """Deliver what is in the source (up to ``drain_timeout``), then stop the thread.

        Returns whether the drain completed.
        """
        if self._thread is None:
            return True
        drained = self.drain(drain_timeout) if drain_timeout > 0 else False
        self._stop.set()
        self._thread.join(timeout=max(drain_timeout, self._join_timeout))
        self._thread = None
        self._stopped()
        return drained

    def drain(self, timeout: float = 10.0) -> bool:
        """Return True once everything in the source when called has been handled.

        Returns False after ``timeout`` seconds or when the poller is not running.
        """
        return self._drain(timeout, self._settled)

    def _drain(self, timeout: float, settled: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                target = self._cycles_started
                while self._last_idle_cycle <= target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.running:
                        return False
                    self._cond.wait(min(remaining, 0.5))
            if settled():
                return True
            if time.monotonic() >= deadline or not self.running:
                return False

    # -- counters ------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        with self._counter_lock:
            return dict(self._counters)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += amount

    # -- for subclasses --------------------------------------------------------------

    def _poll_once(self) -> bool:
        """Read once and deliver; return whether anything was found."""
        raise NotImplementedError

    def _recover(self) -> None:
        """After a failed poll (the loop has waited a second): get ready to poll again."""

    def _settled(self) -> bool:
        """Beyond an idle cycle, whether the source is done (for :meth:`drain`)."""
        return True

    def _stopped(self) -> None:
        """After the thread has stopped: release what the subclass holds."""

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        empty_polls = 0
        while not self._stop.is_set():
            with self._cond:
                self._cycles_started += 1
                cycle = self._cycles_started
            try:
                found = self._poll_once()
            except Exception:
                self._count("poll_errors")
                logger.exception("%s poll failed; retrying", self.source_kind)
                self._stop.wait(1.0)
                try:
                    self._recover()
                except Exception:
                    logger.debug("%s: recovery after a failed poll failed", self.source_kind, exc_info=True)
                continue
            if found:
                empty_polls = 0
                continue
            with self._cond:
                self._last_idle_cycle = cycle
                self._cond.notify_all()
            # Poll fast while records flow; after a second of silence, a little slower.
            empty_polls += 1
            quiet = empty_polls * self._poll_interval >= 1.0
            self._stop.wait(self._idle_poll_interval if quiet else self._poll_interval)
