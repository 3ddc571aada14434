"""Import mappings (infra/mapping.py) and reading the export (infra/importer.py's CSV side)."""

from __future__ import annotations

import functools

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from leadflow_infra.importer import CsvSource, ImportFailed, detect_delimiter, run_import
from leadflow_infra.mapping import MappingError, RowMapper, RowRejected, event_id, load_mapping

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)

HEADER = ["Prospect ID", "Lead Number", "Email", "Occupation", "Country", "TotalVisits", "Time on Site",
          "Last Activity", "Lifecycle Stage", "Converted", "Amount", "Closed", "Owner"]

BASE = """
mapping: 1
name: x-education
key: Prospect ID
null_values: ["", "Select", "NaN", "null"]
email: Email
"""


def mapping_file(tmp_path: Path, text: str, name: str = "map.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def mapper(tmp_path: Path, extra: str = "", *, base: str = BASE, header: list[str] = HEADER) -> RowMapper:
    path = mapping_file(tmp_path, base + extra)
    return RowMapper(load_mapping(path), header, source=str(path))


def cells(**values: str) -> list[str]:
    """A record in HEADER's order; keyword names are the columns with spaces as _."""
    row = {"Prospect ID": "p-1", "Email": "jane@acme.example"}
    row.update({k.replace("_", " "): v for k, v in values.items()})
    return [row.get(column, "") for column in HEADER]


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(MappingError) as caught:
        load_mapping(mapping_file(tmp_path, text))
    return caught.value.problems


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("extra", "expected"), [
    ("traits:\n  job: {column: Occupation, value: x}\n",
     "traits.job: give exactly one of column, value, template (not column and value)"),
    ("events:\n  - type: page_viewed\n  - type: page_viewed\n    when: {column: TotalVisits, gt: 0, lt: 3}\n",
     "events[1].when: give the column and exactly one of equals, in, not_in, gt, gte, lt, lte, present (not gt and lt)"),
    ("events:\n  - type: page_viewed\n    colour: blue\n", "events[0].colour: unknown field"),
    ("events:\n  - type: Page Viewed\n", "events[0].type: 'Page Viewed' is not an event type"),
    ("events:\n  - when: {column: TotalVisits, present: true}\n", "events[0].type: required"),
    ("traits:\n  job: {column: Occupation, map_missing: keep}\n", "traits.job: map_missing needs a map"),
    ("traits:\n  job: {value: x, map: {a: b}}\n", "traits.job: map applies to a column"),
    ("traits:\n  n: {column: Amount, type: number, format: '%d'}\n", "traits.n: format applies to dates, not to type: number"),
    ("traits:\n  n: {column: Amount, type: integer}\n", "traits.n.type: Input should be"),
    ("traits:\n  t: {template: 'a {Lead Number'}\n", "traits.t: unmatched '{'"),
    ("traits:\n  t: {template: 'no columns'}\n", "traits.t: names no column"),
    ("traits:\n  n: 3\n", "traits.n: expected a column name, or a mapping with one of column, value, template"),
    ("occurred_at: {column: Closed, type: number}\n", "occurred_at: is a date; type: number does not fit"),
    ("occurred_at: {value: yesterday}\n", "occurred_at: value 'yesterday': not an ISO 8601 date"),
    ("stage: {value: champion}\n", "stage: value 'champion': expected one of subscriber, lead, mql"),
    ("outcome:\n  result: {value: draw}\n", "outcome.result: value 'draw': expected one of won, lost"),
    ("outcome:\n  at: Closed\n", "outcome.result: required"),
    ("outcome:\n  result: Converted\n  value: {column: Amount, type: date}\n", "outcome.value: is a number"),
])
def test_mapping_errors_name_their_location(tmp_path, extra, expected):
    found = problems(tmp_path, BASE + extra)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once(tmp_path):
    found = problems(tmp_path, "mapping: 2\nname: 'a:b'\nkey: []\ncolour: red\n")
    assert found[0].startswith("mapping: unsupported format version 2; this leadflow reads mapping: 1")
    assert any(p.startswith("name: 1 to 64 letters") for p in found)
    assert any(p.startswith("key: ") for p in found)
    assert "email: required" in found
    assert "colour: unknown field" in found


def test_a_mapping_that_is_not_a_yaml_mapping(tmp_path):
    assert problems(tmp_path, "- a\n- b\n")[0].startswith("the mapping must be a YAML mapping")
    assert problems(tmp_path, "mapping: [1\n")[0].startswith("line ")


def test_unknown_columns_are_listed_with_the_files_columns(tmp_path):
    path = mapping_file(tmp_path, BASE + "traits:\n  job: occupation\nevents:\n  - type: page_viewed\n"
                                         "    when: {column: Visits, gt: 0}\n")
    with pytest.raises(MappingError) as caught:
        RowMapper(load_mapping(path), HEADER, source=str(path))
    error = caught.value
    assert error.problems == ["traits.job: unknown column 'occupation' (did you mean 'Occupation'?)",
                              "events[0].when: unknown column 'Visits'"]
    assert error.hint.startswith("the file's columns: 'Prospect ID', 'Lead Number', 'Email'")
    assert str(error).startswith(f"{path}: traits.job: unknown column")


def test_the_mapping_is_checked_before_any_row_is_read(tmp_path):
    export = tmp_path / "export.csv"
    export.write_text("Prospect ID,Email\np-1,jane@acme.example\n", encoding="utf-8")
    bad = mapping_file(tmp_path, BASE + "traits:\n  job: Occupation\n")
    # Nothing listens on port 9: had a row been read and sent, this would fail differently.
    with pytest.raises(ImportFailed) as caught:
        run_import(export, bad, url="http://127.0.0.1:9", data_dir=tmp_path / "data")
    assert caught.value.exit_code == 2
    assert "traits.job: unknown column 'Occupation'" in caught.value.message
    assert not (tmp_path / "data").exists()


def test_yaml_yes_and_no_stay_text(tmp_path):
    m = mapper(tmp_path, "outcome:\n  result: {column: Converted, map: {Yes: won, No: lost, 1: won}}\n")
    assert m.map_row(2, cells(Converted="yes"), now=NOW)["outcome"]["result"] == "won"
    assert m.map_row(2, cells(Converted="No"), now=NOW)["outcome"]["result"] == "lost"
    assert m.map_row(2, cells(Converted="1"), now=NOW)["outcome"]["result"] == "won"


# ---------------------------------------------------------------- values


def traits(m: RowMapper, **values: str) -> dict:
    return m.map_row(2, cells(**values), now=NOW)["events"][0]["traits"]


def test_column_value_and_template_specs(tmp_path):
    m = mapper(tmp_path, """
traits:
  job: Occupation
  country: {column: Country}
  source: {value: x-education}
  score: {value: 12}
  login: {template: "{Lead Number}@x-education.example"}
  braces: {template: "{{{Lead Number}}}"}
""")
    assert traits(m, Occupation=" Student ", Country="India", Lead_Number="660737") == {
        "job": "Student", "country": "India", "source": "x-education", "score": 12,
        "login": "660737@x-education.example", "braces": "{660737}"}
    # An empty referenced cell empties the template; empty values are left out.
    assert traits(m, Occupation="", Lead_Number="") == {"source": "x-education", "score": 12}


def test_map_with_default_keep_and_case_insensitive_keys(tmp_path):
    m = mapper(tmp_path, """
traits:
  plain: {column: Occupation, map: {Student: student, Working Professional: professional}}
  defaulted: {column: Occupation, map: {Student: student}, default: other}
  kept: {column: Occupation, map: {Student: student}, map_missing: keep}
  exact_first: {column: Country, map: {india: lower, India: exact}}
""")
    assert traits(m, Occupation="working professional", Country="India") == {
        "plain": "professional", "defaulted": "other", "kept": "working professional", "exact_first": "exact"}
    assert traits(m, Occupation=" STUDENT ", Country="INDIA") == {
        "plain": "student", "defaulted": "student", "kept": "student", "exact_first": "lower"}
    # A cell the map does not name, without default or keep, is empty; so is an empty cell.
    assert "plain" not in traits(m, Occupation="Housewife")
    assert traits(m, Occupation="Select", Country="") == {}


@pytest.mark.parametrize(("cell", "value"), [("1,200", 1200), ("1,200.5", 1200.5), ("-3", -3), ("12.50", 12.5),
                                             ("1e3", 1000.0), (" 7 ", 7)])
def test_numbers(tmp_path, cell, value):
    m = mapper(tmp_path, "traits:\n  n: {column: Amount, type: number}\n")
    assert traits(m, Amount=cell) == {"n": value}


@pytest.mark.parametrize("cell", ["1,2", "12abc", "inf", "$5", "."])
def test_a_bad_number_rejects_the_row_naming_the_column(tmp_path, cell):
    m = mapper(tmp_path, "traits:\n  n: {column: Amount, type: number}\n")
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Amount=cell), now=NOW)
    assert caught.value.field == "Amount"
    assert caught.value.reason.startswith("traits.n: not a ")
    assert repr(cell) in caught.value.reason


@pytest.mark.parametrize(("cell", "fmt", "iso"), [
    ("2026-03-04T05:06:07Z", None, "2026-03-04T05:06:07+00:00"),
    ("2026-03-04T07:06:07+02:00", None, "2026-03-04T05:06:07+00:00"),
    ("2026-03-04 05:06", None, "2026-03-04T05:06:00+00:00"),  # no zone: UTC
    ("2026-03-04", None, "2026-03-04T00:00:00+00:00"),
    ("04/03/2026 17:30", "%d/%m/%Y %H:%M", "2026-03-04T17:30:00+00:00"),
])
def test_dates_are_iso_in_utc(tmp_path, cell, fmt, iso):
    spec = "{column: Closed, type: date}" if fmt is None else f"{{column: Closed, format: '{fmt}'}}"
    m = mapper(tmp_path, f"traits:\n  closed: {spec}\nstage_at: {spec}\nstage: {{value: customer}}\n")
    row = m.map_row(2, cells(Closed=cell), now=NOW)
    assert row["events"][0]["traits"] == {"closed": iso}
    assert row["stage_at"] == iso


def test_a_bad_date_rejects_the_row(tmp_path):
    m = mapper(tmp_path, "occurred_at: {column: Closed, format: '%d/%m/%Y'}\n")
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Closed="2026-03-04"), now=NOW)
    assert caught.value.field == "Closed"
    assert caught.value.reason == "occurred_at: not a date in the format '%d/%m/%Y': '2026-03-04'"


def test_booleans_and_text(tmp_path):
    m = mapper(tmp_path, "traits:\n  flag: {column: Converted, type: boolean}\n  text: {column: Amount, type: text}\n")
    assert traits(m, Converted="Yes", Amount="0012") == {"flag": True, "text": "0012"}
    assert traits(m, Converted="0") == {"flag": False}
    with pytest.raises(RowRejected, match="traits.flag: not true or false: 'maybe'"):
        m.map_row(2, cells(Converted="maybe"), now=NOW)


def test_null_values_apply_to_every_cell(tmp_path):
    m = mapper(tmp_path, """
traits:
  job: Occupation
  n: {column: Amount, type: number}
events:
  - type: page_viewed
    when: {column: TotalVisits, present: true}
""")
    row = m.map_row(2, cells(Occupation=" select ", Amount="NaN", TotalVisits="NULL"), now=NOW)
    assert row["events"][0]["traits"] == {}  # "NaN" is empty, not a number that fails
    assert [e["type"] for e in row["events"]] == ["identify"]
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Email="Select"), now=NOW)
    assert caught.value.field == "Email"


# ---------------------------------------------------------------- events


def types(m: RowMapper, **values: str) -> list[str]:
    return [e["type"] for e in m.map_row(2, cells(**values), now=NOW)["events"]]


@pytest.mark.parametrize(("when", "matching", "not_matching"), [
    ("{column: TotalVisits, gt: 0}", ["1", "1,000"], ["0", "", "Select"]),
    ("{column: TotalVisits, gte: 2}", ["2", "2.5"], ["1.9"]),
    ("{column: TotalVisits, lt: 2}", ["1", "-4"], ["2", ""]),
    ("{column: TotalVisits, lte: 2}", ["2"], ["3"]),
    ("{column: Last Activity, equals: Email Opened}", ["Email Opened", " email opened "], ["Email Bounced", ""]),
    ("{column: TotalVisits, equals: 3}", ["3", "3.0"], ["4", "three"]),
    ("{column: Last Activity, in: [Email Opened, Page Visited]}", ["page visited"], ["Email Bounced", ""]),
    ("{column: Last Activity, not_in: [Email Bounced]}", ["Email Opened", ""], ["email bounced"]),
    ("{column: Last Activity, present: true}", ["x"], ["", "null"]),
    ("{column: Last Activity, present: false}", ["", "NaN"], ["x"]),
])
def test_when_filters(tmp_path, when, matching, not_matching):
    m = mapper(tmp_path, f"events:\n  - type: page_viewed\n    when: {when}\n")
    column = "TotalVisits" if "TotalVisits" in when else "Last_Activity"
    for cell in matching:
        assert types(m, **{column: cell}) == ["identify", "page_viewed"], cell
    for cell in not_matching:
        assert types(m, **{column: cell}) == ["identify"], cell


def test_a_comparison_on_text_rejects_the_row(tmp_path):
    m = mapper(tmp_path, "events:\n  - type: page_viewed\n    when: {column: TotalVisits, gt: 0}\n")
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(TotalVisits="many"), now=NOW)
    assert (caught.value.field, caught.value.reason) == ("TotalVisits", "events[0].when: not a number: 'many'")


def test_event_type_from_a_column(tmp_path):
    m = mapper(tmp_path, """
events:
  - type: {column: Last Activity, map: {Email Opened: email_opened, Page Visited on Website: page_viewed}}
  - type: {column: Occupation, map_missing: keep, map: {}}
""")
    assert types(m, Last_Activity="email opened") == ["identify", "email_opened"]
    assert types(m, Last_Activity="Unreachable") == ["identify"]  # not in the map: no event
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Occupation="Working Professional"), now=NOW)
    assert caught.value.field == "Occupation"
    assert caught.value.reason.startswith("events[1].type: unknown event type")


def test_the_row_payload(tmp_path):
    m = mapper(tmp_path, """
occurred_at: {column: Closed, type: date}
traits:
  job: Occupation
events:
  - type: site_visit
    when: {column: TotalVisits, gt: 0}
    properties:
      visits: {column: TotalVisits, type: number}
      seconds: {column: Time on Site, type: number}
  - type: email_opened
    occurred_at: {value: "2026-01-02T03:04:05Z"}
stage: {column: Lifecycle Stage, map: {Customer: customer, Marketing Qualified Lead: mql}}
stage_at: {column: Closed, type: date}
outcome:
  result: {column: Converted, map: {"1": won, "0": lost}}
  reason: {value: Closed by the import}
  value: Amount
owner: Owner
""")
    row = m.map_row(7, cells(Email=" Jane@ACME.example ", Occupation="Student", TotalVisits="3", Time_on_Site="1,200",
                             Lifecycle_Stage="customer", Converted="1", Amount="5,000", Closed="2026-02-03",
                             Owner="ana@sales.example"), now=NOW)
    ids = [f"import:x-education:{hashlib.sha256(b'p-1').hexdigest()[:24]}:{n}" for n in range(3)]
    at = "2026-02-03T00:00:00+00:00"
    assert row == {
        "row": 7,
        "key": "import:x-education:p-1",
        "events": [
            {"event_id": ids[0], "type": "identify", "occurred_at": at, "email": "jane@acme.example",
             "properties": {}, "traits": {"job": "Student"}},
            {"event_id": ids[1], "type": "site_visit", "occurred_at": at, "email": "jane@acme.example",
             "properties": {"visits": 3, "seconds": 1200}, "traits": {}},
            {"event_id": ids[2], "type": "email_opened", "occurred_at": "2026-01-02T03:04:05+00:00",
             "email": "jane@acme.example", "properties": {}, "traits": {}},
        ],
        "stage": "customer",
        "stage_at": at,
        "outcome": {"result": "won", "at": at, "reason": "Closed by the import", "value": 5000},
        "owner": "ana@sales.example",
    }
    # Without a time of its own, a row's events are dated `now`; no stage, no outcome.
    row = m.map_row(8, cells(Converted="2"), now=NOW)
    assert {e["occurred_at"] for e in row["events"][:1]} == {NOW.isoformat()}
    assert (row["stage"], row["stage_at"], row["outcome"], row["owner"]) == (None, None, None, None)


def test_stable_event_ids(tmp_path):
    m = mapper(tmp_path, "events:\n  - type: page_viewed\n    when: {column: TotalVisits, gt: 0}\n"
                         "  - type: email_opened\n")
    first = m.map_row(5, cells(TotalVisits="0"), now=NOW)
    again = m.map_row(5, cells(TotalVisits="0"), now=NOW)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    # n is the event spec's index, so a filtered-out event does not shift the others.
    assert [e["event_id"][-2:] for e in first["events"]] == [":0", ":2"]
    assert first["events"][1]["event_id"] == event_id("x-education", "p-1", 2)
    other = mapper(tmp_path, "events:\n  - type: page_viewed\n    when: {column: TotalVisits, gt: 0}\n"
                             "  - type: email_opened\n", base=BASE.replace("x-education", "hubspot-2026"))
    renamed = other.map_row(5, cells(TotalVisits="0"), now=NOW)
    assert renamed["key"] == "import:hubspot-2026:p-1"
    assert not {e["event_id"] for e in renamed["events"]} & {e["event_id"] for e in first["events"]}
    # Another row key, other ids.
    assert m.map_row(5, cells(Prospect_ID="p-2"), now=NOW)["events"][0]["event_id"] != first["events"][0]["event_id"]


def test_a_key_of_several_columns(tmp_path):
    m = mapper(tmp_path, base=BASE.replace("key: Prospect ID", "key: [Prospect ID, Lead Number]"))
    row = m.map_row(2, cells(Lead_Number="660737"), now=NOW)
    assert row["key"] == 'import:x-education:["p-1","660737"]'
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(), now=NOW)
    assert caught.value.field == "Lead Number"


def test_rows_the_client_rejects(tmp_path):
    m = mapper(tmp_path, "stage: Lifecycle Stage\noutcome:\n  result: Converted\n")
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Email=""), now=NOW)
    assert (caught.value.field, caught.value.reason) == (
        "Email", "email: empty; a row without an email cannot be imported")
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Email="not an email"), now=NOW)
    assert (caught.value.field, caught.value.reason) == (
        "Email", "email: not an email address: An email address must have an @-sign.")
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Prospect_ID=" "), now=NOW)
    assert caught.value.field == "Prospect ID"
    with pytest.raises(RowRejected, match="stage: not a stage: 'marketing qualified lead'"):
        m.map_row(2, cells(Lifecycle_Stage="Marketing Qualified Lead"), now=NOW)
    with pytest.raises(RowRejected, match="outcome.result: expected won or lost: 'maybe'"):
        m.map_row(2, cells(Converted="maybe"), now=NOW)
    assert m.map_row(2, cells(Lifecycle_Stage="SQL", Converted="Lost"), now=NOW)["stage"] == "sql"


# ---------------------------------------------------------------- the file


@pytest.mark.parametrize(("line", "delimiter"), [
    ("Prospect ID,Email,Country\r\n", ","),
    ("Prospect ID;Email;Country\n", ";"),
    ("Prospect ID\tEmail\tCountry\n", "\t"),
    ('"Amount, USD";"Email";"Notes, free text"\n', ";"),  # commas inside quotes do not count
    ("Email\n", ","),
])
def test_delimiter_detection(line, delimiter):
    assert detect_delimiter(line) == delimiter


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_reading_an_export(tmp_path, newline, delimiter):
    text = newline.join([
        delimiter.join(["Prospect ID", "Email", "Notes"]),
        delimiter.join(["p-1", "a@acme.example", '"two' + newline + 'lines"']),  # one record, two lines
        "",  # a blank line: row 3, skipped
        delimiter.join(["", "", ""]),  # only separators: row 4, skipped
        delimiter.join(["p-2", "b@acme.example", "é"]),
    ]) + newline
    path = tmp_path / "export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # Excel's BOM
    source = CsvSource(path)
    assert source.delimiter == delimiter
    assert source.header == ["Prospect ID", "Email", "Notes"]
    assert list(source.rows()) == [(2, ["p-1", "a@acme.example", f"two{newline}lines"]),
                                   (5, ["p-2", "b@acme.example", "é"])]
    assert source.count() == 2


def test_files_that_cannot_be_read(tmp_path):
    from leadflow_infra.importer import CsvError

    latin = tmp_path / "latin.csv"
    latin.write_bytes("Email\nj\xe9r\xf4me@acme.example\n".encode("latin-1"))
    with pytest.raises(CsvError, match="not UTF-8"):
        list(CsvSource(latin).rows())
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CsvError, match="no header row"):
        CsvSource(empty)
    with pytest.raises(CsvError, match="cannot read"):
        CsvSource(tmp_path / "missing.csv")


# ---------------------------------------------------------------- a list of columns, if_empty


def test_a_list_of_columns_reads_the_first_non_empty_cell(tmp_path):
    m = mapper(tmp_path, """
traits:
  where: {column: [Occupation, Country]}
  mapped: {column: [Occupation, Country], map: {Student: student, India: IN}}
  n: {column: [Amount, TotalVisits], type: number}
stage: {value: customer}
stage_at: {column: [Closed, Last Activity], type: date}
""")
    assert traits(m, Occupation="Student", Country="India", Amount="3") == {"where": "Student", "mapped": "student",
                                                                           "n": 3}
    # Blank and null cells are skipped; the map applies to the cell chosen.
    assert traits(m, Occupation=" Select ", Country="India", TotalVisits="5") == {"where": "India", "mapped": "IN",
                                                                                 "n": 5}
    assert traits(m) == {}
    row = m.map_row(2, cells(Last_Activity="2026-01-02"), now=NOW)
    assert row["stage_at"] == "2026-01-02T00:00:00+00:00"
    # A bad cell names the column it came from.
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(TotalVisits="many"), now=NOW)
    assert (caught.value.field, caught.value.reason) == ("TotalVisits", "traits.n: not a number: 'many'")


def test_every_listed_column_is_checked_against_the_header(tmp_path):
    path = mapping_file(tmp_path, BASE + "traits:\n  where: {column: [Occupation, Contry]}\n")
    with pytest.raises(MappingError) as caught:
        RowMapper(load_mapping(path), HEADER, source=str(path))
    assert caught.value.problems == ["traits.where: unknown column 'Contry' (did you mean 'Country'?)"]


@pytest.mark.parametrize(("extra", "expected"), [
    ("traits:\n  x: {column: []}\n", "traits.x.column: give at least one column"),
    ("traits:\n  x: {column: [Occupation, 3]}\n", "traits.x.column: a list of column names"),
    ("traits:\n  x: {column: ''}\n", "traits.x.column: a column name cannot be empty"),
    # The shorthand is one column: a bare list is not a VALUE spec.
    ("traits:\n  x: [Occupation, Country]\n", "traits.x: expected a column name, or a mapping"),
    ("traits:\n  x: {value: a, if_empty: b}\n", "traits.x: if_empty applies to a column or a lookup"),
    ("traits:\n  x: {template: '{Email}', if_empty: b}\n", "traits.x: if_empty applies to a column or a lookup"),
    ("traits:\n  x: {column: Occupation, if_empty: null}\n", "traits.x: if_empty: give a constant"),
    ("traits:\n  n: {column: Amount, type: number, if_empty: many}\n", "traits.n: if_empty 'many': not a number"),
    ("occurred_at: {column: Closed, if_empty: soon}\n", "occurred_at: if_empty 'soon': not an ISO 8601 date"),
    ("stage: {column: Lifecycle Stage, if_empty: champion}\n", "stage: if_empty 'champion': expected one of"),
    ("outcome:\n  result: {column: Converted, if_empty: draw}\n", "outcome.result: if_empty 'draw': expected one of"),
])
def test_list_and_if_empty_errors(tmp_path, extra, expected):
    found = problems(tmp_path, BASE + extra)
    assert any(p.startswith(expected) for p in found), found


def test_if_empty_is_the_value_of_an_empty_source(tmp_path):
    m = mapper(tmp_path, """
occurred_at: {column: Closed, type: date, if_empty: "2017-12-31"}
traits:
  job: {column: Occupation, map: {Student: student, unknown: mapped}, default: other, if_empty: unknown}
  n: {column: Amount, type: number, if_empty: "0"}
  first: {column: [Country, Owner], if_empty: nowhere}
""")
    row = m.map_row(2, cells(), now=NOW)
    assert row["events"][0]["occurred_at"] == "2017-12-31T00:00:00+00:00"
    # Not mapped (the map's "unknown" is for cells), converted by type.
    assert row["events"][0]["traits"] == {"job": "unknown", "n": 0, "first": "nowhere"}
    # Null values are empty too; `default` stays for cells the map does not name.
    assert traits(m, Occupation="Select", Amount="NaN", Owner="ana") == {"job": "unknown", "n": 0, "first": "ana"}
    assert traits(m, Occupation="Housewife", Amount="7")["job"] == "other"
    assert traits(m, Occupation="student")["job"] == "student"
    assert m.map_row(2, cells(Closed="2026-02-03"), now=NOW)["events"][0]["occurred_at"] == "2026-02-03T00:00:00+00:00"


def test_a_mapping_without_the_new_fields_keeps_its_digest():
    # What load_mapping gave for examples/x-education/mapping.yaml before lists, if_empty
    # and lookups existed: an interrupted import of it still resumes.
    mapping = load_mapping(ROOT / "examples" / "x-education" / "mapping.yaml")
    assert mapping.digest() == "9034226debb6493552f42971bb3583230549099f33074c6c4827d1fc3ee4550d"


# ---------------------------------------------------------------- lookups


LOOKUPS = """
lookups:
  owners: {file: owners.csv, key: email, on: Owner}
  countries:
    file: countries.csv
    key: Country
    on: {column: Country, map: {UK: United Kingdom}, map_missing: keep}
"""


def lookup_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # Read like the export: a BOM, `;` detected, keys trimmed, the first of a duplicate key wins.
    (folder / "owners.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join([
        "email;name;nickname;region;headcount",
        " ana@sales.example ;Ana Lopez;;EMEA;12",
        "bo@sales.example;Bo Chen;Bo;NaN;many",
        "ana@sales.example;Ana Again;;APAC;1",
        ";Nobody;;Nowhere;0",
    ]).encode("utf-8") + b"\r\n")
    (folder / "countries.csv").write_text("Country,Code\nIndia,IN\nUnited Kingdom,GB\n", encoding="utf-8")


def lookup_mapper(tmp_path: Path, extra: str, *, lookups: str = LOOKUPS, base_dir: Path | None = None) -> RowMapper:
    lookup_files(tmp_path / "data")
    path = mapping_file(tmp_path, BASE + lookups + extra)
    return RowMapper(load_mapping(path), HEADER, source=str(path), base_dir=tmp_path / "data" if base_dir is None
                     else base_dir)


def test_lookups_join_rows_of_other_files(tmp_path):
    m = lookup_mapper(tmp_path, """
traits:
  owner: {lookup: owners, column: name}
  called: {lookup: owners, column: [nickname, name]}
  region: {lookup: owners, column: region, map: {EMEA: europe}, map_missing: keep, if_empty: unknown}
  code: {lookup: countries, column: Code}
owner: {lookup: owners, column: name}
""")
    row = m.map_row(2, cells(Owner="ana@sales.example", Country="UK"), now=NOW)
    assert row["events"][0]["traits"] == {"owner": "Ana Lopez", "called": "Ana Lopez", "region": "europe",
                                          "code": "GB"}
    assert row["owner"] == "Ana Lopez"
    # The lookup file's null values are empty too: if_empty applies.
    assert traits(m, Owner=" bo@sales.example", Country="India") == {"owner": "Bo Chen", "called": "Bo",
                                                                     "region": "unknown", "code": "IN"}
    # No matching row, or an empty `on` cell: every value read through the lookup is empty.
    assert traits(m, Owner="zed@sales.example", Country="France") == {"region": "unknown"}
    assert traits(m, Owner="", Country="Select") == {"region": "unknown"}
    # Keys match exactly (after trimming).
    assert traits(m, Owner="ANA@sales.example") == {"region": "unknown"}


def test_a_bad_cell_in_a_lookup_file_names_the_lookup_and_column(tmp_path):
    m = lookup_mapper(tmp_path, "traits:\n  staff: {lookup: owners, column: headcount, type: number}\n")
    assert traits(m, Owner="ana@sales.example") == {"staff": 12}
    with pytest.raises(RowRejected) as caught:
        m.map_row(2, cells(Owner="bo@sales.example"), now=NOW)
    assert (caught.value.field, caught.value.reason) == ("owners.headcount", "traits.staff: not a number: 'many'")


def test_lookup_files_are_found_beside_the_export_or_by_an_absolute_path(tmp_path):
    extra = "traits:\n  code: {lookup: countries, column: Code}\n"
    m = lookup_mapper(tmp_path, extra)
    assert traits(m, Country="India") == {"code": "IN"}
    absolute = LOOKUPS.replace("file: countries.csv", f"file: '{tmp_path / 'data' / 'countries.csv'}'")
    absolute = absolute.replace("file: owners.csv", f"file: '{tmp_path / 'data' / 'owners.csv'}'")
    m = lookup_mapper(tmp_path, extra, lookups=absolute, base_dir=tmp_path / "elsewhere")
    assert traits(m, Country="India") == {"code": "IN"}


def test_the_digest_covers_the_lookup_files(tmp_path):
    m = lookup_mapper(tmp_path, "traits:\n  code: {lookup: countries, column: Code}\n")
    first = m.digest()
    assert first != m.mapping.digest()
    assert lookup_mapper(tmp_path, "traits:\n  code: {lookup: countries, column: Code}\n").digest() == first
    (tmp_path / "data" / "countries.csv").write_text("Country,Code\nIndia,IND\n", encoding="utf-8")
    path = tmp_path / "map.yaml"
    changed = RowMapper(load_mapping(path), HEADER, base_dir=tmp_path / "data")
    assert changed.digest() != first
    assert mapper(tmp_path).digest() == mapper(tmp_path).mapping.digest()  # no lookups: the mapping's own


@pytest.mark.parametrize(("extra", "expected"), [
    ("traits:\n  r: {lookup: owner, column: region}\n", "traits.r: unknown lookup 'owner' (did you mean 'owners'?)"),
    ("traits:\n  r: {lookup: teams, column: region}\n",
     "traits.r: unknown lookup 'teams' (the mapping's lookups: owners, countries)"),
    ("events:\n  - type: page_viewed\n    properties:\n      r: {lookup: x, column: region}\n",
     "events[0].properties.r: unknown lookup 'x'"),
    ("traits:\n  r: {lookup: owners}\n", "traits.r: lookup needs column: the lookup file's column to read"),
    ("traits:\n  r: {lookup: owners, value: x}\n", "traits.r: lookup needs column: the lookup file's column to read "
                                                   "(not value)"),
    ("traits:\n  r: {lookup: owners, template: '{Email}'}\n", "traits.r: lookup needs column"),
])
def test_lookup_errors_in_value_specs(tmp_path, extra, expected):
    found = problems(tmp_path, BASE + LOOKUPS + extra)
    assert any(p.startswith(expected) for p in found), found


def test_a_lookup_without_a_lookups_section(tmp_path):
    found = problems(tmp_path, BASE + "owner: {lookup: owners, column: name}\n")
    assert found == ["owner: unknown lookup 'owners' (the mapping has no lookups: section)"]


@pytest.mark.parametrize(("lookups", "expected"), [
    ("lookups:\n  owners: {file: owners.csv, on: Owner}\n", "lookups.owners.key: required"),
    ("lookups:\n  owners: {file: owners.csv, key: email, on: Owner, join: left}\n",
     "lookups.owners.join: unknown field"),
    ("lookups:\n  owners: {file: owners.csv, key: email, on: {value: x}}\n",
     "lookups.owners.on: give a column of this"),
    ("lookups:\n  owners: {file: owners.csv, key: email, on: {lookup: owners, column: email}}\n",
     "lookups.owners.on: reads this file's columns"),
    ("lookups:\n  my owners: {file: owners.csv, key: email, on: Owner}\n", "lookups: lookup name 'my owners'"),
])
def test_lookup_section_errors(tmp_path, lookups, expected):
    found = problems(tmp_path, BASE + lookups)
    assert any(p.startswith(expected) for p in found), found


def test_columns_are_checked_against_each_lookup_files_header(tmp_path):
    lookups = LOOKUPS.replace("key: email", "key: mail").replace("on: Owner", "on: Owner Email")
    with pytest.raises(MappingError) as caught:
        lookup_mapper(tmp_path, "traits:\n  r: {lookup: owners, column: [nickname, regoin]}\n"
                                "  c: {lookup: countries, column: Code}\n", lookups=lookups)
    error = caught.value
    assert error.problems == [
        "lookups.owners.on: unknown column 'Owner Email'",
        "lookups.owners.key: unknown column 'mail' in owners.csv (did you mean 'email'?)",
        "traits.r: unknown column 'regoin' in owners.csv (did you mean 'region'?)",
    ]
    assert error.hint.splitlines() == [
        "the file's columns: " + ", ".join(repr(h) for h in HEADER),
        "owners.csv's columns: 'email', 'name', 'nickname', 'region', 'headcount'",
    ]


def test_a_missing_lookup_file_is_a_mapping_error(tmp_path):
    lookups = LOOKUPS.replace("file: owners.csv", "file: people.csv")
    with pytest.raises(MappingError) as caught:
        lookup_mapper(tmp_path, "traits:\n  r: {lookup: owners, column: region}\n", lookups=lookups)
    [problem] = caught.value.problems
    assert problem.startswith("lookups.owners.file: cannot read ")
    assert problem.endswith("people.csv: No such file or directory")


def test_run_import_reads_lookups_beside_the_export_before_sending(tmp_path, monkeypatch):
    lookup_files(tmp_path / "data")
    export = tmp_path / "data" / "export.csv"
    export.write_text("Prospect ID,Email,Owner\np-1,jane@acme.example,ana@sales.example\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the export's directory
    bad = mapping_file(tmp_path, BASE + LOOKUPS.replace("on: {column: Country, map: {UK: United Kingdom}, "
                                                        "map_missing: keep}", "on: Owner")
                       + "traits:\n  r: {lookup: owners, column: regoin}\n")
    # Nothing listens on port 9: had a row been read and sent, this would fail differently.
    with pytest.raises(ImportFailed) as caught:
        run_import(export, bad, url="http://127.0.0.1:9", data_dir=tmp_path / "state")
    assert caught.value.exit_code == 2
    assert "traits.r: unknown column 'regoin' in owners.csv (did you mean 'region'?)" in caught.value.message
    assert not (tmp_path / "state").exists()
    (tmp_path / "data" / "owners.csv").unlink()
    with pytest.raises(ImportFailed) as caught:
        run_import(export, bad, url="http://127.0.0.1:9", data_dir=tmp_path / "state")
    assert caught.value.exit_code == 2
    assert f"lookups.owners.file: cannot read {tmp_path / 'data' / 'owners.csv'}" in caught.value.message


# ---------------------------------------------------------------- the examples on the shared data


ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
X_EDUCATION = SHARED / "leads-x-education.csv"
MAVEN = SHARED / "maven-crm" / "sales_pipeline.csv"


@functools.lru_cache(maxsize=None)
def map_file(mapping_path: Path, data: Path) -> tuple[list[dict], list[str], list[tuple[int, RowRejected]]]:
    """Each example file mapped once per test process (several tests read the same rows; none changes them)."""
    source = CsvSource(data)
    m = RowMapper(load_mapping(mapping_path), source.header, source=str(mapping_path), base_dir=data.parent)
    rows, records, rejected = [], [], []
    for number, record in source.rows():
        try:
            rows.append(m.map_row(number, record, now=NOW))
            records.append(dict(zip(source.header, record)))
        except RowRejected as exc:
            rejected.append((number, exc))
    return rows, records, rejected


@pytest.mark.skipif(not MAVEN.exists(), reason=f"{MAVEN} is not there")
def test_the_b2b_saas_example_maps_every_opportunity():
    rows, records, rejected = map_file(ROOT / "examples" / "b2b-saas" / "mapping.yaml", MAVEN)
    assert rejected == []
    assert len(rows) == 8800
    stages = {"Won": 0, "Lost": 0, "Engaging": 0, "Prospecting": 0}
    for row, record in zip(rows, records):
        stage = record["deal_stage"]
        stages[stage] += 1
        identify, opened = row["events"]
        assert row["key"] == f"import:b2b-saas:{record['opportunity_id']}"
        assert identify["email"] == f"opp-{record['opportunity_id'].lower()}@maven-crm.example"
        assert row["owner"] == record["sales_agent"]
        assert identify["traits"]["region"] in ("Central", "East", "West")
        if stage == "Won":
            assert row["stage"] == "customer"
            assert row["outcome"] == {"result": "won", "at": f"{record['close_date']}T00:00:00+00:00",
                                      "reason": None, "value": int(record["close_value"])}
            assert row["stage_at"] == row["outcome"]["at"]
        elif stage == "Lost":
            assert (row["stage"], row["outcome"]["result"], row["outcome"]["value"]) == ("lead", "lost", 0)
        elif stage == "Engaging":
            assert (row["stage"], row["outcome"]) == ("opportunity", None)
            assert row["stage_at"] == f"{record['engage_date']}T00:00:00+00:00"
        else:
            assert (row["stage"], row["outcome"]) == ("sql", None)
            assert row["stage_at"] == identify["occurred_at"] == opened["occurred_at"] == "2017-12-31T00:00:00+00:00"
        if record["account"]:
            traits = identify["traits"]
            assert traits["company"] == record["account"]
            assert {"industry", "company_size", "revenue_musd", "country", "founded"} <= set(traits)
            assert isinstance(traits["company_size"], int) and isinstance(traits["revenue_musd"], (int, float))
            assert traits["industry"] != "technolgy"
        else:
            assert not {"company", "industry", "company_size"} & set(identify["traits"])
        assert opened["type"] == "opportunity_opened"
        assert {"product", "series", "list_price"} == set(opened["properties"])
        if record["product"] == "GTXPro":
            assert opened["properties"] == {"product": "GTX Pro", "series": "GTX", "list_price": 4821}
    assert stages == {"Won": 4238, "Lost": 2473, "Engaging": 1589, "Prospecting": 500}


@pytest.mark.skipif(not X_EDUCATION.exists(), reason=f"{X_EDUCATION} is not there")
def test_the_x_education_example_maps_every_lead():
    rows, _, rejected = map_file(ROOT / "examples" / "x-education" / "mapping.yaml", X_EDUCATION)
    assert rejected == []
    assert len(rows) == 9240
    assert sum(1 for row in rows if row["outcome"]["result"] == "won") == 3561


@pytest.mark.parametrize("example,data", [("x-education", X_EDUCATION), ("b2b-saas", MAVEN)])
def test_each_example_rules_file_takes_every_event_its_mapping_makes(example, data):
    """The server checks events against the rules in force: every type the example's
    mapping produces is declared there, and every property and trait has its type."""
    if not data.exists():
        pytest.skip(f"{data} is not there")
    from leadflow.domain.conform import conform
    from leadflow.domain.events import parse_event
    from leadflow.settings import load_rules

    rules = load_rules(str(ROOT / "examples" / example / "rules.yaml"))
    rows, _, rejected = map_file(ROOT / "examples" / example / "mapping.yaml", data)
    assert rejected == []
    types = set()
    for row in rows:
        for event in row["events"]:
            types.add(conform(parse_event(event), rules).type)  # raises InvalidInput naming the field
    assert types <= set(rules.event_types)
