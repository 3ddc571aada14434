"""The stream poller's position: reported after every handled read, resumed after a restart,
and never moved past a batch a stopping poller did not deliver."""

from __future__ import annotations

import threading
from typing import Any

from leadflow_infra.local.stream_poller import StreamPoller
from tests.unit.test_local_stream_poller import ARN, FakeStream, Handler, keys


class ResumableStream(FakeStream):
    """The fake shard, resumable after a sequence number (iterators are list positions)."""

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str, **kwargs: Any) -> dict:
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            return {"ShardIterator": str(int(kwargs["SequenceNumber"]) - 100 + 1)}
        return super().get_shard_iterator(StreamArn, ShardId, ShardIteratorType)


def stream_of(*names: str, per_read: int = 1000) -> ResumableStream:
    stream = ResumableStream(per_read=per_read)
    for name in names:
        stream.put(name)
    return stream


def poller(stream: ResumableStream, handler: Any, positions: list[str], **options: Any) -> StreamPoller:
    options.setdefault("retry_base_delay", 0.001)
    options.setdefault("poll_interval", 0.005)
    return StreamPoller(stream, ARN, handler, on_checkpoint=lambda _shard, seq: positions.append(seq), **options)


def test_each_handled_read_reports_its_last_sequence_number_filtered_records_included():
    stream = stream_of("a", "b", "c", "d", "e", per_read=2)
    handler, positions = Handler(), []
    p = poller(stream, handler, positions, record_filter=lambda r: r["dynamodb"]["Keys"]["PK"]["S"] != "d")
    p.start("TRIM_HORIZON")
    try:
        assert p.drain(10)
    finally:
        p.stop(0)

    assert [k for batch in handler.batches for k in batch] == ["a", "b", "c", "e"]
    assert positions == ["101", "103", "104"]  # one per read; "d" was read, so it is handled


def test_a_restart_after_a_kept_position_delivers_only_what_follows():
    stream = stream_of("a", "b", "c", "d")
    handler, positions = Handler(), []
    p = poller(stream, handler, positions)
    p.start("AFTER_SEQUENCE_NUMBER", "101")
    try:
        assert p.drain(10)
    finally:
        p.stop(0)

    assert handler.batches == [["c", "d"]] and positions == ["103"]


def test_a_resumable_poller_stopping_mid_retry_neither_dead_letters_nor_passes_the_batch():
    stream = stream_of("a", "b")
    failing = threading.Event()

    class Failing(Handler):
        def __call__(self, event: dict) -> dict:
            if "b" in keys(event["Records"]):
                failing.set()
            return super().__call__(event)

    handler, positions, dead = Failing(fail={"b"}), [], []
    p = poller(stream, handler, positions, resumable=True, max_retries=-1, batch_size=1, report_item_failures=True,
               on_failure=lambda records, info: dead.append(info))
    p.start("TRIM_HORIZON")
    assert failing.wait(10)
    p.stop(0)

    assert dead == [] and positions == ["100"]  # past "a" (a read of its own), not past "b"


def test_without_resumable_a_stop_mid_retry_dead_letters_the_batch_as_shutdown():
    stream = stream_of("b")
    failing = threading.Event()

    class Failing(Handler):
        def __call__(self, event: dict) -> dict:
            failing.set()
            return super().__call__(event)

    handler, positions, dead = Failing(fail={"b"}), [], []
    p = poller(stream, handler, positions, max_retries=-1, report_item_failures=True,
               on_failure=lambda records, info: dead.append(info))
    p.start("TRIM_HORIZON")
    assert failing.wait(10)
    p.stop(0)

    assert [info["requestContext"]["condition"] for info in dead] == ["Shutdown"]
    assert positions == ["100"]
