"""`leadflow import`: a CRM or marketing-automation export (CSV) sent to a stack's
`POST /v1/import`, row by row through an import mapping (`leadflow_infra.mapping`).

The file is streamed: one quick pass counts its rows (for the progress bar), one hashes
it (for the state file's name), then rows are mapped and sent in batches. A row the
mapping cannot read is rejected here, with its column named, and never sent; a row the
server refuses comes back rejected in its answer; neither stops the rest.

Resumable: after each acknowledged batch the state file
`<data dir>/imports/<mapping name>-<sha256(file)[:16]>.json` records the last row done
and the running counts (rejected rows go to the `.rejects.jsonl` beside it). Running the
same command again resumes after that row. Re-sending rows is always safe: event ids and
the row key are stable (see the mapping module), and rows without a time of their own
are dated by the import's clock, fixed the first time this file is imported with this
mapping and kept in the state file, so a re-run sends the very same rows and the server
answers `unchanged`.

Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with
exponential backoff (`BACKOFF_BASE` seconds, doubling, `MAX_TRIES` tries in all,
Retry-After honoured). Tests set `sleep` to a recorder.
"""

from __future__ import annotations

import csv
import email.utils
import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from time import sleep
from typing import Any, Protocol

from leadflow_infra.mapping import ImportMapping, MappingError, RowMapper, RowRejected, load_mapping

__all__ = [
    "BACKOFF_BASE", "MAX_TRIES", "MAX_BATCH", "MAX_BODY_BYTES", "TIMEOUT", "CsvSource", "CsvError", "detect_delimiter",
    "ImportClient", "Unavailable", "Refused", "ImportFailed", "Reject", "Summary", "run_import", "import_url",
    "state_path", "RichUI", "render_summary", "write_rejects",
]

BACKOFF_BASE = 0.5  # seconds before the second try; doubles after each
MAX_TRIES = 6
MAX_RETRY_AFTER = 300.0  # a Retry-After longer than this is capped
TIMEOUT = 60.0
MAX_BATCH = 50  # the route takes 1..50 rows
MAX_BODY_BYTES = 256 * 1024  # and at most 256 KiB
_ENVELOPE = len('{"rows":[]}')
STATUSES = ("imported", "merged", "unchanged", "rejected")
COUNTS = ("read",) + STATUSES
_STATE_FORMAT = 1


# ---------------------------------------------------------------- the CSV file


class CsvError(Exception):
    """The file cannot be read as CSV (missing, not UTF-8, a broken record)."""


def detect_delimiter(header_line: str) -> str:
    """`,`, `;` or tab: whichever the header line holds most of outside quotes (`,` when
    none or a tie). Excel writes `;` where the decimal separator is a comma."""
    counts = {",": 0, ";": 0, "\t": 0}
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])  # max keeps the first of a tie: `,`
    return best if counts[best] else ","


class CsvSource:
    """A CSV export, read as UTF-8 (a BOM is skipped) with any line endings. Records are
    numbered as a spreadsheet shows them: the header is row 1, the first data row 2.
    Blank records (nothing but separators) count as rows but are skipped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with self._open() as fh:
                first = fh.readline()
                self.delimiter = detect_delimiter(first)
                fh.seek(0)
                header = next(csv.reader(fh, delimiter=self.delimiter), None)
        except OSError as exc:
            raise CsvError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise CsvError(f"{self.path} is not UTF-8 text (save the export as CSV UTF-8)") from None
        except csv.Error as exc:
            raise CsvError(f"{self.path}, row 1: {exc}") from None
        if not header or not any(h.strip() for h in header):
            raise CsvError(f"{self.path} has no header row")
        self.header = [h.strip() for h in header]

    def _open(self):
        # newline="" lets the csv module see \r\n, \n and \r, and newlines inside quotes.
        return open(self.path, encoding="utf-8-sig", newline="")

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """`(row number, cells)` for every non-blank data row, streamed."""
        number = 1
        try:
            with self._open() as fh:
                reader = csv.reader(fh, delimiter=self.delimiter)
                next(reader, None)
                for cells in reader:
                    number += 1
                    if any(c.strip() for c in cells):
                        yield number, cells
        except UnicodeDecodeError:
            raise CsvError(f"{self.path}, near row {number + 1}: not UTF-8 text") from None
        except csv.Error as exc:
            raise CsvError(f"{self.path}, row {number + 1}: {exc}") from None

    def count(self) -> int:
        return sum(1 for _ in self.rows())

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


# ---------------------------------------------------------------- the route


def import_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/v1/import") else base + "/v1/import"


class Unavailable(Exception):
    """The server did not take a batch after every try (the import can resume)."""


class Refused(Exception):
    """The server refused the request itself. `status` 401/403: the API key."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error_text(status: int, body: bytes) -> str:
    """The server's error body as one line: `422 validation_error: rows[3].events: ...`."""
    try:
        answer = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return f"{status} {text[:500]}" if text else str(status)
    if isinstance(answer, dict) and answer.get("message"):
        code = f" {answer['error']}" if answer.get("error") else ""
        return f"{status}{code}: {answer['message']}"
    return f"{status} {json.dumps(answer)[:500]}"


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number of seconds, or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class ImportClient:
    """POSTs batches to the import route, retrying what may pass later. The route is
    idempotent, so a batch whose answer was lost is simply sent again."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = TIMEOUT, on_retry=None):
        self.url = url
        self.api_key = api_key
        self.timeout = timeout
        self.on_retry = on_retry  # called with a line of text before each wait

    def _post(self, body: bytes) -> tuple[int, bytes, Any]:
        headers = {"content-type": "application/json", "user-agent": "leadflow-import"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(), exc.headers

    def send(self, body: bytes) -> dict[str, Any]:
        """The answer to one batch. Raises Unavailable after MAX_TRIES transient failures,
        Refused for an answer that trying again would not change."""
        delay = BACKOFF_BASE
        for attempt in range(1, MAX_TRIES + 1):
            wait: float | None = None
            try:
                status, answer, headers = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                # Connection refused or reset, a dropped connection, a timeout.
                reason = getattr(exc, "reason", None) or exc
                problem = f"cannot reach {self.url}: {reason or type(exc).__name__}"
            else:
                if 200 <= status < 300:
                    try:
                        parsed = json.loads(answer)
                    except ValueError:
                        raise Refused(status, f"{status} but not JSON: {answer[:200]!r}") from None
                    return parsed
                if status in (408, 429) or status >= 500:
                    problem = _error_text(status, answer)
                    wait = _retry_after(headers.get("retry-after") if headers else None)
                else:
                    raise Refused(status, _error_text(status, answer))
            if attempt == MAX_TRIES:
                raise Unavailable(f"{problem} (after {MAX_TRIES} tries)")
            pause = delay if wait is None else wait
            if self.on_retry is not None:
                self.on_retry(f"{problem}; trying again in {pause:g} s (try {attempt + 1} of {MAX_TRIES})")
            sleep(pause)
            delay *= 2
        raise AssertionError("unreachable")


# ---------------------------------------------------------------- state


def state_path(data_dir: str | Path, mapping_name: str, file_sha256: str) -> Path:
    return Path(data_dir) / "imports" / f"{mapping_name}-{file_sha256[:16]}.json"


def _write_json(path: Path, data: dict) -> None:
    """Whole or not at all: a crash mid-write leaves the previous state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_state(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: start over
    ok = (isinstance(data, dict) and data.get("format") == _STATE_FORMAT and isinstance(data.get("last_row"), int)
          and isinstance(data.get("counts"), dict))
    return data if ok else {}


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class Reject:
    row: int
    field: str
    reason: str


@dataclass
class Summary:
    file: str
    url: str
    mapping: str
    state_file: str
    counts: dict[str, int]  # read, imported, merged, unchanged, rejected: this import, resumed runs included
    rejects: list[Reject]
    last_row: int  # the last row done (1: none yet)
    completed: bool = False
    resumed_after: int | None = None
    limited: bool = False  # stopped by --limit
    rows_this_run: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file, "url": self.url, "mapping": self.mapping, "state_file": self.state_file,
            "completed": self.completed, "resumed_after": self.resumed_after, "stopped_by_limit": self.limited,
            "last_row": self.last_row, "rows": dict(self.counts), "rows_this_run": self.rows_this_run,
            "seconds": round(self.seconds, 3), "rows_per_second": round(self.rows_per_second, 1),
            "rejects": [asdict(r) for r in self.rejects], "error": self.error,
        }


class ImportFailed(Exception):
    """The import stopped. `exit_code` 2: nothing was sent (the mapping or the file is at
    fault); 1: it can resume; 130: interrupted."""

    def __init__(self, message: str, exit_code: int = 1, summary: Summary | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.summary = summary


class ImportUI(Protocol):
    def notice(self, text: str) -> None: ...
    def start(self, total: int, done: int) -> None: ...
    def advance(self, rows: int) -> None: ...
    def stop(self) -> None: ...


class _Quiet:
    def notice(self, text: str) -> None:
        pass

    def start(self, total: int, done: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class _Pending:
    """Rows read since the last acknowledged batch."""

    rows: list[tuple[int, str]] = field(default_factory=list)  # (row number, row as JSON)
    size: int = _ENVELOPE
    rejects: list[Reject] = field(default_factory=list)  # by the client and by the server
    refused: int = 0  # rows the client rejected (the server's rejections are counted from its answer)
    read: int = 0
    last_row: int = 0

    def clear(self) -> None:
        self.rows, self.size, self.rejects, self.refused, self.read = [], _ENVELOPE, [], 0, 0


class _Run:
    def __init__(self, *, source: CsvSource, mapper: RowMapper, mapping: ImportMapping, client: ImportClient,
                 state_file: Path, state: dict, clock: datetime, batch: int, ui: ImportUI, summary: Summary):
        self.source, self.mapper, self.mapping, self.client = source, mapper, mapping, client
        self.state_file, self.state, self.clock = state_file, state, clock
        self.rejects_file = state_file.with_suffix(".rejects.jsonl")
        self.batch, self.ui, self.summary = batch, ui, summary
        self.pending = _Pending(last_row=summary.last_row)

    def read(self, limit: int | None) -> None:
        pending, taken = self.pending, 0
        for number, cells in self.source.rows():
            if number <= self.summary.last_row:
                continue  # done by an earlier run
            if limit is not None and taken >= limit:
                self.summary.limited = True
                break
            taken += 1
            try:
                row = self.mapper.map_row(number, cells, now=self.clock)
                text = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
                size = len(text.encode("utf-8")) + 1
                if size + _ENVELOPE > MAX_BODY_BYTES:
                    raise RowRejected("row", f"the row is {size:,} bytes as JSON; a request holds at most "
                                             f"{MAX_BODY_BYTES // 1024} KiB")
            except RowRejected as exc:
                pending.rejects.append(Reject(number, exc.field, exc.reason))
                pending.refused += 1
                pending.read += 1
                pending.last_row = number
                # Nothing unacknowledged before it: the rejects alone can be recorded.
                if not pending.rows and len(pending.rejects) >= self.batch:
                    self.commit()
                continue
            if pending.rows and pending.size + size > MAX_BODY_BYTES:
                self.flush()
            pending.rows.append((number, text))
            pending.size += size
            pending.read += 1
            pending.last_row = number
            if len(pending.rows) >= self.batch:
                self.flush()
        self.flush()

    def flush(self) -> None:
        """Send the pending rows (if any) and record them."""
        pending = self.pending
        if pending.rows:
            numbers = [n for n, _ in pending.rows]
            body = ('{"rows":[' + ",".join(text for _, text in pending.rows) + "]}").encode("utf-8")
            span = f"rows {numbers[0]:,}–{numbers[-1]:,}" if len(numbers) > 1 else f"row {numbers[0]:,}"
            try:
                answer = self.client.send(body)
            except Unavailable as exc:
                raise ImportFailed(f"the server did not take {span}: {exc}") from None
            except Refused as exc:
                if exc.status in (401, 403):
                    raise ImportFailed(f"the server refused the API key ({exc.message}); pass --api-key or set "
                                       "LEADFLOW_API_KEY to the stack's key") from None
                if 200 <= exc.status < 300 or exc.status == 404:
                    raise ImportFailed(f"{self.client.url} answered {exc.message}: is this a leadflow API with the "
                                       "import route?") from None
                raise ImportFailed(f"the server refused {span} ({exc.message}). This is a bug in leadflow import, "
                                   "not in the file: please report it with this message") from None
            results = [_result(answer, number) for number in numbers]  # all checked before any is counted
            for number, result in zip(numbers, results):
                self.summary.counts[result["status"]] += 1
                if result["status"] == "rejected":
                    pending.rejects.append(Reject(number, str(result.get("field") or ""),
                                                  str(result.get("reason") or "rejected by the server")))
        self.commit()

    def commit(self, *, done: bool = False) -> None:
        """Everything read so far is done: record it so a later run starts after it."""
        pending, summary = self.pending, self.summary
        if pending.rejects:
            pending.rejects.sort(key=lambda r: r.row)
            with open(self.rejects_file, "a", encoding="utf-8") as fh:
                for reject in pending.rejects:
                    fh.write(json.dumps(asdict(reject), ensure_ascii=False) + "\n")
            summary.rejects.extend(pending.rejects)
        summary.counts["rejected"] += pending.refused
        summary.counts["read"] += pending.read
        summary.rows_this_run += pending.read
        summary.last_row = max(summary.last_row, pending.last_row)
        self.state.update(last_row=summary.last_row, counts=dict(summary.counts), done=done,
                          updated_at=_now().isoformat())
        _write_json(self.state_file, self.state)
        self.ui.advance(pending.read)
        pending.clear()


def _result(answer: Any, row: int) -> dict[str, Any]:
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise ImportFailed(f"unexpected answer from the server (no results): {json.dumps(answer)[:300]}")
    for result in results:
        if isinstance(result, dict) and result.get("row") == row:
            if result.get("status") not in STATUSES:
                raise ImportFailed(f"unexpected answer from the server for row {row:,}: {json.dumps(result)[:300]}")
            return result
    raise ImportFailed(f"unexpected answer from the server: no result for row {row:,}")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _load_rejects(path: Path, last_row: int) -> list[Reject]:
    """The rejects recorded by earlier runs of this import, up to the last row done (a
    batch whose state was never written is read again, so its rejects are dropped)."""
    seen: dict[int, Reject] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                    reject = Reject(int(item["row"]), str(item["field"]), str(item["reason"]))
                except (ValueError, KeyError, TypeError):
                    continue
                if reject.row <= last_row:
                    seen[reject.row] = reject
    except FileNotFoundError:
        pass
    return [seen[n] for n in sorted(seen)]


def run_import(csv_path: str | Path, mapping_path: str | Path, *, url: str, api_key: str | None = None,
               data_dir: str | Path = ".leadflow", batch: int = 25, limit: int | None = None, restart: bool = False,
               ui: ImportUI | None = None) -> Summary:
    """Import the file; the summary says how it went. Raises ImportFailed when it stops
    early (its summary holds the counts so far)."""
    ui = ui or _Quiet()
    if not 1 <= batch <= MAX_BATCH:
        raise ImportFailed(f"--batch must be 1 to {MAX_BATCH}", exit_code=2)
    # The mapping is checked, then the columns it names, before any row is read.
    try:
        mapping = load_mapping(mapping_path)
        source = CsvSource(csv_path)
        mapper = RowMapper(mapping, source.header, source=str(mapping_path), base_dir=source.path.parent)
    except (MappingError, CsvError) as exc:
        raise ImportFailed(str(exc), exit_code=2) from None
    url = import_url(url)
    file_sha = source.sha256()
    state_file = state_path(data_dir, mapping.name, file_sha)
    previous = _read_state(state_file)
    fresh = {"format": _STATE_FORMAT, "file": str(Path(csv_path).resolve()), "file_sha256": file_sha,
             "mapping": mapping.name, "mapping_sha256": mapper.digest(), "url": url}
    clock = _now()
    resume_after: int | None = None
    if previous == {}:
        ui.notice(f"ignoring {state_file}: it is not a state file this leadflow can read; starting over")
    elif previous:
        try:
            clock = datetime.fromisoformat(previous["clock"])  # keep the first run's clock: same rows, same payloads
        except (KeyError, TypeError, ValueError):
            pass
        stopped = previous["last_row"]
        if previous.get("done"):
            ui.notice(f"{source.path.name} was imported completely before ({previous.get('updated_at', '?')}); "
                      "importing it again (rows already there come back unchanged)")
        elif stopped <= 1:
            pass
        elif restart:
            ui.notice(f"--restart: starting over (the last run stopped after row {stopped:,})")
        elif previous.get("mapping_sha256") != fresh["mapping_sha256"]:
            ui.notice(f"the mapping changed since the last run stopped after row {stopped:,}; starting over")
        elif previous.get("url") != url:
            ui.notice(f"the last run (stopped after row {stopped:,}) sent to {previous.get('url')}; "
                      f"starting over for {url}")
        else:
            resume_after = stopped
    rejects_file = state_file.with_suffix(".rejects.jsonl")
    if resume_after is None:
        state = {**fresh, "clock": clock.isoformat(), "started_at": _now().isoformat(), "last_row": 1,
                 "counts": {name: 0 for name in COUNTS}, "done": False}
        rejects_file.unlink(missing_ok=True)
        _write_json(state_file, state)
        summary = Summary(file=str(csv_path), url=url, mapping=mapping.name, state_file=str(state_file),
                          counts={name: 0 for name in COUNTS}, rejects=[], last_row=1)
    else:
        state = {**previous, **fresh}
        counts = {name: int(previous["counts"].get(name, 0)) for name in COUNTS}
        summary = Summary(file=str(csv_path), url=url, mapping=mapping.name, state_file=str(state_file), counts=counts,
                          rejects=_load_rejects(rejects_file, resume_after), last_row=resume_after,
                          resumed_after=resume_after)
    run = _Run(source=source, mapper=mapper, mapping=mapping,
               client=ImportClient(url, api_key, on_retry=ui.notice), state_file=state_file, state=state, clock=clock,
               batch=batch, ui=ui, summary=summary)
    started = time.monotonic()
    try:
        total = source.count()
        if resume_after is not None:
            ui.notice(f"resuming after row {resume_after:,} ({summary.counts['read']:,} of {total:,} rows done; "
                      "--restart starts over)")
        remaining = max(total - summary.counts["read"], 0)
        ui.start(summary.counts["read"] + (min(remaining, limit) if limit is not None else remaining),
                 summary.counts["read"])
        run.read(limit)
        run.commit(done=not summary.limited)
        summary.completed = not summary.limited
    except ImportFailed as exc:
        exc.summary = summary
        summary.error = exc.message
        if exc.exit_code == 1:
            exc.message += f"\nre-running the same command resumes after row {summary.last_row:,}"
        raise
    except CsvError as exc:
        summary.error = str(exc)
        raise ImportFailed(str(exc), exit_code=1, summary=summary) from None
    except KeyboardInterrupt:
        summary.error = "interrupted"
        raise ImportFailed(f"interrupted; re-running the same command resumes after row {summary.last_row:,}",
                           exit_code=130, summary=summary) from None
    finally:
        summary.seconds = time.monotonic() - started
        ui.stop()
    return summary


# ---------------------------------------------------------------- output


class RichUI:
    """A progress bar and notices on stderr (rows done / total, rows/s, time left)."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None
        self._task = None

    def notice(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, total: int, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
        )
        self._task = self._progress.add_task("import", total=total, completed=done, rate="")
        self._progress.start()

    def advance(self, rows: int) -> None:
        if self._progress is None:
            return
        self._progress.update(self._task, advance=rows)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:,.0f} rows/s" if speed else "")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


SHOWN_REJECTS = 20


def render_summary(summary: Summary, console, *, rejects_path: str | None = None) -> None:
    from rich.table import Table

    state = "done" if summary.completed else "stopped by --limit" if summary.limited else "stopped"
    table = Table(title=f"import of {summary.file} ({state})", title_justify="left")
    table.add_column("rows")
    table.add_column("count", justify="right")
    c = summary.counts
    for label, value in (("read", c["read"]), ("imported (new leads)", c["imported"]),
                         ("merged (into existing leads)", c["merged"]), ("unchanged (already imported)", c["unchanged"]),
                         ("rejected", c["rejected"])):
        table.add_row(label, f"{value:,}")
    table.add_row("rows/s", f"{summary.rows_per_second:,.1f}")
    console.print(table)
    if summary.resumed_after is not None:
        console.print(f"(resumed after row {summary.resumed_after:,}; the counts include the earlier runs)",
                      soft_wrap=True)
    if summary.limited:
        console.print(f"stopped after row {summary.last_row:,} (--limit); run the same command again to continue",
                      soft_wrap=True)
    if not summary.rejects:
        return
    rejected = Table(title="rejected rows", title_justify="left")
    rejected.add_column("row", justify="right")
    rejected.add_column("field")
    rejected.add_column("reason", overflow="fold")
    for reject in summary.rejects[:SHOWN_REJECTS]:
        rejected.add_row(f"{reject.row:,}", reject.field, reject.reason)
    console.print(rejected)
    more = len(summary.rejects) - SHOWN_REJECTS
    if rejects_path:
        console.print(("… and " + f"{more:,} more; " if more > 0 else "") + f"all rejected rows are in {rejects_path}",
                      markup=False, highlight=False, soft_wrap=True)
    elif more > 0:
        console.print(f"… and {more:,} more (--rejects rejects.csv writes them all)", markup=False, highlight=False,
                      soft_wrap=True)


def write_rejects(path: str | Path, rejects: list[Reject]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "field", "reason"])
        for reject in rejects:
            writer.writerow([reject.row, reject.field, reject.reason])
