"""The code verification pipeline: hashing, masking, each check and its verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from harness.codes import DuplicateIndex, check_code, code_hash, load_code_key, mask_serial
from harness.drivers.base import Code, IssuerVerdict
from harness.runfolder import earlier_code_hashes

NOW = datetime(2026, 11, 25, tzinfo=UTC)
KEY = b"k" * 32
PATTERN = r"STM-\d{4}-\d{4}"
ACTIVE = IssuerVerdict("active", Decimal(100))


def _check(code: Code, issuer: IssuerVerdict | None = ACTIVE,
           duplicates: DuplicateIndex | None = None) -> str:
    return check_code(code, key=KEY, pattern=PATTERN, expected_face_value=Decimal(100),
                      now=NOW, expiry_margin=timedelta(days=30),
                      duplicates=duplicates or DuplicateIndex(), issuer=issuer).verdict


def _code(serial: str = "STM-1234-5678", face: str = "100.00",
          expires: datetime | None = None) -> Code:
    return Code(serial, "PIN", Decimal(face), expires)


@pytest.mark.parametrize(("code", "issuer", "verdict"), [
    (_code(), IssuerVerdict("active", Decimal(100)), "valid"),
    (_code("XX-1"), IssuerVerdict("active", Decimal(100)), "bad_pattern"),
    (_code(face="50.00"), IssuerVerdict("active", Decimal(50)), "wrong_face_value"),
    (_code(), IssuerVerdict("not_found"), "not_minted"),
    (_code(), IssuerVerdict("redeemed", Decimal(100)), "resold"),
    (_code(), IssuerVerdict("expired", Decimal(100)), "expired"),
    (_code(expires=NOW + timedelta(hours=1)), IssuerVerdict("active", Decimal(100)), "expiring"),
    (_code(), None, "valid"),
])
def test_each_check_gives_its_verdict(code: Code, issuer: IssuerVerdict | None,
                                      verdict: str) -> None:
    """Each kind of bad code is named by the check that catches it."""
    assert _check(code, issuer) == verdict


def test_duplicates_found_within_a_run_and_across_runs(tmp_path: Path) -> None:
    """A serial seen earlier in this run or in an earlier run's codes table is a duplicate."""
    index = DuplicateIndex()
    assert _check(_code(), duplicates=index) == "valid"
    assert _check(_code(), duplicates=index) == "duplicate"
    earlier = tmp_path / "run-1"
    earlier.mkdir()
    pd.DataFrame({"code_hash": [code_hash(KEY, "STM-0000-0001")]}).to_parquet(
        earlier / "codes.parquet")
    hashes = earlier_code_hashes(tmp_path)
    assert _check(_code("STM-0000-0001"), duplicates=DuplicateIndex(hashes)) == "duplicate"
    assert earlier_code_hashes(tmp_path, exclude=earlier) == set()


def test_codes_are_hashed_with_a_persistent_key_and_masked(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The key file is created once (0600) and reused; masks keep only the last 4."""
    monkeypatch.delenv("TRIALBENCH_CODE_KEY", raising=False)
    key = load_code_key(tmp_path)
    assert load_code_key(tmp_path) == key
    assert (tmp_path / ".code-key").stat().st_mode & 0o777 == 0o600
    assert code_hash(key, "A") == code_hash(key, "A") != code_hash(b"other", "A")
    assert mask_serial("STM-1234-5678") == "***-****-5678"
