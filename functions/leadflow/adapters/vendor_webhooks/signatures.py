"""Each vendor's webhook signature scheme, checked over the raw bytes received.

`verify(delivery, secret, now=...)` dispatches on `delivery.source` and either returns
(the vendor's replay key when the scheme gives one, else None) or raises
`SignatureError` with a reason that names headers and rules, never a header value, a
secret or anything from the body. Every comparison is constant-time
(`hmac.compare_digest` over bytes). Header names are matched case-insensitively.

Schemes (see tests/fixtures/VENDORS.md for sources and test vectors):

HubSpot
    v3: `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client secret,
    UTF-8 `method + uri + body + timestamp`)), no prefix, with
    `X-HubSpot-Request-Timestamp` in milliseconds; rejected when more than 300 s away
    from now, in either direction.
    URI decoding: HubSpot's validating-requests page (legacy-apps and new developer
    platform copies, v3 section) says: "In the request URI, decode any of the
    URL-encoded characters listed in the table below. You do not need to decode the
    question mark that denotes the beginning of the query string." The table is
    exactly `%3A :  %2F /  %3F ?  %40 @  %21 !  %24 $  %27 '  %28 (  %29 )  %2A *
    %2C ,  %3B ;` (checked against a verbatim copy of the page). HubSpot's own Python
    and Node SDKs do not decode. So the signature is checked over the URI as given
    and, if that fails, over the URI with exactly those twelve sequences decoded (one
    pass, hex digits in either case; nothing else, e.g. `%20` or `%25`, is touched).
    v1/v2 (`X-HubSpot-Signature` + `X-HubSpot-Signature-Version`), still sent for
    CRM-object subscriptions: hex(SHA-256(secret + body)) and
    hex(SHA-256(secret + method + uri + body)), plain hashes, not HMACs. They carry no
    timestamp, so replay protection is then only the per-event dedupe. A delivery
    with a v3 header is judged on v3 alone (no downgrade to v1/v2).
    Returns None: HubSpot dedupe is per event (the mapper's job).

Mautic
    `Webhook-Signature` = base64(HMAC-SHA256(secret, body)). Nothing is timestamped,
    so the replay key is `"mautic:" + sha256(body)[:32 hex]`: the same signed body
    is the same delivery.

Typeform
    `Typeform-Signature` = `sha256=` + base64(HMAC-SHA256(secret, body)). No
    timestamp; returns None (the payload's `event_id` is the dedupe key).

Calendly
    `Calendly-Webhook-Signature: t=<unix s>,v1=<hex>`, HMAC-SHA256 of `<t>.<body>`,
    lowercase hex. Stale or future `t` beyond 3 minutes (the tolerance in Calendly's
    docs example) is rejected. Extra comma-separated parts are ignored; any of
    several `v1` values may match. Returns None.

SendGrid (Signed Event Webhook)
    ECDSA P-256 / SHA-256, no shared secret: `X-Twilio-Email-Event-Webhook-Signature`
    is a base64 DER signature over `timestamp + body` (raw, trailing CRLF included),
    checked with the account's verification public key (base64 DER
    SubjectPublicKeyInfo as SendGrid shows it, or a PEM). SendGrid documents no
    freshness window and its SDK checks none; we reject timestamps more than 10 minutes
    away from now, and reject a non-numeric timestamp outright. A configured key that
    is not a P-256 public key is a SignatureError naming the configuration, not a 500.
    Returns None.

`sign(...)` produces the headers each vendor would send (names lower-cased, as in a
`Delivery`), for tests and `leadflow webhooks test`; `generate_sendgrid_keypair()`
makes a key pair for tests and local setups.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from leadflow.adapters.vendor_webhooks import SOURCES, Delivery, SignatureError

__all__ = [
    "verify",
    "verify_hubspot",
    "verify_mautic",
    "verify_typeform",
    "verify_calendly",
    "verify_sendgrid",
    "sign",
    "generate_sendgrid_keypair",
    "HUBSPOT_TOLERANCE",
    "CALENDLY_TOLERANCE",
    "SENDGRID_TOLERANCE",
]

HUBSPOT_TOLERANCE = 300  # seconds; HubSpot: "reject the request if the timestamp is older than 5 minutes"
CALENDLY_TOLERANCE = 180  # seconds; Calendly's docs example
SENDGRID_TOLERANCE = 600  # seconds; our choice, SendGrid publishes none

HUBSPOT_V3 = "x-hubspot-signature-v3"
HUBSPOT_TIMESTAMP = "x-hubspot-request-timestamp"
HUBSPOT_LEGACY = "x-hubspot-signature"
HUBSPOT_VERSION = "x-hubspot-signature-version"
MAUTIC_SIGNATURE = "webhook-signature"
TYPEFORM_SIGNATURE = "typeform-signature"
CALENDLY_SIGNATURE = "calendly-webhook-signature"
SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"

# The characters HubSpot's v3 instructions say to decode in the request URI (its table, verbatim).
HUBSPOT_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}
_HUBSPOT_DECODE_RE = re.compile("|".join(re.escape(k) for k in HUBSPOT_DECODED), re.IGNORECASE)

# ASCII digits only: int() would also take "١٢", " 12", "1_000".
_DIGITS = re.compile(r"[0-9]{1,16}")


# --- helpers -----------------------------------------------------------------------------


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """The value of header `name`, whatever the case of its name in `headers`."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = val
                break
    if value is None:
        return None
    if not isinstance(value, str):
        raise SignatureError(f"malformed {name} header")
    return value


def _require(headers: Mapping[str, str] | None, name: str) -> str:
    value = _header(headers, name)
    if value is None or not value.strip():
        raise SignatureError(f"missing {name} header")
    return value.strip()


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise SignatureError(f"malformed {what}") from None


def _bytes(body: bytes | bytearray | memoryview) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise TypeError("webhook bodies are verified over the raw bytes received, not over a str")


def _key(secret: str) -> bytes:
    return _utf8(secret, "secret")


def _b64_hmac(secret: str, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(_key(secret), message, hashlib.sha256).digest())


def _any_equal(received: bytes, candidates: list[bytes]) -> bool:
    # Every candidate is compared (no early exit), each in constant time.
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(received, candidate)
    return ok


def _timestamp(value: str, name: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise SignatureError(f"malformed {name}: not a unix timestamp")
    return int(value)


def _fresh(seconds: float, now: float, tolerance: float, vendor: str) -> None:
    if abs(now - seconds) > tolerance:
        minutes = tolerance / 60
        window = f"{minutes:g}-minute" if minutes == int(minutes) else f"{tolerance:g}-second"
        raise SignatureError(f"{vendor} timestamp is outside the {window} window (stale or from the future)")


def hubspot_decode_uri(url: str) -> str:
    """`url` with the twelve percent-encodings of HubSpot's v3 table decoded, nothing else."""
    return _HUBSPOT_DECODE_RE.sub(lambda m: HUBSPOT_DECODED[m.group(0).upper()], url)


# --- HubSpot -----------------------------------------------------------------------------


def verify_hubspot(secret: str, method: str, url: str, body: bytes, headers: Mapping[str, str] | None,
                   now: float) -> None:
    body = _bytes(body)
    signature = _header(headers, HUBSPOT_V3)
    if signature is not None:
        _verify_hubspot_v3(secret, method, url, body, headers, signature, now)
        return None
    legacy = _header(headers, HUBSPOT_LEGACY)
    if legacy is None:
        raise SignatureError(f"missing {HUBSPOT_V3} header")
    legacy = legacy.strip()
    version = (_header(headers, HUBSPOT_VERSION) or "").strip().lower()
    if not version:
        raise SignatureError(f"missing {HUBSPOT_VERSION} header (needed with {HUBSPOT_LEGACY})")
    key = _key(secret)
    if version == "v1":
        source = key + body
    elif version == "v2":
        source = key + _utf8(method, "request method") + _utf8(url, "request URL") + body
    else:
        raise SignatureError(f"unsupported {HUBSPOT_VERSION}: expected v1 or v2")
    expected = hashlib.sha256(source).hexdigest().encode("ascii")
    if not hmac.compare_digest(_utf8(legacy, f"{HUBSPOT_LEGACY} header"), expected):
        raise SignatureError(f"HubSpot {version} signature does not match")
    return None


def _verify_hubspot_v3(secret: str, method: str, url: str, body: bytes, headers: Mapping[str, str] | None,
                       signature: str, now: float) -> None:
    signature = signature.strip()
    if not signature:
        raise SignatureError(f"missing {HUBSPOT_V3} header")
    stamp = _require(headers, HUBSPOT_TIMESTAMP)
    millis = _timestamp(stamp, HUBSPOT_TIMESTAMP)
    _fresh(millis / 1000, now, HUBSPOT_TOLERANCE, "HubSpot")
    if not url:
        raise SignatureError("HubSpot v3 signs the full request URL, and it is unknown here")
    prefix = _utf8(method, "request method")
    suffix = body + stamp.encode("ascii")
    candidates = [_b64_hmac(secret, prefix + _utf8(url, "request URL") + suffix)]
    decoded = hubspot_decode_uri(url)
    if decoded != url:
        candidates.append(_b64_hmac(secret, prefix + _utf8(decoded, "request URL") + suffix))
    if not _any_equal(_utf8(signature, f"{HUBSPOT_V3} header"), candidates):
        raise SignatureError("HubSpot v3 signature does not match")


# --- Mautic ------------------------------------------------------------------------------


def verify_mautic(secret: str, body: bytes, headers: Mapping[str, str] | None) -> str:
    body = _bytes(body)
    signature = _require(headers, MAUTIC_SIGNATURE)
    if not hmac.compare_digest(_utf8(signature, f"{MAUTIC_SIGNATURE} header"), _b64_hmac(secret, body)):
        raise SignatureError("Mautic signature does not match")
    return "mautic:" + hashlib.sha256(body).hexdigest()[:32]


# --- Typeform ----------------------------------------------------------------------------


def verify_typeform(secret: str, body: bytes, headers: Mapping[str, str] | None) -> None:
    body = _bytes(body)
    signature = _require(headers, TYPEFORM_SIGNATURE)
    if not signature.startswith("sha256="):
        raise SignatureError(f"malformed {TYPEFORM_SIGNATURE} header: expected sha256=<base64>")
    expected = b"sha256=" + _b64_hmac(secret, body)
    if not hmac.compare_digest(_utf8(signature, f"{TYPEFORM_SIGNATURE} header"), expected):
        raise SignatureError("Typeform signature does not match")
    return None


# --- Calendly ----------------------------------------------------------------------------


def _calendly_parts(header: str) -> tuple[str, list[str]]:
    stamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            continue  # tolerate stray parts, as with unknown keys
        name, value = name.strip(), value.strip()
        if name == "t":
            stamps.append(value)
        elif name == "v1" and value:
            signatures.append(value)
    if not stamps:
        raise SignatureError(f"malformed {CALENDLY_SIGNATURE} header: no t=")
    if len(set(stamps)) > 1:
        raise SignatureError(f"malformed {CALENDLY_SIGNATURE} header: several different t=")
    if not signatures:
        raise SignatureError(f"malformed {CALENDLY_SIGNATURE} header: no v1=")
    return stamps[0], signatures


def verify_calendly(secret: str, body: bytes, headers: Mapping[str, str] | None, now: float,
                    tolerance: float = CALENDLY_TOLERANCE) -> None:
    body = _bytes(body)
    stamp, signatures = _calendly_parts(_require(headers, CALENDLY_SIGNATURE))
    seconds = _timestamp(stamp, f"{CALENDLY_SIGNATURE} t=")
    _fresh(seconds, now, tolerance, "Calendly")
    expected = hmac.new(_key(secret), stamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest().encode("ascii")
    ok = False
    for candidate in signatures:
        ok |= hmac.compare_digest(_utf8(candidate, f"{CALENDLY_SIGNATURE} header"), expected)
    if not ok:
        raise SignatureError("Calendly signature does not match")
    return None


# --- SendGrid ----------------------------------------------------------------------------

_SENDGRID_KEY_PROBLEM = ("the configured SendGrid verification key is not an ECDSA P-256 public key "
                         "(LEADFLOW_WEBHOOK_SECRET_SENDGRID: base64 DER SubjectPublicKeyInfo or PEM)")


@lru_cache(maxsize=8)
def _sendgrid_public_key(configured: str) -> ec.EllipticCurvePublicKey:
    text = configured.strip()
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
            key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeError):
        raise SignatureError(_SENDGRID_KEY_PROBLEM) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError(_SENDGRID_KEY_PROBLEM)
    return key


def verify_sendgrid(public_key_b64: str, body: bytes, headers: Mapping[str, str] | None, now: float,
                    tolerance: float = SENDGRID_TOLERANCE) -> None:
    body = _bytes(body)
    key = _sendgrid_public_key(public_key_b64)
    signature = _require(headers, SENDGRID_SIGNATURE)
    stamp = _require(headers, SENDGRID_TIMESTAMP)
    seconds = _timestamp(stamp, SENDGRID_TIMESTAMP)
    _fresh(seconds, now, tolerance, "SendGrid")
    try:
        der = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError(f"malformed {SENDGRID_SIGNATURE} header: not base64") from None
    try:
        key.verify(der, stamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureError("SendGrid signature does not match") from None
    return None


def generate_sendgrid_keypair() -> tuple[str, str]:
    """A fresh P-256 key pair: (PKCS#8 PEM private key, base64 DER SubjectPublicKeyInfo public key),
    the latter in the form SendGrid shows as the verification key."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode("ascii")
    public_der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, base64.b64encode(public_der).decode("ascii")


def _sendgrid_private_key(secret: str) -> ec.EllipticCurvePrivateKey:
    text = secret.strip()
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        else:
            key = serialization.load_der_private_key(base64.b64decode("".join(text.split()), validate=True),
                                                     password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeError):
        raise ValueError("the SendGrid signing key must be a P-256 private key (PKCS#8 PEM or base64 DER)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the SendGrid signing key must be a P-256 private key (PKCS#8 PEM or base64 DER)")
    return key


# --- dispatch ----------------------------------------------------------------------------


def verify(delivery: Delivery, secret: str | None, *, now: float) -> str | None:
    """Check `delivery` with its vendor's scheme; the replay key when the scheme has one."""
    source = delivery.source
    if source not in SOURCES:
        raise SignatureError("unknown webhook source")
    if not secret:
        raise SignatureError(f"no secret is configured for {source} (LEADFLOW_WEBHOOK_SECRET_{source.upper()})")
    body = _bytes(delivery.body)
    headers = delivery.headers or {}
    if source == "hubspot":
        return verify_hubspot(secret, delivery.method, delivery.url, body, headers, now)
    if source == "mautic":
        return verify_mautic(secret, body, headers)
    if source == "typeform":
        return verify_typeform(secret, body, headers)
    if source == "calendly":
        return verify_calendly(secret, body, headers, now)
    return verify_sendgrid(secret, body, headers, now)


def sign(source: str, body: bytes, secret: str, *, method: str = "POST", url: str = "",
         now: float) -> dict[str, str]:
    """The signature headers `source` would send with `body` at time `now` (names lower-cased).

    HubSpot: v3 over `method + url + body + timestamp`. SendGrid: `secret` is the P-256
    private key (PKCS#8 PEM or base64 DER), not the verification key."""
    body = _bytes(body)
    if not secret:
        raise ValueError(f"a secret is needed to sign as {source}")
    if source == "hubspot":
        stamp = str(int(now * 1000))
        message = method.encode("utf-8") + url.encode("utf-8") + body + stamp.encode("ascii")
        return {HUBSPOT_V3: _b64_hmac(secret, message).decode("ascii"), HUBSPOT_TIMESTAMP: stamp}
    if source == "mautic":
        return {MAUTIC_SIGNATURE: _b64_hmac(secret, body).decode("ascii")}
    if source == "typeform":
        return {TYPEFORM_SIGNATURE: "sha256=" + _b64_hmac(secret, body).decode("ascii")}
    if source == "calendly":
        stamp = str(int(now))
        digest = hmac.new(_key(secret), stamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
        return {CALENDLY_SIGNATURE: f"t={stamp},v1={digest}"}
    if source == "sendgrid":
        stamp = str(int(now))
        signature = _sendgrid_private_key(secret).sign(stamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return {SENDGRID_SIGNATURE: base64.b64encode(signature).decode("ascii"), SENDGRID_TIMESTAMP: stamp}
    raise ValueError(f"no signature scheme for source {source!r}")
