"""`leadflow import` against a fake of `POST /v1/import` on 127.0.0.1: batching, retries,
resuming, the summary, the rejects file, JSON output and the API key.

The fake keeps to the route's contract: bearer key, 1..50 rows, at most 256 KiB, one
result per row (imported, merged, unchanged or rejected), idempotent by event id. It can
be told to answer 503, or 429 with Retry-After: 0, or to drop the connection. Backoff
waits go to a recorder: no test sleeps.
"""

from __future__ import annotations

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from leadflow_infra import importer
from leadflow_infra.cli import main

EVENT_TYPES = frozenset({"identify", "page_viewed", "email_opened", "form_submitted"})

MAPPING = """
mapping: 1
name: crm-export
key: Id
null_values: ["", "NaN"]
email: Email
occurred_at: {column: Created, type: date}
traits:
  company: Company
events:
  - type: {column: Activity, map_missing: keep, map: {Opened: email_opened, Visited: page_viewed}}
    properties:
      visits: {column: Visits, type: number}
"""


class FakeImportRoute:
    """The import route's contract, in memory."""

    def __init__(self, *, api_key: str | None = None):
        self.api_key = api_key
        self.requests: list[list[dict]] = []  # the rows of each applied request
        self.attempts = 0
        self.fail_503 = 0  # answer 503 to the next N requests
        self.fail_429 = 0  # answer 429 with Retry-After: 0 to the next N
        self.drop = 0  # close the next N connections without answering
        self.healthy_requests: int | None = None  # after this many applied requests, 503 for good
        self.refuse_with: tuple[int, dict] | None = None  # answer every request with this
        self._events: set[str] = set()
        self._emails: set[str] = set()
        self._lock = threading.Lock()
        route = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with route._lock:
                    route.attempts += 1
                    status, answer, headers = route.answer(self.path, self.headers, body)
                if status is None:
                    self.close_connection = True  # dropped: no answer at all
                    return
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "FakeImportRoute":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def rows(self) -> list[dict]:
        return [row for request in self.requests for row in request]

    def answer(self, path: str, headers, body: bytes):
        if path != "/v1/import":
            return 404, {"error": "not_found", "message": path}, {}
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": "unauthorized", "message": "missing or wrong API key"}, {}
        if self.refuse_with is not None:
            return self.refuse_with[0], self.refuse_with[1], {}
        if len(body) > 256 * 1024:
            return 413, {"error": "payload_too_large", "message": "at most 256 KiB"}, {}
        rows = json.loads(body).get("rows")
        if not isinstance(rows, list) or not 1 <= len(rows) <= 50:
            return 400, {"error": "bad_request", "message": "rows: 1 to 50 rows"}, {}
        if self.drop:
            self.drop -= 1
            return None, None, {}
        if self.fail_503:
            self.fail_503 -= 1
            return 503, {"error": "contention", "message": "try again"}, {}
        if self.fail_429:
            self.fail_429 -= 1
            return 429, {"error": "throttled", "message": "slow down"}, {"retry-after": "0"}
        if self.healthy_requests is not None and len(self.requests) >= self.healthy_requests:
            return 503, {"error": "unavailable", "message": "down for good"}, {}
        self.requests.append(rows)
        results = [self.apply(row) for row in rows]
        counts = {status: sum(r["status"] == status for r in results)
                  for status in ("imported", "merged", "unchanged", "rejected")}
        return 200, {"results": results, "counts": counts}, {}

    def apply(self, row: dict) -> dict:
        events = row["events"]
        assert events and events[0]["type"] == "identify", row
        assert {e["email"] for e in events} == {events[0]["email"]}, row
        for i, event in enumerate(events):
            if event["type"] not in EVENT_TYPES:
                return {"row": row["row"], "status": "rejected", "field": f"events.{i}.type",
                        "reason": "unknown event type"}
        ids = {e["event_id"] for e in events}
        email = events[0]["email"]
        if ids <= self._events:
            status = "unchanged"
        elif email in self._emails:
            status = "merged"
        else:
            status = "imported"
        self._events |= ids
        self._emails.add(email)
        return {"row": row["row"], "status": status, "lead_id": "L-" + email, "stage": row["stage"] or "subscriber"}


@pytest.fixture
def route():
    with FakeImportRoute() as fake:
        yield fake


@pytest.fixture
def waits(monkeypatch):
    """Backoff waits, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(importer, "sleep", recorded.append)
    return recorded


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("LEADFLOW_API_KEY", raising=False)


def export(tmp_path: Path, rows: list[dict] | int, name: str = "export.csv") -> Path:
    """An export with the columns MAPPING reads; an int makes that many plain rows."""
    if isinstance(rows, int):
        rows = [{"Id": f"c-{i}", "Email": f"lead{i}@acme.example"} for i in range(1, rows + 1)]
    columns = ["Id", "Email", "Company", "Created", "Activity", "Visits"]
    path = tmp_path / name
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({"Created": "2026-10-01T09:00:00Z", "Company": "Acme", **row})
    return path


@pytest.fixture
def mapping(tmp_path) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    return path


def run(capsys, tmp_path, file: Path, mapping: Path, url: str, *extra: str) -> tuple[int, str, str]:
    code = main(["import", str(file), "--mapping", str(mapping), "--url", url,
                 "--data-dir", str(tmp_path / "data"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, tmp_path, file, mapping, url, *extra) -> tuple[int, dict, str]:
    code, out, err = run(capsys, tmp_path, file, mapping, url, "--json", *extra)
    return code, json.loads(out), err


def state_of(tmp_path: Path) -> dict:
    (path,) = (tmp_path / "data" / "imports").glob("crm-export-*.json")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- sending


def test_rows_go_in_batches_in_file_order(capsys, tmp_path, route, mapping, waits):
    file = export(tmp_path, 7)
    code, summary, _ = run_json(capsys, tmp_path, file, mapping, route.url, "--batch", "3")
    assert code == 0
    assert [[r["row"] for r in batch] for batch in route.requests] == [[2, 3, 4], [5, 6, 7], [8]]
    first = route.rows[0]
    assert first["key"] == "import:crm-export:c-1"
    assert first["events"][0]["traits"] == {"company": "Acme"}
    assert first["events"][0]["occurred_at"] == "2026-10-01T09:00:00+00:00"
    assert summary["completed"] is True
    assert summary["rows"] == {"read": 7, "imported": 7, "merged": 0, "unchanged": 0, "rejected": 0}
    assert waits == []


def test_transient_failures_are_retried_with_backoff(capsys, tmp_path, route, mapping, waits):
    route.fail_503 = 2
    code, summary, err = run_json(capsys, tmp_path, export(tmp_path, 3), mapping, route.url)
    assert code == 0
    assert waits == [0.5, 1.0]
    assert "503 contention: try again; trying again in 0.5 s (try 2 of 6)" in err
    assert route.attempts == 3
    assert [r["row"] for r in route.rows] == [2, 3, 4]  # sent once each, as far as the server knows
    assert summary["rows"]["imported"] == 3


def test_429_honours_retry_after_and_a_dropped_connection_is_retried(capsys, tmp_path, route, mapping, waits):
    route.fail_429 = 2
    route.drop = 1
    code, summary, _ = run_json(capsys, tmp_path, export(tmp_path, 2), mapping, route.url)
    assert code == 0
    assert waits == [0.5, 0.0, 0.0]  # the drop backs off; each 429 waits its Retry-After (0)
    assert summary["rows"]["imported"] == 2


def test_the_import_stops_after_six_tries(capsys, tmp_path, route, mapping, waits):
    route.fail_503 = 100
    code, _, err = run(capsys, tmp_path, export(tmp_path, 2), mapping, route.url)
    assert code == 1
    assert route.attempts == 6
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert "the server did not take rows 2–3: 503 contention: try again (after 6 tries)" in err
    assert "re-running the same command resumes after row 1" in err


def test_batches_stay_under_the_body_limit(capsys, tmp_path, route, waits):
    # 40 traits of ~2,000 characters: about 80 KB a row, so three rows to a request.
    wide = tmp_path / "wide.yaml"
    wide.write_text(MAPPING.replace("  company: Company\n", "".join(f"  note{i}: Company\n" for i in range(40))),
                    encoding="utf-8")
    file = export(tmp_path, [{"Id": f"c-{i}", "Email": f"lead{i}@acme.example", "Company": "x" * 1990}
                             for i in range(5)])
    code, summary, _ = run_json(capsys, tmp_path, file, wide, route.url)
    assert code == 0
    assert [len(batch) for batch in route.requests] == [3, 2]
    assert summary["rows"]["imported"] == 5


# ---------------------------------------------------------------- resuming


def test_an_interrupted_import_resumes_after_the_last_acknowledged_row(capsys, tmp_path, route, mapping, waits):
    file = export(tmp_path, 10)
    route.healthy_requests = 2
    code, summary, err = run_json(capsys, tmp_path, file, mapping, route.url, "--batch", "3")
    assert code == 1
    assert "resumes after row 7" in err
    assert summary["completed"] is False and summary["last_row"] == 7
    state = state_of(tmp_path)
    assert (state["last_row"], state["done"]) == (7, False)
    assert state["counts"] == {"read": 6, "imported": 6, "merged": 0, "unchanged": 0, "rejected": 0}
    assert [r["row"] for r in route.rows] == [2, 3, 4, 5, 6, 7]

    route.healthy_requests = None
    sent_before = len(route.rows)
    code, summary, err = run_json(capsys, tmp_path, file, mapping, route.url, "--batch", "3")
    assert code == 0
    assert "resuming after row 7 (6 of 10 rows done" in err
    assert [r["row"] for r in route.rows[sent_before:]] == [8, 9, 10, 11]  # no earlier row again
    assert summary["resumed_after"] == 7
    assert summary["rows"] == {"read": 10, "imported": 10, "merged": 0, "unchanged": 0, "rejected": 0}
    assert state_of(tmp_path)["done"] is True


def test_restart_starts_from_the_first_row(capsys, tmp_path, route, mapping, waits):
    file = export(tmp_path, 6)
    route.healthy_requests = 1
    assert run(capsys, tmp_path, file, mapping, route.url, "--batch", "2")[0] == 1
    route.healthy_requests = None
    code, summary, err = run_json(capsys, tmp_path, file, mapping, route.url, "--batch", "2", "--restart")
    assert code == 0
    assert "--restart: starting over (the last run stopped after row 3)" in err
    assert [r["row"] for r in route.rows] == [2, 3, 2, 3, 4, 5, 6, 7]
    assert summary["resumed_after"] is None
    assert summary["rows"] == {"read": 6, "imported": 4, "merged": 0, "unchanged": 2, "rejected": 0}


def test_a_completed_import_runs_again_with_the_same_rows(capsys, tmp_path, route, mapping, waits):
    # No time column: rows are dated by the import's clock, kept for re-runs.
    file = export(tmp_path, [{"Id": "c-1", "Email": "a@acme.example", "Created": ""},
                             {"Id": "c-2", "Email": "b@acme.example", "Created": ""}])
    assert run(capsys, tmp_path, file, mapping, route.url)[0] == 0
    code, summary, err = run_json(capsys, tmp_path, file, mapping, route.url)
    assert code == 0
    assert "was imported completely before" in err
    first, again = route.requests
    assert first == again  # byte for byte the same rows: the server has nothing new
    assert summary["rows"] == {"read": 2, "imported": 0, "merged": 0, "unchanged": 2, "rejected": 0}


def test_a_changed_mapping_starts_over(capsys, tmp_path, route, mapping, waits):
    file = export(tmp_path, 4)
    route.healthy_requests = 1
    assert run(capsys, tmp_path, file, mapping, route.url, "--batch", "2")[0] == 1
    route.healthy_requests = None
    mapping.write_text(MAPPING.replace("company: Company", "organisation: Company"), encoding="utf-8")
    code, _, err = run(capsys, tmp_path, file, mapping, route.url, "--batch", "2")
    assert code == 0
    assert "the mapping changed since the last run stopped after row 3; starting over" in err
    assert [r["row"] for r in route.rows] == [2, 3, 2, 3, 4, 5]


def test_limit_stops_early_and_the_next_run_continues(capsys, tmp_path, route, mapping, waits):
    file = export(tmp_path, 5)
    code, summary, _ = run_json(capsys, tmp_path, file, mapping, route.url, "--limit", "2")
    assert code == 0
    assert (summary["completed"], summary["stopped_by_limit"], summary["last_row"]) == (False, True, 3)
    code, summary, _ = run_json(capsys, tmp_path, file, mapping, route.url)
    assert code == 0 and summary["completed"] is True
    assert [r["row"] for r in route.rows] == [2, 3, 4, 5, 6]


# ---------------------------------------------------------------- the summary


def mixed_rows() -> list[dict]:
    return [
        {"Id": "c-1", "Email": "a@acme.example", "Activity": "Opened", "Visits": "1,200"},
        {"Id": "c-2", "Email": "", "Activity": "Opened"},  # rejected here: no email
        {"Id": "c-3", "Email": "a@acme.example", "Activity": "Visited"},  # same person, another row: merged
        {"Id": "c-4", "Email": "d@acme.example", "Activity": "webinar"},  # rejected by the server: unknown type
        {"Id": "c-5", "Email": "e@acme.example", "Activity": "Visited", "Visits": "lots"},  # rejected here: not a number
        {"Id": "c-6", "Email": "f@acme.example", "Created": "NaN"},
    ]


def test_summary_tables_and_the_rejects_file(capsys, tmp_path, route, mapping, waits):
    rejects = tmp_path / "rejects.csv"
    code, out, _ = run(capsys, tmp_path, export(tmp_path, mixed_rows()), mapping, route.url,
                       "--batch", "2", "--rejects", str(rejects))
    assert code == 0  # completed, rejected rows and all
    assert [r["row"] for r in route.rows] == [2, 4, 5, 7]  # rows 3 and 6 never sent
    assert route.rows[0]["events"][1]["properties"] == {"visits": 1200}
    for label, count in (("read", 6), ("imported (new leads)", 2), ("merged (into existing leads)", 1),
                         ("unchanged (already imported)", 0), ("rejected", 3)):
        assert any(label in line and line.rstrip(" │|").endswith(str(count)) for line in out.splitlines()), (label, out)
    assert "rows/s" in out
    assert "rejected rows" in out and f"all rejected rows are in {rejects}" in out
    with open(rejects, encoding="utf-8", newline="") as fh:
        assert list(csv.reader(fh)) == [
            ["row", "field", "reason"],
            ["3", "Email", "email: empty; a row without an email cannot be imported"],
            ["5", "events.1.type", "unknown event type"],
            ["6", "Visits", "events[0].properties.visits: not a number: 'lots'"],
        ]


def test_json_summary(capsys, tmp_path, route, mapping, waits):
    code, summary, _ = run_json(capsys, tmp_path, export(tmp_path, mixed_rows()), mapping, route.url)
    assert code == 0
    assert summary["rows"] == {"read": 6, "imported": 2, "merged": 1, "unchanged": 0, "rejected": 3}
    assert summary["rejects"][0] == {"row": 3, "field": "Email",
                                     "reason": "email: empty; a row without an email cannot be imported"}
    assert summary["url"] == route.url + "/v1/import"
    assert summary["state_file"].endswith(".json") and "crm-export-" in summary["state_file"]
    assert summary["error"] is None and summary["rows_this_run"] == 6


def test_rejects_after_an_interruption_are_kept(capsys, tmp_path, route, mapping, waits):
    rows = mixed_rows()
    file = export(tmp_path, rows)
    route.healthy_requests = 1  # rows 2 and 3 (3 rejected here), then down
    assert run(capsys, tmp_path, file, mapping, route.url, "--batch", "1")[0] == 1
    route.healthy_requests = None
    code, summary, _ = run_json(capsys, tmp_path, file, mapping, route.url, "--batch", "1")
    assert code == 0
    assert [r["row"] for r in summary["rejects"]] == [3, 5, 6]
    assert summary["rows"]["rejected"] == 3


def test_only_twenty_rejects_are_shown(capsys, tmp_path, route, mapping, waits):
    file = export(tmp_path, [{"Id": f"c-{i}", "Email": ""} for i in range(25)])
    code, out, _ = run(capsys, tmp_path, file, mapping, route.url)
    assert code == 0
    assert "… and 5 more (--rejects rejects.csv writes them all)" in out
    assert route.requests == []


# ---------------------------------------------------------------- refusals and targets


def test_a_wrong_api_key_says_so(capsys, tmp_path, mapping, waits, monkeypatch):
    with FakeImportRoute(api_key="s3cret") as route:
        file = export(tmp_path, 2)
        code, _, err = run(capsys, tmp_path, file, mapping, route.url)
        assert code == 1
        assert "the server refused the API key (401 unauthorized: missing or wrong API key)" in err
        assert "--api-key or set LEADFLOW_API_KEY" in err
        assert waits == [] and route.requests == []
        assert run(capsys, tmp_path, file, mapping, route.url, "--api-key", "s3cret")[0] == 0
        monkeypatch.setenv("LEADFLOW_API_KEY", "s3cret")
        assert run(capsys, tmp_path, file, mapping, route.url, "--restart")[0] == 0


def test_a_refused_request_is_a_client_bug(capsys, tmp_path, route, mapping, waits):
    route.refuse_with = (422, {"error": "validation_error", "message": "rows[0].stage: unknown stage"})
    code, _, err = run(capsys, tmp_path, export(tmp_path, 2), mapping, route.url)
    assert code == 1
    assert "422 validation_error: rows[0].stage: unknown stage" in err
    assert "bug in leadflow import" in err
    assert waits == []


def test_a_url_without_the_route(capsys, tmp_path, route, mapping, waits):
    code, _, err = run(capsys, tmp_path, export(tmp_path, 1), mapping, route.url + "/elsewhere/")
    assert code == 1
    assert f"{route.url}/elsewhere/v1/import answered 404 not_found: /elsewhere/v1/import: is this a leadflow API" in err


def test_an_unknown_column_stops_before_sending(capsys, tmp_path, route, mapping, waits):
    file = tmp_path / "other.csv"
    file.write_text("Id;E-mail\nc-1;a@acme.example\n", encoding="utf-8")
    code, _, err = run(capsys, tmp_path, file, mapping, route.url)
    assert code == 2
    assert "email: unknown column 'Email' (did you mean 'E-mail'?)" in err
    assert "the file's columns: 'Id', 'E-mail'" in err
    assert route.attempts == 0


def test_the_target_defaults_to_the_running_leadflow_serve(capsys, tmp_path, route, mapping, waits):
    data = tmp_path / "data"
    data.mkdir()
    (data / "stack.json").write_text(json.dumps({"api_url": route.url}), encoding="utf-8")
    code = main(["import", str(export(tmp_path, 1)), "--mapping", str(mapping), "--data-dir", str(data), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["url"] == route.url + "/v1/import"
    assert len(route.rows) == 1
    with pytest.raises(SystemExit, match="no running leadflow serve"):
        main(["import", str(export(tmp_path, 1)), "--mapping", str(mapping), "--data-dir", str(tmp_path / "none")])
