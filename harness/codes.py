"""Code verification: pattern → duplicate → face value → issuer → expiry margin.

Every check runs on every code and is recorded; the verdict is the first that fails in
that order (a fake code that also expires soon is ``not_minted``, the graver fault).

Codes are money. Outside the one owner-only plain file, a code is known only by its
keyed hash (HMAC-SHA256 of the serial under a key kept in ``results/.code-key``, so
hashes match across runs) and its masked serial (``****-****-1234``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from harness.drivers.base import Code, IssuerVerdict

KEY_ENV = "TRIALBENCH_CODE_KEY"

VERDICTS = ("valid", "bad_pattern", "duplicate", "wrong_face_value", "expiring",
            "not_minted", "resold", "expired", "disabled", "unchecked")
"""Possible verdicts: ``valid``, or the first check failed in pipeline order."""

ISSUER_TO_VERDICT = {"not_found": "not_minted", "redeemed": "resold", "expired": "expired",
                     "disabled": "disabled"}


def load_code_key(results_root: Path) -> bytes:
    """The hashing key: ``$TRIALBENCH_CODE_KEY``, else ``results/.code-key`` (made 0600)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    path = results_root / ".code-key"
    if not path.exists():
        results_root.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".code-key.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:  # first writer wins, whole: burst workers may start at the same moment
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(partial)
    return path.read_text().strip().encode()


def code_hash(key: bytes, serial: str) -> str:
    """Keyed hash of a serial: stable across runs with the same key, useless without it."""
    return hmac.new(key, serial.encode(), hashlib.sha256).hexdigest()[:32]


def mask_serial(serial: str, keep: int = 4) -> str:
    """Hide every letter and digit but the last ``keep``; separators stay."""
    cut = max(0, len(serial) - keep)
    return re.sub(r"[A-Za-z0-9]", "*", serial[:cut]) + serial[cut:]


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The verdict on one code, with the result of every check (hash and mask only)."""

    code_hash: str
    serial_masked: str
    claimed_face_value: Decimal
    expected_face_value: Decimal
    expires_at: datetime | None
    pattern_ok: bool | None  # None: no pattern known
    duplicate_of: str | None  # "this_run" or "earlier_run"
    face_value_ok: bool
    expiry_ok: bool
    issuer_status: str  # active, redeemed, expired, disabled, not_found, unchecked
    issuer_face_value: Decimal | None
    verdict: str


class DuplicateIndex:
    """Every code hash seen: in earlier runs (loaded once) and in this run."""

    def __init__(self, earlier: Iterable[str] = ()) -> None:
        self._earlier = frozenset(earlier)
        self._this_run: set[str] = set()

    def see(self, digest: str) -> str | None:
        """Record ``digest``; return where it was seen before, if anywhere."""
        if digest in self._this_run:
            return "this_run"
        self._this_run.add(digest)
        return "earlier_run" if digest in self._earlier else None


def check_code(code: Code, *, key: bytes, pattern: str | None, expected_face_value: Decimal,
               now: datetime, expiry_margin: timedelta, duplicates: DuplicateIndex,
               issuer: IssuerVerdict | None) -> CodeCheck:
    """Run the pipeline on one code; ``issuer`` is None where no issuer is configured."""
    digest = code_hash(key, code.serial)
    pattern_ok = None if pattern is None else re.fullmatch(pattern, code.serial) is not None
    duplicate_of = duplicates.see(digest)
    issuer_value = issuer.face_value if issuer is not None else None
    face_ok = code.face_value == expected_face_value and (
        issuer_value is None or issuer_value == expected_face_value)
    expires = code.expires_at or (issuer.expires_at if issuer is not None else None)
    expiry_ok = expires is None or expires - now >= expiry_margin
    issuer_status = "unchecked" if issuer is None else issuer.status

    if pattern_ok is False:
        verdict = "bad_pattern"
    elif duplicate_of is not None:
        verdict = "duplicate"
    elif not face_ok:
        verdict = "wrong_face_value"
    elif issuer_status in ISSUER_TO_VERDICT:
        verdict = ISSUER_TO_VERDICT[issuer_status]
    elif not expiry_ok:
        verdict = "expiring"
    else:
        verdict = "valid"
    return CodeCheck(digest, mask_serial(code.serial), code.face_value, expected_face_value,
                     expires, pattern_ok, duplicate_of, face_ok, expiry_ok, issuer_status,
                     issuer_value, verdict)


REFUND_REASON_FOR = {"bad_pattern": "invalid_code", "duplicate": "invalid_code",
                     "not_minted": "invalid_code", "resold": "invalid_code",
                     "expired": "invalid_code", "disabled": "invalid_code",
                     "wrong_face_value": "wrong_face_value", "expiring": "other"}
"""The refund reason the after-sales plan gives for each kind of bad code."""
