"""The local stack's journal: what it acknowledged survives a crash, and nothing else is seen.

The journal alone first (replay, a torn last commit, a process killed mid-write,
compaction, private files), then the stack on it, in this process: a "crash" is a copy
of the data directory taken under the backend lock (every operation before it answered,
none after), started as a second stack. The real `kill -9` of `leadflow serve` is in
tests/e2e/test_crash.py.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from leadflow_infra.local import atomic
from leadflow_infra.local.journal import DB_NAME, Journal, JournalError, key_text
from leadflow_infra.local.persist import BASE_SEQUENCE

from tests.integration.test_local_stack import TABLE, FakeStream, lead_item
from tests.integration.test_local_stack import make_stack, table_properties  # noqa: F401 - fixtures used here
from tests.conftest import wait_until as _wait_until

wait_until = functools.partial(_wait_until, interval=0.02)

REPO = Path(__file__).resolve().parents[2]


def item(pk: str, **extra: Any) -> tuple[str, str, str, dict[str, Any]]:
    image = {"PK": {"S": pk}, "SK": {"S": "LEAD"}, **extra}
    return TABLE, key_text(image["PK"]), key_text(image["SK"]), image


def kept_items(journal: Journal) -> dict[str, dict[str, Any]]:
    return {image["PK"]["S"]: image for _, image in journal.items()}


# -- the journal ------------------------------------------------------------------------


def test_reopening_replays_items_deletions_stream_positions_and_messages(tmp_path):
    journal = Journal(tmp_path).open()
    journal.record(items=[item("LEAD#1", v={"N": "1"}), item("LEAD#2"), item("LEAD#3", blob={"B": "AP8="})])
    journal.record(items=[item("LEAD#1", v={"N": "2"}), (TABLE, key_text({"S": "LEAD#2"}), key_text({"S": "LEAD"}), None)])
    journal.record(stream=[(TABLE, n, 1000.0 + n, {"dynamodb": {"SequenceNumber": str(n)}}) for n in range(5)])
    journal.checkpoint("EventLogFunction.Stream", TABLE, 3)
    journal.trim(TABLE, 2)
    journal.record(messages=[("m1", "retry", {"body": "a"}), ("m2", "retry", {"body": "b"}), ("m3", "retry", {"body": "c"})])
    journal.record(messages=[("m1", "dead", {"body": "a"})], removed_messages=["m2"])
    journal.close()

    again = Journal(tmp_path).open()
    try:
        assert kept_items(again) == {"LEAD#1": item("LEAD#1", v={"N": "2"})[3], "LEAD#3": item("LEAD#3", blob={"B": "AP8="})[3]}
        assert [n for n, _ in again.stream_records(TABLE)] == [3, 4]
        assert again.next_stream_number(TABLE) == 5
        assert again.checkpoints() == {"EventLogFunction.Stream": 3}
        assert again.messages() == [("retry", {"body": "c"}), ("dead", {"body": "a"})]  # m1 moved to the end
    finally:
        again.close()


def test_numbers_of_trimmed_stream_records_are_never_used_again(tmp_path):
    journal = Journal(tmp_path).open()
    journal.record(stream=[(TABLE, n, 1.0, {"n": n}) for n in range(3)])
    journal.trim(TABLE, 2)
    journal.close()

    again = Journal(tmp_path).open()
    try:
        assert again.stream_records(TABLE) == [] and again.next_stream_number(TABLE) == 3
    finally:
        again.close()


def _crash_copy(source: Path, target: Path, *, wal_bytes: int | None = None) -> None:
    """The files as a crash would leave them: the database and its log (cut at ``wal_bytes``)."""
    target.mkdir()
    shutil.copy2(source / DB_NAME, target / DB_NAME)
    wal = (source / f"{DB_NAME}-wal").read_bytes()
    (target / f"{DB_NAME}-wal").write_bytes(wal if wal_bytes is None else wal[:wal_bytes])


def test_a_commit_torn_by_a_crash_mid_append_is_ignored_and_earlier_ones_are_kept(tmp_path):
    journal = Journal(tmp_path / "live").open()
    try:
        for n in range(5):
            journal.sync(journal.record(items=[item(f"LEAD#{n}", blob={"S": "x" * 3000})]))
        before_last = journal.wal_size()
        journal.sync(journal.record(items=[item("LEAD#torn", blob={"S": "y" * 6000})]))
        after_last = journal.wal_size()
        assert after_last > before_last
        _crash_copy(tmp_path / "live", tmp_path / "torn", wal_bytes=(before_last + after_last) // 2)
        _crash_copy(tmp_path / "live", tmp_path / "whole")
    finally:
        journal.close()

    torn = Journal(tmp_path / "torn").open()
    whole = Journal(tmp_path / "whole").open()
    try:
        assert sorted(kept_items(torn)) == [f"LEAD#{n}" for n in range(5)]
        assert sorted(kept_items(whole)) == sorted([f"LEAD#{n}" for n in range(5)] + ["LEAD#torn"])
    finally:
        torn.close()
        whole.close()


WRITER = textwrap.dedent("""
    import sys
    from leadflow_infra.local.journal import Journal, key_text
    journal = Journal(sys.argv[1]).open()
    n = 0
    while True:
        image = {"PK": {"S": f"LEAD#{n}"}, "SK": {"S": "LEAD"}, "pad": {"S": "x" * 500}}
        journal.sync(journal.record(items=[("t", key_text(image["PK"]), key_text(image["SK"]), image)]))
        print(n, flush=True)  # acknowledged: durable before this line
        n += 1
""")


def test_a_writer_killed_mid_write_keeps_every_commit_it_acknowledged(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "functions"), str(REPO)])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=REPO)
    acknowledged = -1
    try:
        for line in writer.stdout:
            acknowledged = int(line)
            if acknowledged >= 200:
                break
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(10)
        writer.stdout.close()
    assert acknowledged >= 200

    journal = Journal(tmp_path).open()
    try:
        kept = {image["PK"]["S"] for _, image in journal.items()}
    finally:
        journal.close()
    assert {f"LEAD#{n}" for n in range(acknowledged + 1)} <= kept


def test_compaction_folds_the_log_into_the_database_while_writers_go_on(tmp_path):
    journal = Journal(tmp_path, wal_limit=0).open()  # a log that starts over is cut back to nothing
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set() or n < 50:
            journal.sync(journal.record(items=[item(f"LEAD#{n}", pad={"S": "p" * 2000})]))
            written.append(n)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(written) >= 20)
        grown = journal.wal_size()
        journal.compact()  # passive: the writer is not held up, and what it commits meanwhile stays in the log
        wait_until(lambda: len(written) >= 40)
    finally:
        stop.set()
        writer.join(30)
    assert grown > 0
    journal.compact()
    assert journal.unfolded_bytes == 0
    journal.record(items=[item("LEAD#after")])  # the next commit starts the log over
    assert journal.wal_size() < grown
    journal.close()  # folds the rest
    assert not (tmp_path / f"{DB_NAME}-wal").exists() or (tmp_path / f"{DB_NAME}-wal").stat().st_size == 0

    again = Journal(tmp_path).open()
    try:
        assert set(kept_items(again)) == {f"LEAD#{n}" for n in written} | {"LEAD#after"}
    finally:
        again.close()


def test_the_store_is_private_and_one_directory_serves_one_stack(tmp_path):
    data = tmp_path / "data"
    journal = Journal(data).open()
    try:
        journal.record(items=[item("LEAD#1")])
        with pytest.raises(JournalError, match="in use"):
            Journal(data).open()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in data.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        journal.close()
    Journal(data).open().close()  # released at close


def test_a_file_that_is_not_a_store_is_refused_not_overwritten(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"not a database at all, but someone's file" * 100)
    with pytest.raises(JournalError, match="cannot open"):
        Journal(tmp_path).open()
    assert (tmp_path / DB_NAME).read_bytes().startswith(b"not a database")


# -- the stack on it --------------------------------------------------------------------


@pytest.fixture
def stack_on(make_stack):  # noqa: F811 - the fixture imported above
    """`make_stack` on a data directory of the test's choosing (several stacks, one after
    another, on copies of one directory)."""
    return lambda data_dir, **options: make_stack(data_dir=data_dir, **options)


def crash_copy(stack, target: Path) -> Path:
    """The data directory as a crash right now would leave it: taken under the backend
    lock, so every operation answered before is in it and none after."""
    with atomic.lock():
        shutil.copytree(stack.data_dir, target, ignore=shutil.ignore_patterns("leadflow.lock", "stack.json", "*-shm"))
    return target


def shard(stack):
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends["123456789012"][stack.region].tables[stack.table_name].stream_shard


def test_every_acknowledged_write_survives_a_crash_and_nothing_is_redelivered_twice(stack_on, tmp_path):
    first_stream = FakeStream()
    first = stack_on(tmp_path / "first", stream=first_stream)
    client = first.client()
    for n in range(20):
        client.put_item(TableName=TABLE, Item=lead_item(str(n), v={"N": str(n)}, blob={"B": b"\x00\xff"}))
    client.update_item(TableName=TABLE, Key={"PK": {"S": "LEAD#3"}, "SK": {"S": "LEAD"}},
                       UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"N": "33"}})
    client.delete_item(TableName=TABLE, Key={"PK": {"S": "LEAD#4"}, "SK": {"S": "LEAD"}})
    client.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": lead_item(f"b{n}")}} for n in range(5)]})
    assert first.drain(10)
    copy = crash_copy(first, tmp_path / "crashed")
    first.stop()

    second_stream = FakeStream()
    second = stack_on(copy, stream=second_stream)
    client = second.client()
    items = {it["PK"]["S"]: it for it in client.scan(TableName=TABLE)["Items"]}
    client.put_item(TableName=TABLE, Item=lead_item("new"))
    assert second.drain(10)

    assert second.loaded_items == 24
    assert set(items) == {f"LEAD#{n}" for n in range(20) if n != 4} | {f"LEAD#b{n}" for n in range(5)}
    assert items["LEAD#3"]["v"] == {"N": "33"} and items["LEAD#7"]["blob"] == {"B": b"\x00\xff"}
    assert second_stream.delivered() == ["LEAD#new"]  # handled before the crash: not again
    assert len(first_stream.delivered()) == 27


def test_a_record_not_handled_before_the_crash_reaches_its_consumer_after_restart(stack_on, tmp_path):
    first_stream = FakeStream(fail={"LEAD#late"})  # keeps failing: never handled in the first life
    first = stack_on(tmp_path / "first", stream=first_stream, max_retries=-1, drain_timeout=0.2)
    client = first.client()
    client.put_item(TableName=TABLE, Item=lead_item("early"))
    assert first.drain(10)
    client.put_item(TableName=TABLE, Item=lead_item("late", v={"N": "1"}, blob={"B": b"\x00\xff"},
                                                    m={"M": {"bs": {"BS": [b"\x01"]}}}))
    wait_until(lambda: first_stream.delivered().count("LEAD#late") >= 2)
    copy = crash_copy(first, tmp_path / "crashed")
    first.stop()
    first_dead_letters = first.dead_letter_path

    second_stream = FakeStream()
    second = stack_on(copy, stream=second_stream)
    assert second.drain(10)

    assert second_stream.delivered() == ["LEAD#late"]
    (record,) = [r for batch in second_stream.batches for r in batch]
    before = first_stream.batches[-1][0]
    assert record["dynamodb"] == before["dynamodb"] and record["eventName"] == before["eventName"]  # as the first time
    assert record["eventName"] == "INSERT" and record["dynamodb"]["NewImage"]["v"] == {"N": "1"}
    assert record["dynamodb"]["NewImage"]["blob"] == {"B": "AP8="}  # bytes, base64 in the event as in Lambda
    assert not first_dead_letters.exists()  # stopping did not discard it: the next start delivers it


def test_a_consumer_never_sees_a_record_before_its_change_is_on_disk(stack_on, tmp_path, monkeypatch):
    seen = FakeStream()
    stack = stack_on(tmp_path / "data", stream=seen)
    release = threading.Event()
    syncing = threading.Semaphore(0)
    real_sync = Journal.sync

    def slow_disk(self, mark=None):
        if (self.committed if mark is None else mark) > self._durable:  # something to flush
            syncing.release()
            release.wait(20)
        return real_sync(self, mark)

    monkeypatch.setattr(Journal, "sync", slow_disk)
    writer = threading.Thread(target=lambda: stack.client().put_item(TableName=TABLE, Item=lead_item("1")))
    writer.start()
    try:
        assert syncing.acquire(timeout=10)  # the write is committed, its flush is pending
        assert syncing.acquire(timeout=10)  # and the poller's read waits for that same flush
        assert seen.delivered() == []
    finally:
        release.set()
        writer.join(10)
    wait_until(lambda: seen.delivered() == ["LEAD#1"])


def test_queued_retries_and_dead_letters_survive_a_crash(stack_on, tmp_path):
    first = stack_on(tmp_path / "first")
    sqs = first.client("sqs")
    retry = first.queues["HandoffRetryQueue"].url
    dead = first.queues["HandoffDeadLetterQueue"].url
    sqs.send_message(QueueUrl=retry, MessageBody=json.dumps({"n": "waiting"}), DelaySeconds=600)
    sqs.send_message(QueueUrl=retry, MessageBody=json.dumps({"n": "due"}),
                     MessageAttributes={"kind": {"DataType": "String", "StringValue": "retry"}})
    sqs.send_message(QueueUrl=dead, MessageBody=json.dumps({"n": "dead"}))
    sqs.send_message(QueueUrl=dead, MessageBody=json.dumps({"n": "replayed"}))
    received = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10)["Messages"]  # both now in flight
    (taken,) = [m for m in received if json.loads(m["Body"])["n"] == "replayed"]
    sqs.delete_message(QueueUrl=dead, ReceiptHandle=taken["ReceiptHandle"])
    copy = crash_copy(first, tmp_path / "crashed")
    first.stop()

    second = stack_on(copy)
    sqs = second.client("sqs")
    retry = second.queues["HandoffRetryQueue"].url
    dead = second.queues["HandoffDeadLetterQueue"].url
    depth = sqs.get_queue_attributes(QueueUrl=retry, AttributeNames=["All"])["Attributes"]
    (due,) = sqs.receive_message(QueueUrl=retry, MessageAttributeNames=["All"])["Messages"]
    dead_letters = [json.loads(m["Body"])["n"] for m in
                    sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]]

    assert depth["ApproximateNumberOfMessagesDelayed"] == "1"  # still waiting out its backoff
    assert json.loads(due["Body"]) == {"n": "due"}
    assert due["MessageAttributes"]["kind"]["StringValue"] == "retry"
    assert dead_letters == ["dead"]


def test_memory_stays_bounded_handled_records_leave_the_stream_and_misses_leave_no_partition(stack_on, tmp_path):
    stack = stack_on(tmp_path / "data")
    client = stack.client()
    for n in range(60):
        client.put_item(TableName=TABLE, Item=lead_item(str(n % 6), v={"N": str(n)}))
    for n in range(30):
        client.get_item(TableName=TABLE, Key={"PK": {"S": f"LEAD#missing{n}"}, "SK": {"S": "LEAD"}})
        client.delete_item(TableName=TABLE, Key={"PK": {"S": f"LEAD#gone{n}"}, "SK": {"S": "LEAD"}})
    client.put_item(TableName=TABLE, Item=lead_item("last"))
    client.delete_item(TableName=TABLE, Key={"PK": {"S": "LEAD#last"}, "SK": {"S": "LEAD"}})
    assert stack.drain(10)

    stream = shard(stack)
    table = stream.table
    assert wait_until(lambda: len(stream.items) == 0)  # every consumer has handled everything
    assert stream.starting_sequence_number >= BASE_SEQUENCE + 62
    assert stack.store.journal.stream_records(TABLE) == []
    assert len(table.items) == 6 and all(table.items.values())


def test_memory_stays_bounded_moto_lets_go_of_replaced_items_records_and_iterators(stack_on, tmp_path):
    import gc
    import weakref

    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import StreamRecord
    from moto.dynamodbstreams.models import ShardIterator

    stack = stack_on(tmp_path / "data")
    client = stack.client()
    table = shard(stack).table
    client.put_item(TableName=TABLE, Item=lead_item("kept", v={"N": "1"}))
    assert stack.drain(10)
    first = weakref.ref(table.items[next(iter(table.items))][next(iter(table.items[next(iter(table.items))]))])
    record_refs = [weakref.ref(r) for r in shard(stack).items]
    for n in range(2, 30):  # overwritten versions, handled records, the pollers' used iterators
        client.put_item(TableName=TABLE, Item=lead_item("kept", v={"N": str(n)}))
    assert stack.drain(10)
    assert wait_until(lambda: len(shard(stack).items) == 0)

    gc.collect()
    assert first() is None  # the first version of the item is gone
    assert all(ref() is None for ref in record_refs)
    # moto's dashboard lists keep nothing of these any more.
    assert (len(Item.instances_tracked), len(StreamRecord.instances_tracked), len(ShardIterator.instances_tracked)) \
        == (0, 0, 0)


def test_stream_records_older_than_a_day_are_dropped_without_a_consumer(stack_on, tmp_path):
    stack = stack_on(tmp_path / "data", stream=None)
    client = stack.client()
    client.put_item(TableName=TABLE, Item=lead_item("old"))
    client.put_item(TableName=TABLE, Item=lead_item("new"))
    stream = shard(stack)
    from datetime import timedelta

    stream.items[0].record["dynamodb"]["ApproximateCreationDateTime"] -= timedelta(days=1, seconds=1)
    stack.store.expire()

    assert [r.record["dynamodb"]["Keys"]["PK"]["S"] for r in stream.items] == ["LEAD#new"]
    assert [n for n, _ in stack.store.journal.stream_records(TABLE)] == [1]


def test_files_of_the_data_directory_are_private(stack_on, tmp_path):
    data = tmp_path / "data"
    stack = stack_on(data, stream=FakeStream(fail={"LEAD#bad"}), max_retries=0)
    stack.client().put_item(TableName=TABLE, Item=lead_item("bad"))
    wait_until(lambda: stack.dead_letter_path.exists())
    stack.dump()  # the explicit export too
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    names = set()
    for path in data.iterdir():
        names.add(path.name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert {DB_NAME, "stack.json", "stream-dlq.jsonl", "dynamodb.json"} <= names


def test_a_data_directory_kept_by_snapshots_is_imported_once(stack_on, tmp_path):
    data = tmp_path / "old"
    data.mkdir()
    items = [lead_item("1", blob={"B": "AP8="}), {"PK": {"S": "LEAD#1"}, "SK": {"S": "EVENT#1"}}]
    (data / "dynamodb.json").write_text(json.dumps({"version": 1, "tables": {TABLE: items}}))
    (data / "sqs.json").write_text(json.dumps({"version": 1, "queues": {
        "HandoffDeadLetterQueue": [{"body": "{\"type\": \"unknown\"}", "attributes": {}}]}}))
    seen = FakeStream()

    stack = stack_on(data, stream=seen)
    client = stack.client()
    restored = client.get_item(TableName=TABLE, Key={"PK": {"S": "LEAD#1"}, "SK": {"S": "LEAD"}})["Item"]
    dead = stack.client("sqs").get_queue_attributes(QueueUrl=stack.queues["HandoffDeadLetterQueue"].url,
                                                    AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert stack.drain(10)
    stack.stop()

    assert restored["blob"] == {"B": b"\x00\xff"} and stack.loaded_items == 2
    assert dead["ApproximateNumberOfMessages"] == "1"
    assert seen.delivered() == []  # kept items are not changes
    assert not (data / "dynamodb.json").exists() and not (data / "sqs.json").exists()
    assert stack.saved_items == 2

    again = stack_on(data)
    assert again.loaded_items == 2
    assert again.client("sqs").get_queue_attributes(
        QueueUrl=again.queues["HandoffDeadLetterQueue"].url,
        AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_without_persistence_nothing_is_written_and_the_stream_is_still_trimmed(stack_on, tmp_path):
    data = tmp_path / "ephemeral"
    stack = stack_on(data, persist=False)
    for n in range(10):
        stack.client().put_item(TableName=TABLE, Item=lead_item(str(n)))
    assert stack.drain(10)
    assert wait_until(lambda: len(shard(stack).items) == 0)
    assert not (data / DB_NAME).exists()



def test_a_get_waits_for_its_own_items_flush_and_for_nobody_elses(stack_on, tmp_path, monkeypatch):
    """A GetItem must never show a change that a crash could still take back, but it need
    not wait for other items' flushes: a write built on what it read is flushed with
    everything committed before it."""
    stack = stack_on(tmp_path / "data", stream=None)  # no stream consumer: only this test reads
    client = stack.client()
    waited: list[int | None] = []
    real_sync = Journal.sync

    def no_disk(self, mark=None):  # commits stay off the disk: what would each call wait for
        waited.append(mark)

    monkeypatch.setattr(Journal, "sync", no_disk)
    client.put_item(TableName=TABLE, Item=lead_item("1"))
    written = stack.store.journal.committed
    client.put_item(TableName=TABLE, Item=lead_item("2"))

    del waited[:]
    client.get_item(TableName=TABLE, Key={"PK": {"S": "LEAD#1"}, "SK": {"S": "LEAD"}}, ConsistentRead=True)
    assert waited == [written]  # its own change, not item 2's later one
    del waited[:]
    client.get_item(TableName=TABLE, Key={"PK": {"S": "LEAD#9"}, "SK": {"S": "LEAD"}}, ConsistentRead=True)
    assert waited == []  # never written: nothing to wait for

    monkeypatch.setattr(Journal, "sync", real_sync)
    stack.store.journal.sync()  # everything on disk now
    monkeypatch.setattr(Journal, "sync", no_disk)
    del waited[:]
    client.get_item(TableName=TABLE, Key={"PK": {"S": "LEAD#1"}, "SK": {"S": "LEAD"}}, ConsistentRead=True)
    assert waited == []
    client.query(TableName=TABLE, KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": {"S": "LEAD#1"}})
    assert waited == [stack.store.journal.committed]  # a query still waits for every commit before it
