"""The local stack behind ``leadflow serve``: the Lambda handlers on moto, without an AWS account.

Only this package (and the CLI, lazily) imports moto; the Lambda code never does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LambdaContext", "LocalFunction", "LocalStack"]


def __getattr__(name: str) -> Any:
    if name in ("LambdaContext", "LocalFunction"):
        from leadflow_infra.local import invoke

        return getattr(invoke, name)
    if name in __all__:
        from leadflow_infra.local import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
