"""The stream poller's event source mapping semantics, on an in-memory stream.

The fake client is a one-shard DynamoDB stream that hands out at most ``per_read``
records per GetRecords, so what each read returns is fixed; the tests wait on the
poller's drain, never on time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from leadflow_infra.local.invoke import LocalFunction
from leadflow_infra.local.stream_poller import StreamPoller, lane_of

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"
CREATED = 1_800_000_000.0


class FakeStream:
    """One open shard; iterators are "<position>"."""

    def __init__(self, per_read: int = 1000) -> None:
        self.records: list[dict[str, Any]] = []
        self.per_read = per_read
        self._lock = threading.Lock()

    def put(self, key: str, version: int = 0, created: float = CREATED) -> None:
        with self._lock:
            sequence = str(100 + len(self.records))
            self.records.append({
                "eventID": f"e{sequence}",
                "eventName": "MODIFY" if version else "INSERT",
                "dynamodb": {
                    "ApproximateCreationDateTime": created,
                    "Keys": {"PK": {"S": key}, "SK": {"S": "LEAD"}},
                    "NewImage": {"PK": {"S": key}, "SK": {"S": "LEAD"}, "v": {"N": str(version)}},
                    "SequenceNumber": sequence,
                    "SizeBytes": 10,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            })

    def describe_stream(self, StreamArn: str, **_: Any) -> dict:
        return {"StreamDescription": {"Shards": [{"ShardId": "shard-0", "SequenceNumberRange": {}}]}}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str, **_: Any) -> dict:
        with self._lock:
            return {"ShardIterator": str(len(self.records) if ShardIteratorType == "LATEST" else 0)}

    def get_records(self, ShardIterator: str, Limit: int) -> dict:
        start = int(ShardIterator)
        with self._lock:
            records = self.records[start : start + min(Limit, self.per_read)]
        return {"Records": records, "NextShardIterator": str(start + len(records))}


def key(record: dict) -> str:
    return record["dynamodb"]["Keys"]["PK"]["S"]


def keys(batch: list[dict]) -> list[str]:
    return [key(r) for r in batch]


class Handler:
    """Records each batch's keys; raises for a batch holding a key in ``poison``;
    reports the keys in ``fail`` as item failures."""

    def __init__(self, poison: set[str] = frozenset(), fail: set[str] = frozenset()) -> None:
        self.batches: list[list[str]] = []
        self.poison = set(poison)
        self.fail = set(fail)
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> dict:
        records = event["Records"]
        with self._lock:
            self.batches.append(keys(records))
        if self.poison & set(keys(records)):
            raise RuntimeError("poison record")
        return {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]}
                                      for r in records if key(r) in self.fail]}


@pytest.fixture
def run():
    pollers: list[StreamPoller] = []

    def _run(stream: FakeStream, handler: Any, **options: Any) -> StreamPoller:
        options.setdefault("retry_base_delay", 0.001)
        options.setdefault("poll_interval", 0.005)
        dead: list[tuple[list[dict], dict]] = []
        poller = StreamPoller(stream, ARN, handler, on_failure=lambda records, info: dead.append((records, info)),
                              **options)
        poller.dead = dead  # type: ignore[attr-defined]
        pollers.append(poller)
        poller.start("TRIM_HORIZON")
        assert poller.drain(10), "the poller did not drain"
        return poller

    yield _run
    for poller in pollers:
        poller.stop(0)


def letters(*names: str) -> FakeStream:
    stream = FakeStream()
    for name in names:
        stream.put(name)
    return stream


# -- bisect, retries, partial failures -----------------------------------------------------


def test_function_error_with_bisect_splits_down_to_the_poison_record_and_dead_letters_it(run):
    stream = letters(*"abcdefgh")
    handler = Handler(poison={"e"})

    poller = run(stream, handler, batch_size=8, bisect_on_error=True, max_retries=1)

    assert handler.batches == [
        list("abcdefgh"),  # raises: split
        list("abcd"),
        list("efgh"),  # raises: split
        list("ef"),  # raises: split
        ["e"],  # raises: retry 1
        ["e"],  # raises: retries used up
        ["f"],
        list("gh"),
    ]
    ((records, info),) = poller.dead
    assert keys(records) == ["e"]
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["requestContext"]["approximateInvokeCount"] == 5
    assert info["responseContext"]["functionError"] == "Unhandled"
    assert poller.stats["bisections"] == 3
    assert poller.stats["retries"] == 1
    assert poller.stats["records_delivered"] == 7


def test_function_error_without_bisect_retries_the_whole_batch_then_dead_letters_it(run):
    stream = letters(*"abcd")
    handler = Handler(poison={"c"})

    poller = run(stream, handler, batch_size=4, bisect_on_error=False, max_retries=2)

    assert handler.batches == [list("abcd")] * 3
    ((records, info),) = poller.dead
    assert keys(records) == list("abcd")
    assert info["requestContext"]["approximateInvokeCount"] == 3
    assert poller.stats["bisections"] == 0


def test_reported_item_failure_with_bisect_retries_from_the_lowest_failed_record_unsplit(run):
    stream = letters(*"abcdef")
    handler = Handler(fail={"c", "e"})

    poller = run(stream, handler, batch_size=6, bisect_on_error=True, max_retries=1, report_item_failures=True)

    assert handler.batches == [list("abcdef"), list("cdef")]
    ((records, info),) = poller.dead
    assert keys(records) == list("cdef")
    assert info["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["requestContext"]["approximateInvokeCount"] == 2
    assert info["responseContext"]["functionError"] is None
    assert poller.stats["records_delivered"] == 2


def test_item_failures_without_report_batch_item_failures_are_success(run):
    stream = letters(*"abc")
    handler = Handler(fail={"b"})

    poller = run(stream, handler, batch_size=10, report_item_failures=False, max_retries=3)

    assert handler.batches == [list("abc")]
    assert poller.dead == []
    assert poller.stats["records_delivered"] == 3


def test_zero_retries_dead_letters_after_the_first_failure(run):
    stream = letters("a")
    handler = Handler(poison={"a"})

    poller = run(stream, handler, max_retries=0)

    assert handler.batches == [["a"]]
    assert poller.dead[0][1]["requestContext"]["approximateInvokeCount"] == 1


# -- record age ------------------------------------------------------------------------------


def test_records_older_than_max_record_age_are_dead_lettered_without_invocation(run):
    stream = FakeStream()
    stream.put("old", created=CREATED - 120)
    stream.put("new", created=CREATED - 10)
    handler = Handler()

    poller = run(stream, handler, max_record_age=60, clock=lambda: CREATED)

    assert handler.batches == [["new"]]
    ((records, info),) = poller.dead
    assert keys(records) == ["old"]
    assert info["requestContext"]["condition"] == "RecordAgeExceeded"
    assert info["requestContext"]["approximateInvokeCount"] == 0
    assert poller.stats["records_expired"] == 1


def test_records_expiring_while_retried_are_dead_lettered_as_too_old(run):
    stream = letters("a", "b")
    handler = Handler(poison={"a"})
    now = [CREATED]

    def clock() -> float:
        return now[0]

    def failing_then_late(event: dict) -> Any:
        now[0] = CREATED + 61  # the failed invocation took the records past their age
        return handler(event)

    poller = run(stream, failing_then_late, bisect_on_error=False, max_retries=5, max_record_age=60, clock=clock)

    assert handler.batches == [["a", "b"]]
    ((records, info),) = poller.dead
    assert keys(records) == ["a", "b"]
    assert info["requestContext"]["condition"] == "RecordAgeExceeded"
    assert info["requestContext"]["approximateInvokeCount"] == 1


def test_without_max_record_age_records_past_the_streams_retention_are_discarded(run):
    stream = FakeStream()
    stream.put("ancient", created=CREATED - 86_401)
    handler = Handler()

    poller = run(stream, handler, clock=lambda: CREATED)

    assert handler.batches == []
    assert poller.dead[0][1]["requestContext"]["condition"] == "RecordAgeExceeded"


# -- batching window -----------------------------------------------------------------------


def test_batching_window_gathers_records_of_several_reads_into_one_invocation(run):
    stream = FakeStream(per_read=2)
    for name in "abcde":
        stream.put(name)
    handler = Handler()

    run(stream, handler, batch_size=4, batching_window=1.0)

    assert handler.batches == [list("abcd"), ["e"]]


def test_without_batching_window_each_read_is_invoked_on_its_own(run):
    stream = FakeStream(per_read=2)
    for name in "abcde":
        stream.put(name)
    handler = Handler()

    run(stream, handler, batch_size=4)

    assert handler.batches == [list("ab"), list("cd"), ["e"]]


# -- parallelization --------------------------------------------------------------------------


def _keys_in_lanes(lanes: int, per_lane: int) -> list[str]:
    """Keys spread so every lane gets ``per_lane`` of them."""
    by_lane: dict[int, list[str]] = {lane: [] for lane in range(lanes)}
    n = 0
    while any(len(v) < per_lane for v in by_lane.values()):
        name = f"LEAD#{n}"
        record = {"dynamodb": {"Keys": {"PK": {"S": name}, "SK": {"S": "LEAD"}}}}
        lane = lane_of(record, lanes, "PK")
        if len(by_lane[lane]) < per_lane:
            by_lane[lane].append(name)
        n += 1
    return [name for lane in range(lanes) for name in by_lane[lane]]


def test_lane_of_is_stable_and_depends_on_the_partition_key_only():
    one = {"dynamodb": {"Keys": {"PK": {"S": "LEAD#1"}, "SK": {"S": "LEAD"}}}}
    other_item = {"dynamodb": {"Keys": {"PK": {"S": "LEAD#1"}, "SK": {"S": "EVENT#9"}}}}

    assert lane_of(one, 4, "PK") == lane_of(other_item, 4, "PK")
    assert {lane_of({"dynamodb": {"Keys": {"PK": {"S": f"LEAD#{i}"}}}}, 4, "PK") for i in range(50)} == {0, 1, 2, 3}
    assert lane_of(one, 1, "PK") == 0


def test_parallelization_runs_lanes_concurrently_in_environments_and_keeps_per_key_order(run):
    lanes = 4
    names = _keys_in_lanes(lanes, per_lane=2)
    stream = FakeStream()
    for version in range(3):
        for name in names:
            stream.put(name, version)
    # Every lane's first invocation waits for the other lanes' first: they must run at once.
    barrier = threading.Barrier(lanes, timeout=10)
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    first_in_lane: set[int] = set()

    def handler(event: dict, context: Any) -> dict:
        lane = {lane_of(r, lanes, "PK") for r in event["Records"]}
        assert len(lane) == 1, "a batch mixes lanes"
        (lane_id,) = lane
        with lock:
            first = lane_id not in first_in_lane
            first_in_lane.add(lane_id)
            seen.extend((key(r), r["dynamodb"]["NewImage"]["v"]["N"]) for r in event["Records"])
        if first:
            barrier.wait()
        return {"batchItemFailures": []}

    function = LocalFunction("leadflow-handoff", handler, concurrency=lanes)

    poller = run(stream, function, batch_size=2, parallelization=lanes, partition_key="PK")

    assert function.peak_concurrency == lanes
    assert function.invocations == poller.stats["invocations"] == lanes * 3  # 6 records per lane, 2 a batch
    for name in names:
        assert [v for k, v in seen if k == name] == ["0", "1", "2"], f"{name} out of order"
    assert poller.stats["records_delivered"] == len(names) * 3


def test_parallelization_failing_lane_does_not_reorder_or_lose_another_lanes_records(run):
    lanes = 2
    names = _keys_in_lanes(lanes, per_lane=2)
    stream = FakeStream()
    for version in range(2):
        for name in names:
            stream.put(name, version)
    handler = Handler(poison={names[0]})

    poller = run(stream, handler, batch_size=10, parallelization=lanes, partition_key="PK", bisect_on_error=True,
                 max_retries=0)

    healthy = [b for b in handler.batches if names[0] not in b and names[1] not in b]
    assert [k for b in healthy for k in b] == [names[2], names[3], names[2], names[3]]
    dead = [keys(records) for records, _ in poller.dead]
    assert all(set(d) <= {names[0]} for d in dead)
    assert sum(len(d) for d in dead) == 2  # both versions of the poisoned key, nothing else


# -- execution environments ---------------------------------------------------------------


def test_local_function_runs_one_invocation_per_environment_and_queues_the_rest():
    started = threading.Semaphore(0)
    release = threading.Event()
    queued = threading.Event()
    streams: list[str] = []

    def handler(event: dict, context: Any) -> str:
        streams.append(context.log_stream_name)
        started.release()
        release.wait(10)
        return event["n"]

    function = LocalFunction("leadflow-handoff", handler, concurrency=2, timeout_s=60, memory_mb=512)
    environments = function._environments

    class Watched(type(environments)):  # notices an invocation waiting for a free environment
        def get(self, *args: Any, **kwargs: Any) -> Any:
            if self.empty():
                queued.set()
            return super().get(*args, **kwargs)

    watched = Watched()
    while not environments.empty():
        watched.put(environments.get())
    function._environments = watched
    results: list[str] = []
    threads = [threading.Thread(target=lambda n=n: results.append(function({"n": n}))) for n in "abc"]
    for thread in threads:
        thread.start()
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    assert queued.wait(5), "the third invocation did not wait for an environment"
    release.set()
    for thread in threads:
        thread.join(10)

    assert sorted(results) == ["a", "b", "c"]
    assert function.peak_concurrency == 2
    assert function.invocations == 3
    assert len(set(streams)) == 2  # two environments, each with its log stream


def test_poller_stop_joins_its_lanes():
    stream = letters("a")
    poller = StreamPoller(stream, ARN, Handler(), parallelization=3, poll_interval=0.005)
    poller.start("TRIM_HORIZON")
    assert poller.drain(5)
    started = time.monotonic()

    assert poller.stop(1)
    assert not poller.running
    assert time.monotonic() - started < 5
