"""CORS as an API Gateway HTTP API does it, configured by the template's ``HttpApi``.

The deployed API's CORS is ``CorsConfiguration`` on ``HttpApi`` (or in
``Globals.HttpApi``), allowed origins taken from the ``CorsOrigins`` parameter. The
local gateway evaluates that same configuration, with ``CorsOrigins`` set to the
operator's override or left at the parameter's default, so what a browser may do
locally is what it may do against the deployed API.

What API Gateway does, and so does the local gateway with a configuration:

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is
  answered by the gateway, 204, and never reaches the API function. For an allowed
  origin the answer carries the allowed methods, headers and max age; for any other
  origin it carries no CORS header, so the browser refuses the real request.
- Any other request from an allowed origin goes to the function as usual, and the
  answer gets ``Access-Control-Allow-Origin`` (plus credentials and exposed headers when
  configured). CORS headers the function sets itself are dropped: the configuration
  alone decides.
- Origins are exact (``https://www.example.com``), ``*`` (any), or ``https://*`` /
  ``http://*`` (any origin of that scheme).

Without a configuration (``CorsOrigins`` empty) nothing is added and a preflight is an
ordinary ``OPTIONS`` request for the function, as in API Gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CORS_ORIGINS_PARAMETER = "CorsOrigins"
HTTP_API_RESOURCE = "HttpApi"
_NO_VALUE = object()


@dataclass(frozen=True)
class Cors:
    """One API's CORS configuration (the fields of SAM's ``HttpApiCorsConfiguration``)."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    @classmethod
    def from_configuration(cls, configuration: Mapping[str, Any] | bool) -> Cors:
        """From a resolved ``CorsConfiguration`` (``true`` allows every origin, as in SAM)."""
        if configuration is True:
            return cls(allow_origins=("*",))
        if not isinstance(configuration, Mapping):
            raise ValueError(f"CorsConfiguration must be true or a mapping, got {configuration!r}")
        unknown = set(configuration) - {
            "AllowOrigins", "AllowMethods", "AllowHeaders", "ExposeHeaders", "MaxAge", "AllowCredentials"
        }
        if unknown:
            raise ValueError(f"CorsConfiguration: unknown keys {sorted(unknown)}")
        max_age = configuration.get("MaxAge")
        return cls(
            allow_origins=_strings(configuration.get("AllowOrigins"), "AllowOrigins"),
            allow_methods=tuple(m.upper() for m in _strings(configuration.get("AllowMethods"), "AllowMethods")),
            allow_headers=tuple(h.lower() for h in _strings(configuration.get("AllowHeaders"), "AllowHeaders")),
            expose_headers=tuple(h.lower() for h in _strings(configuration.get("ExposeHeaders"), "ExposeHeaders")),
            max_age=None if max_age is None else int(max_age),
            allow_credentials=str(configuration.get("AllowCredentials", False)).lower() == "true",
        )

    def allows(self, origin: str | None) -> bool:
        if not origin:
            return False
        origin = origin.strip().lower()
        for allowed in self.allow_origins:
            allowed = allowed.lower()
            if allowed == "*" or allowed == origin:
                return True
            if allowed in ("https://*", "http://*") and origin.startswith(allowed[:-1]) and len(origin) > len(allowed) - 1:
                return True
        return False

    def _origin_headers(self, origin: str) -> list[tuple[str, str]]:
        if "*" in self.allow_origins and not self.allow_credentials:
            headers = [("Access-Control-Allow-Origin", "*")]
        else:
            # One origin per answer (the header cannot list several): the caches must
            # know that the answer depends on it.
            headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.allow_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def preflight_headers(self, origin: str | None, request_method: str, request_headers: str) -> list[tuple[str, str]]:
        """The CORS headers of the gateway's own answer to a preflight (none for an origin not allowed)."""
        if origin is None or not self.allows(origin):
            return []
        headers = self._origin_headers(origin)
        if self.allow_methods:
            methods = request_method.upper() if "*" in self.allow_methods else ",".join(self.allow_methods)
            headers.append(("Access-Control-Allow-Methods", methods))
        if self.allow_headers:
            if "*" in self.allow_headers:
                allowed = ",".join(h.strip().lower() for h in request_headers.split(",") if h.strip())
            else:
                allowed = ",".join(self.allow_headers)
            if allowed:
                headers.append(("Access-Control-Allow-Headers", allowed))
        if self.max_age is not None:
            headers.append(("Access-Control-Max-Age", str(self.max_age)))
        return headers

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """The CORS headers added to an answer to a request from ``origin`` (none when not allowed)."""
        if origin is None or not self.allows(origin):
            return []
        headers = self._origin_headers(origin)
        if self.expose_headers:
            headers.append(("Access-Control-Expose-Headers", ",".join(self.expose_headers)))
        return headers


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """A CORS preflight as API Gateway recognises one; ``headers`` lower-cased."""
    return method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers


def is_cors_header(name: str) -> bool:
    return name.lower().startswith("access-control-")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"CorsConfiguration.{where} must be a list of strings, got {value!r}")
    return tuple(v.strip() for v in value if v.strip())


def parse_origins(origins: str | Iterable[str] | None) -> str | None:
    """The ``CorsOrigins`` parameter value for origins given as one comma-separated
    string or several (``--cors-origin`` repeated); None stays None (the template's default)."""
    if origins is None:
        return None
    if not isinstance(origins, str):
        origins = ",".join(origins)
    return ",".join(o.strip() for o in origins.split(",") if o.strip())


def template_cors(
    template: Mapping[str, Any],
    *,
    origins: str | Sequence[str] | None = None,
    resource: str = HTTP_API_RESOURCE,
) -> Cors | None:
    """The template's CORS configuration of ``resource``, with ``CorsOrigins`` set to
    ``origins`` (None: the parameter's default); None when the API has no CORS."""
    parameters = dict(template.get("Parameters") or {})
    values = {name: spec.get("Default") for name, spec in parameters.items() if isinstance(spec, Mapping)}
    value = parse_origins(origins)
    if value is not None:
        spec = parameters.get(CORS_ORIGINS_PARAMETER)
        if not isinstance(spec, Mapping):
            raise ValueError(f"the template has no {CORS_ORIGINS_PARAMETER} parameter to set")
        pattern = spec.get("AllowedPattern")
        if pattern and not re.fullmatch(pattern, value):
            raise ValueError(
                f"{CORS_ORIGINS_PARAMETER}={value!r}: expected comma-separated origins such as "
                "https://www.example.com (scheme and host, no path), https://* or *"
            )
        values[CORS_ORIGINS_PARAMETER] = value
    properties = ((template.get("Resources") or {}).get(resource) or {}).get("Properties") or {}
    configuration = properties.get("CorsConfiguration")
    if configuration is None:
        configuration = ((template.get("Globals") or {}).get("HttpApi") or {}).get("CorsConfiguration")
    if configuration is None:
        return None
    resolved = _Evaluator(template, values).value(configuration, f"{resource}.CorsConfiguration")
    if resolved is _NO_VALUE or resolved is None or resolved is False:
        return None
    return Cors.from_configuration(resolved)


class _Evaluator:
    """The intrinsic functions a CORS configuration is written with, evaluated over
    parameter values: Ref, Fn::If (with the template's Conditions), Fn::Split,
    Fn::Join, Fn::Equals, Fn::Not, Fn::And, Fn::Or and Condition."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        self._conditions = template.get("Conditions") or {}
        self._parameters = parameters

    def condition(self, name: str, where: str) -> bool:
        if name not in self._conditions:
            raise ValueError(f"{where}: no condition {name!r} in the template")
        return self._truth(self.value(self._conditions[name], f"Conditions.{name}"), where)

    @staticmethod
    def _truth(value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: {value!r} is not a condition")

    def value(self, node: Any, where: str) -> Any:
        if isinstance(node, list):
            items = [self.value(item, where) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, Mapping):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                if argument == "AWS::NoValue":
                    return _NO_VALUE
                if argument not in self._parameters or self._parameters[argument] is None:
                    raise ValueError(f"{where}: !Ref {argument} has no value outside a deployed stack")
                return self._parameters[argument]
            if key == "Condition":
                return self.condition(argument, where)
            if key == "Fn::If":
                name, when_true, when_false = argument
                return self.value(when_true if self.condition(name, where) else when_false, where)
            if key == "Fn::Equals":
                left, right = (self.value(a, where) for a in argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._truth(self.value(argument[0], where), where)
            if key == "Fn::And":
                return all(self._truth(self.value(a, where), where) for a in argument)
            if key == "Fn::Or":
                return any(self._truth(self.value(a, where), where) for a in argument)
            if key == "Fn::Split":
                delimiter, text = argument
                return str(self.value(text, where)).split(delimiter)
            if key == "Fn::Join":
                delimiter, items = argument
                return delimiter.join(str(i) for i in self.value(items, where))
            if str(key).startswith("Fn::"):
                raise ValueError(f"{where}: {key} is not supported locally; write the value literally")
        out = {}
        for key, item in node.items():
            item = self.value(item, f"{where}.{key}")
            if item is not _NO_VALUE:
                out[key] = item
        return out
