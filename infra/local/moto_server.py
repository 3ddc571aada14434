"""The embedded DynamoDB-compatible endpoint: a moto server on a loopback port.

moto keeps its state in process-wide backends, so one process should run one
local stack at a time; :meth:`MotoServer.reset` wipes that state (the stack
does it on start and on stop so two stacks in a row never share data).
"""

from __future__ import annotations

import logging
import urllib.request
from typing import Any

from moto.server import ThreadedMotoServer

from leadflow_infra.local import in_process

logger = logging.getLogger(__name__)


class MotoServer:
    """Start and stop a :class:`ThreadedMotoServer` bound to ``host`` on a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: ThreadedMotoServer | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("moto server is not running")
        return self._url

    @property
    def running(self) -> bool:
        return self._url is not None

    def start(self) -> str:
        """Start the server (port 0 lets the OS pick a free one) and return its URL."""
        if self._server is not None:
            return self.url
        # werkzeug logs every request at INFO; the stream poller alone makes ~20 a second.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self._url = f"http://{host}:{port}"
        # This process's own clients (the functions) skip the socket and the signature.
        in_process.attach(self._url, server._server.app)
        logger.debug("moto server listening on %s", self._url)
        return self._url

    def reset(self) -> None:
        """Wipe every moto backend (all tables, streams and other mocked services)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        in_process.detach(self._url or "")
        self._url = None
        server.stop()


def forget_shard_iterator(iterator: str) -> None:
    """Drop a used shard iterator from moto's in-process registry.

    moto keeps every iterator it ever handed out; a poller asking every 50 ms
    would grow that map by tens of megabytes an hour. Real DynamoDB expires
    them after 15 minutes. Best effort: moto internals may move.
    """
    try:
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        for account in list(dynamodbstreams_backends.values()):
            for backend in list(account.values()):
                backend.shard_iterators.pop(iterator, None)
    except Exception:  # pragma: no cover - depends on moto internals
        logger.debug("could not forget shard iterator", exc_info=True)


class LocalStreams:
    """The stream pollers' DynamoDB Streams calls, made in this process.

    Lambda's event source mappings read a table's stream inside AWS: the function's
    clients and the table's never pay for it. Over the embedded endpoint's HTTP, every
    poll of every mapping (twenty a second each, found or not) went through the HTTP
    server, moto's request dispatch and response serializer, and botocore's parser:
    with two mappings, a fifth of a core while idle, and under load every record's
    images serialized and parsed again for each mapping, all of it holding the one
    interpreter lock that the API's requests need too.

    These calls go to the backend methods moto's HTTP handlers call (the same shard,
    under the same lock, waiting for the same journal flush) and answer in the shapes
    botocore's parser gives: binary values as bytes, numbers as text, times as
    datetimes. Only what :class:`~leadflow_infra.local.stream_poller.StreamPoller`
    asks is here: ``describe_stream``, ``get_shard_iterator`` and ``get_records``.
    """

    def __init__(self, *, region: str, account_id: str) -> None:
        self.region = region
        self.account_id = account_id

    def _backend(self) -> Any:
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        return dynamodbstreams_backends[self.account_id][self.region]

    def describe_stream(self, *, StreamArn: str, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"StreamDescription": self._backend().describe_stream(StreamArn)}

    def get_shard_iterator(self, *, StreamArn: str, ShardId: str, ShardIteratorType: str,  # noqa: N803
                           SequenceNumber: str | None = None) -> dict[str, Any]:
        number = int(SequenceNumber) if SequenceNumber is not None else None
        iterator = self._backend().get_shard_iterator(StreamArn, ShardId, ShardIteratorType, number)
        return {"ShardIterator": iterator.arn}

    def get_records(self, *, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:  # noqa: N803
        try:
            return self._backend().get_records(ShardIterator, Limit)
        except KeyError:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ExpiredIteratorException",
                                         "Message": "the shard iterator is unknown or expired"}},
                              "GetRecords") from None
