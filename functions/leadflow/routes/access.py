"""The API key the HTTP surfaces (`/v1`, the console) are closed behind: one decision for both."""

from __future__ import annotations

from leadflow.domain.errors import Misconfigured
from leadflow.observability import logger
from leadflow.settings import running_in_aws, settings


def api_key_in_force(surface: str) -> str | None:
    """The key `surface` ("API", "console") requires, or None where no key means open
    (outside AWS: `leadflow serve`, tests). Closed when in doubt: a key that cannot be read,
    or none at all in AWS, is Misconfigured (503, saying why), never an open door to lead
    data, erasure included."""
    try:
        key = settings().api_key
    except Exception:  # noqa: BLE001 - SSM or Secrets Manager unreachable, or not allowed
        logger.exception("api_key.unreadable")  # names the failure, never a value
        raise Misconfigured("the API key (LEADFLOW_API_KEY) could not be read: check the function may read its "
                            "secret", field="authorization") from None
    if not key and running_in_aws():
        logger.error("api_key.missing")
        raise Misconfigured(f"no API key is configured (LEADFLOW_API_KEY): a deployed {surface} never serves leads "
                            "unauthenticated; deploy with the template, which creates one, or set ApiKeyParameter",
                            field="authorization")
    return key or None
