"""``trialbench export``: every table of a run as CSV, JSON or Parquet, money exact."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.export import export_run, money_text
from harness.results import SCHEMAS


def _run_folder(tmp_path: Path) -> Path:
    """A run folder with two tables: orders (money as Decimal, as decimal128 Parquet has
    it) and suppliers (money as float, as older tables have it), with missing values."""
    run = tmp_path / "20261127-000000-x-trial-abcd"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run_id": run.name}))
    (run / "schema.json").write_text(json.dumps(SCHEMAS))
    orders = pd.DataFrame({
        "run_id": [run.name, run.name],
        "client_order_id": ["a-0", "a-1"],
        "intended_at": pd.to_datetime([1_790_000_000.5, 1_790_000_001.25], unit="s",
                                      utc=True),
        "accepted_at": pd.to_datetime([1_790_000_000.75, None], unit="s", utc=True),
        "acceptance_ms": [250.0, float("nan")],
        "within_deadline": [True, False],
        "unit_price": [Decimal("98.50"), None],
        "amount": [Decimal("0.10"), Decimal("1234567890.12")],
    })
    orders.to_parquet(run / "orders.parquet", index=False)
    suppliers = pd.DataFrame({"run_id": [run.name], "supplier": ["acme"],
                              "balance_before": [20000.0], "balance_after": [19999.9],
                              "hidden_fee_per_order": [0.1 + 0.2], "orders_charged": [3]})
    suppliers.to_parquet(run / "suppliers.parquet", index=False)
    return run


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_money_text_is_exact_decimal_text() -> None:
    """Decimals keep their digits; floats become their shortest exact text, two places."""
    assert money_text(Decimal("98.50")) == "98.50"
    assert money_text(Decimal("1234567890.12")) == "1234567890.12"
    assert money_text(97.0) == "97.00" and money_text(19999.9) == "19999.90"
    assert money_text(0.125) == "0.125" and money_text(float("nan")) is None


def test_csv_has_money_as_strings_and_times_in_utc(tmp_path: Path) -> None:
    """CSV: money columns read back digit for digit, times are ISO 8601 UTC, and missing
    values are empty."""
    run = _run_folder(tmp_path)
    written = export_run(run, "csv", tmp_path / "out")
    assert sorted(p.name for p in written) == ["orders.csv", "schema.json", "suppliers.csv"]
    rows = _read_csv(tmp_path / "out" / "orders.csv")
    assert [r["unit_price"] for r in rows] == ["98.50", ""]
    assert [r["amount"] for r in rows] == ["0.10", "1234567890.12"]
    assert rows[0]["intended_at"] == datetime.fromtimestamp(1_790_000_000.5, UTC).isoformat()
    assert rows[1]["accepted_at"] == "" and rows[1]["acceptance_ms"] == ""
    supplier = _read_csv(tmp_path / "out" / "suppliers.csv")[0]
    assert supplier["balance_after"] == "19999.90"
    assert supplier["hidden_fee_per_order"] == "0.30000000000000004"  # the float as stored
    assert supplier["orders_charged"] == "3"  # a count is not money


def test_json_has_money_as_strings_and_nulls(tmp_path: Path) -> None:
    """JSON: one array of objects per table; money strings, null for missing, real
    booleans and numbers."""
    run = _run_folder(tmp_path)
    export_run(run, "json", tmp_path / "out", tables=["orders"])
    rows = json.loads((tmp_path / "out" / "orders.json").read_text())
    assert rows[0]["unit_price"] == "98.50" and rows[1]["unit_price"] is None
    assert rows[1]["amount"] == "1234567890.12"
    assert rows[0]["within_deadline"] is True and rows[0]["acceptance_ms"] == 250.0
    assert rows[1]["accepted_at"] is None and rows[1]["acceptance_ms"] is None
    assert not (tmp_path / "out" / "suppliers.json").exists()


def test_parquet_keeps_the_tables_types(tmp_path: Path) -> None:
    """Parquet: the table as the run wrote it, decimals included."""
    run = _run_folder(tmp_path)
    export_run(run, "parquet", tmp_path / "out")
    back = pd.read_parquet(tmp_path / "out" / "orders.parquet")
    assert back["amount"].tolist() == [Decimal("0.10"), Decimal("1234567890.12")]


def test_export_command_defaults_and_bad_input(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The command writes into RUN/export/ by default; a folder that is not a run, or an
    unknown table, is bad input (exit 2) with a message saying what to do."""
    run = _run_folder(tmp_path)
    assert main(["export", str(run), "--format", "csv"]) == 0
    assert (run / "export" / "orders.csv").is_file()
    assert main(["export", str(tmp_path), "--format", "json"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "json", "--table", "codes"]) == 2
    assert "no table codes" in capsys.readouterr().err
