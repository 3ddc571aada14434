"""Invoke a handler the way Lambda does: with a context object, in execution environments.

:class:`LambdaContext` is the one context object of the local stack, the tests and
the benchmarks; :class:`LocalFunction` is one function with its template settings
(name, timeout, memory) and a fixed number of execution environments, each running
one invocation at a time, as Lambda does. An invocation that finds every environment
busy waits for one (Lambda would start another, up to the concurrency limit: the
local stack sizes the pool to what the function's event sources can use at once,
e.g. a stream mapping's ParallelizationFactor).
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: the cold-start benchmark builds contexts before timing imports
    from leadflow_infra.template import FunctionSpec

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"

Handler = Callable[[dict[str, Any], Any], Any]


def _log_stream_name() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"


class LambdaContext:
    """The parts of Lambda's context object that Powertools and handlers read.

    The remaining time counts down from ``timeout_s`` from the moment it is created.
    """

    def __init__(
        self,
        function_name: str,
        *,
        region: str = DEFAULT_REGION,
        account_id: str = ACCOUNT_ID,
        memory_mb: int = 128,
        timeout_s: float = 3.0,
        log_group_name: str | None = None,
        log_stream_name: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = log_group_name or f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name or _log_stream_name()
        self._deadline = time.monotonic() + timeout_s

    @classmethod
    def for_function(
        cls, spec: FunctionSpec, *, region: str = DEFAULT_REGION, account_id: str = ACCOUNT_ID, **overrides: Any
    ) -> LambdaContext:
        """A context for the template function ``spec`` (its name, memory, timeout and log group)."""
        options: dict[str, Any] = {
            "memory_mb": spec.memory_mb,
            "timeout_s": float(spec.timeout),
            "log_group_name": spec.log_group,
        }
        options.update(overrides)
        return cls(spec.name, region=region, account_id=account_id, **options)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalFunction:
    """A handler run like a Lambda function with ``concurrency`` execution environments.

    Each environment runs one invocation at a time and keeps its log stream, as
    Lambda's do; concurrent invocations use different environments.
    """

    def __init__(
        self,
        function_name: str,
        handler: Handler,
        *,
        region: str = DEFAULT_REGION,
        account_id: str = ACCOUNT_ID,
        memory_mb: int = 128,
        timeout_s: float = 3.0,
        log_group_name: str | None = None,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"{function_name}: concurrency must be at least 1, got {concurrency}")
        self.function_name = function_name
        self.handler = handler
        self.region = region
        self.account_id = account_id
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.log_group_name = log_group_name or f"/aws/lambda/{function_name}"
        self.concurrency = concurrency
        self.invocations = 0
        self.peak_concurrency = 0
        self._active = 0
        self._lock = threading.Lock()
        # LIFO: the most recently used environment is reused first (it is "warm").
        self._environments: queue.LifoQueue[str] = queue.LifoQueue()
        for _ in range(concurrency):
            self._environments.put(_log_stream_name())

    @classmethod
    def from_spec(
        cls,
        spec: FunctionSpec,
        handler: Handler,
        *,
        region: str = DEFAULT_REGION,
        account_id: str = ACCOUNT_ID,
        concurrency: int = 1,
    ) -> LocalFunction:
        """The template function ``spec`` (name, memory, timeout, log group) running ``handler``."""
        return cls(
            spec.name,
            handler,
            region=region,
            account_id=account_id,
            memory_mb=spec.memory_mb,
            timeout_s=float(spec.timeout),
            log_group_name=spec.log_group,
            concurrency=concurrency,
        )

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    def context(self, log_stream_name: str | None = None) -> LambdaContext:
        return LambdaContext(
            self.function_name,
            region=self.region,
            account_id=self.account_id,
            memory_mb=self.memory_mb,
            timeout_s=self.timeout_s,
            log_group_name=self.log_group_name,
            log_stream_name=log_stream_name,
        )

    def __call__(self, event: dict[str, Any]) -> Any:
        environment = self._environments.get()
        try:
            with self._lock:
                self.invocations += 1
                self._active += 1
                self.peak_concurrency = max(self.peak_concurrency, self._active)
            try:
                return self.handler(event, self.context(environment))
            finally:
                with self._lock:
                    self._active -= 1
        finally:
            self._environments.put(environment)
