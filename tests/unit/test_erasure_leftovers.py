"""What an erasure could have to find elsewhere is not kept there to begin with: the
local stack's stream dead-letter file keeps records' coordinates, never their images
(a file written with images is rewritten without them), and the handoff is invoked
for the removal of a known lead, whose CRM contact it deletes."""

from __future__ import annotations

import json
import stat

import pytest

from leadflow_infra.local.stream_poller import DeadLetterFile
from leadflow_infra.template import find_template, load_template

PERSON = {"email": {"S": "jane@acme.io"}, "state": {"B": "eJyrVkrOz0nNSw=="}, "lead_id": {"S": "ld_1"}}


def record(event_name: str = "MODIFY", *, old: dict | None = None, new: dict | None = None, seq: str = "100") -> dict:
    change = {"Keys": {"PK": {"S": "LEAD#ld_1"}, "SK": {"S": "LEAD"}}, "SequenceNumber": seq, "SizeBytes": 300,
              "StreamViewType": "NEW_AND_OLD_IMAGES", "ApproximateCreationDateTime": 1_790_000_000.0}
    if new is not None:
        change["NewImage"] = {**change["Keys"], **new}
    if old is not None:
        change["OldImage"] = {**change["Keys"], **old}
    return {"eventID": "e1", "eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": change}


def test_dead_letter_file_keeps_coordinates_never_images(tmp_path):
    dead = DeadLetterFile(tmp_path / "data" / "stream-dlq.jsonl")

    dead([record(new=PERSON, old=PERSON), record("REMOVE", old=PERSON, seq="101")], {"requestContext": {"condition": "x"}})

    (line,) = dead.read()
    text = json.dumps(line)
    assert "jane@acme.io" not in text and "NewImage" not in text and "OldImage" not in text
    assert [r["dynamodb"]["SequenceNumber"] for r in line["records"]] == ["100", "101"]
    assert [r["dynamodb"]["Keys"]["PK"]["S"] for r in line["records"]] == ["LEAD#ld_1", "LEAD#ld_1"]
    assert [r["eventName"] for r in line["records"]] == ["MODIFY", "REMOVE"]
    assert stat.S_IMODE(dead.path.stat().st_mode) == 0o600


def test_dead_letter_file_written_with_images_is_rewritten_without_them(tmp_path):
    path = tmp_path / "stream-dlq.jsonl"
    earlier = [{"requestContext": {"condition": "RetryAttemptsExhausted"}, "records": [record(new=PERSON)]},
               {"requestContext": {"condition": "RecordAgeExceeded"}, "records": [record("REMOVE", old=PERSON)]}]
    path.write_text("".join(json.dumps(line) + "\n" for line in earlier))
    path.chmod(0o644)  # as an earlier version left it

    dead = DeadLetterFile(path)
    assert dead.scrub() is True

    lines = dead.read()
    assert "jane@acme.io" not in path.read_text()
    assert [line["requestContext"]["condition"] for line in lines] == ["RetryAttemptsExhausted", "RecordAgeExceeded"]
    assert all(r["dynamodb"]["SequenceNumber"] == "100" for line in lines for r in line["records"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "stream-dlq.jsonl.tmp").exists()
    assert dead.scrub() is False  # nothing left to take out


@pytest.mark.parametrize(("event_name", "old", "expected"), [
    ("REMOVE", PERSON, True),  # an erased known lead: its CRM contacts are deleted
    ("REMOVE", {"lead_id": {"S": "an_1"}}, False),  # a visitor's alias: no CRM contact
    ("MODIFY", PERSON, False),
])
def test_handoff_is_invoked_for_the_removal_of_a_known_lead(event_name, old, expected):
    from leadflow_infra.local.filters import stream_filter

    wanted = stream_filter("HandoffFunction", "MoveStream", load_template(find_template()))

    assert wanted(record(event_name, old=old, new=None if event_name == "REMOVE" else {"stage": {"S": "mql"}})) is expected
