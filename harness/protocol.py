"""Wire-level rules of the reference supplier protocol, shared by simulator and drivers.

Money is a two-place decimal string on the wire and :class:`~decimal.Decimal` in code;
times are RFC 3339 UTC with milliseconds; requests and callbacks are signed with
HMAC-SHA256 over ``METHOD\\nPATH\\nTIMESTAMP\\nhex(sha256(body))``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

SIGNATURE_WINDOW_S = 300
"""A request whose timestamp is further than this from the server's clock is refused."""

ORDER_STATES = ("submitted", "processing", "success", "partial", "failed", "refunded")
FINAL_ORDER_STATES = frozenset({"success", "partial", "failed", "refunded"})
REFUND_STATES = ("pending", "approved", "rejected", "completed")
FINAL_REFUND_STATES = frozenset({"rejected", "completed"})
REFUND_REASONS = ("unused", "invalid_code", "wrong_face_value", "not_delivered", "other")
ISSUER_CODE_STATUSES = ("active", "redeemed", "expired", "disabled")

CLIENT_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CENT = Decimal("0.01")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def format_money(amount: Decimal | int | str) -> str:
    """Render an amount as the protocol's two-place decimal string (half-up)."""
    return str(Decimal(amount).quantize(_CENT, rounding=ROUND_HALF_UP))


MAX_MONEY = Decimal(10) ** 12
"""No price, amount or balance in the protocol is negative or above this."""


_MONEY_RE = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,10})?")


def parse_money(text: object) -> Decimal:
    """Parse a money field: a decimal string (``"98.50"``), finite, between 0 and
    :data:`MAX_MONEY`. Anything else (a number, a list, ``"NaN"``, ``"1e999"``, ``"-5"``)
    raises ``ValueError``: a supplier's malformed money is a protocol error."""
    if not isinstance(text, str):
        raise ValueError(f"money must be a decimal string, got {type(text).__name__}")
    if not _MONEY_RE.fullmatch(text):
        raise ValueError(f"money must be a plain decimal string, got {text[:40]!r}")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"money must be a decimal string, got {text[:40]!r}") from exc
    if value < 0 or value > MAX_MONEY:
        raise ValueError(f"money must be between 0 and {MAX_MONEY}, got {text[:40]!r}")
    return value


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, milliseconds, ``Z`` suffix."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_epoch(epoch_s: float) -> str:
    """RFC 3339 for a Unix time in seconds."""
    return format_time(datetime.fromtimestamp(epoch_s, UTC))


def parse_time(text: object) -> datetime:
    """Parse an RFC 3339 time (``Z`` or an offset) into an aware UTC datetime; anything
    else (a number, a list, a time without a zone) raises ``ValueError``."""
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError(f"time must be an RFC 3339 string, got {type(text).__name__}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError(f"time out of range: {text!r}") from exc


def now_ms() -> int:
    """Unix time in milliseconds, as ``X-Timestamp`` carries it."""
    return int(datetime.now(UTC).timestamp() * 1000)


def body_digest(body: bytes) -> str:
    """Lowercase hex SHA-256 of the exact body bytes."""
    return _EMPTY_SHA256 if not body else hashlib.sha256(body).hexdigest()


def sign(secret: str, method: str, path: str, timestamp_ms: int | str, body: bytes) -> str:
    """The ``X-Signature`` of a request or callback: lowercase hex HMAC-SHA256."""
    message = f"{method.upper()}\n{path}\n{timestamp_ms}\n{body_digest(body)}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, method: str, path: str, timestamp_ms: str | None, body: bytes,
           signature: str | None, *, now: int | None = None,
           window_s: int = SIGNATURE_WINDOW_S) -> bool:
    """True when the signature is right and the timestamp lies within the window."""
    if not timestamp_ms or not signature or not timestamp_ms.isdigit():
        return False
    current = now_ms() if now is None else now
    if abs(current - int(timestamp_ms)) > window_s * 1000:
        return False
    expected = sign(secret, method, path, timestamp_ms, body)
    return hmac.compare_digest(expected, signature.lower())


def signed_headers(api_key: str, secret: str, method: str, path: str, body: bytes,
                   *, timestamp_ms: int | None = None) -> dict[str, str]:
    """The three authentication headers of a supplier request."""
    ts = now_ms() if timestamp_ms is None else timestamp_ms
    return {
        "X-Api-Key": api_key,
        "X-Timestamp": str(ts),
        "X-Signature": sign(secret, method, path, ts, body),
    }


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The protocol's error envelope."""
    return {"error": {"code": code, "message": message}}
