"""What the AWS sinks (SES, EventBridge) share: a client that tries once, and botocore's
failures classified as the handoff needs them."""

from __future__ import annotations

import threading
from typing import Any

from leadflow.adapters.sinks.http import clip
from leadflow.domain.errors import PermanentError, RetryableError


_CLIENTS = threading.Lock()


def single_attempt_client(service: str) -> Any:
    """A boto3 client that tries once and gives up quickly: retries belong to the dispatcher.

    The SDK bounds each socket operation, not a whole call; the handoff stops waiting for
    a sink at the attempt's deadline whatever its client does. Clients are made one at
    a time: the sinks of a move are delivered on threads, and building clients from
    boto3's default session on two threads at once is not safe."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=3, read_timeout=10)
    with _CLIENTS:
        return boto3.client(service, config=config)


def call_aws(what: str, call: Any, retryable_codes: frozenset[str]) -> Any:
    """Runs one AWS call, turning botocore's failures into sink outcomes: throttles,
    internal errors and network failures may succeed later; anything else is permanent."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, ReadTimeoutError, ConnectTimeoutError

    try:
        return call()
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code") or "Unknown")
        message = clip(str(error.response.get("Error", {}).get("Message") or ""), 160)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        reason = f"{what}: {code}" + (f": {message}" if message else "")
        if code in retryable_codes or (isinstance(status, int) and status >= 500):
            raise RetryableError(reason, status=status) from error
        raise PermanentError(reason, status=status) from error
    except (BotoConnectionError, HTTPClientError, ReadTimeoutError, ConnectTimeoutError) as error:
        raise RetryableError(f"{what}: {type(error).__name__}") from error
    except BotoCoreError as error:  # credentials, parameter validation: configuration, not weather
        raise PermanentError(f"{what}: {type(error).__name__}: {clip(str(error), 160)}") from error
