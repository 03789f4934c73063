"""``trialbench export RUN --format csv|json|parquet``: every table of a run as flat files.

The run folder's tables (:data:`harness.results.SCHEMAS`: orders, codes, refunds,
suppliers, timeline; each ``<table>.parquet``) are written to ``--out`` (default
``RUN/export/``) as ``<table>.csv``, ``<table>.json`` or ``<table>.parquet``, with the
run's ``schema.json`` (every column's meaning and unit) beside them.

- **Money is exact.** A money column (its schema says "currency units", or it holds
  :class:`~decimal.Decimal` values) is written as a decimal *string* in CSV and JSON, never
  a binary float: ``"98.50"``, ``"0.125"``. Decimal values are written as they are; a float
  (tables written before money became decimal) as the shortest text that reads back as the
  same float, with at least two decimals. Parquet keeps the table's own types (decimal
  where the table has them).
- **Times** are ISO 8601 in UTC (``2026-11-27T01:57:07.123456+00:00``); missing values
  are empty in CSV and ``null`` in JSON; booleans are ``true``/``false``.
- **JSON** is one array of objects per table (column → value), in the table's row order.

Pure pandas: it never imports Locust, so a notebook can call :func:`export_run`.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from harness.errors import ResultsError

ExportFormat = Literal["csv", "json", "parquet"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "json", "parquet")
MONEY_MARK = "currency units"
"""What a column's description in ``schema.json`` says when the column is money."""


def money_columns(table: str, frame: pd.DataFrame,
                  schemas: dict[str, dict[str, str]] | None = None) -> list[str]:
    """The money columns of ``table``: described in currency units, a balance, or holding
    Decimals."""
    from harness.results import SCHEMAS

    described = (schemas or {}).get(table) or SCHEMAS.get(table, {})
    found = []
    for column in frame.columns:
        text = str(described.get(column, ""))
        if MONEY_MARK in text or str(column).startswith("balance") \
                or _holds_decimals(frame[column]):
            found.append(str(column))
    return found


def _holds_decimals(series: pd.Series) -> bool:
    if series.dtype != object:
        return False
    return any(isinstance(value, Decimal) for value in series.head(1000))


def money_text(value: Any) -> str | None:
    """A money value as exact decimal text, or None when missing.

    >>> money_text(Decimal("98.5")), money_text(97.0), money_text(0.125), money_text(None)
    ('98.5', '97.00', '0.125', None)
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Decimal):
        return None if value.is_nan() else str(value)
    if isinstance(value, str):
        return value or None
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    text = Decimal(repr(number))  # the shortest text that reads back as this float
    exponent = text.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        text = text.quantize(Decimal("0.01"))
    return str(text)


def _plain(value: Any) -> Any:
    """One cell as a JSON value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Decimal):
        return None if value.is_nan() else str(value)
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict | list | tuple):
        return json.loads(json.dumps(value, default=str))
    return value


def flat_frame(table: str, frame: pd.DataFrame,
               schemas: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """A copy of ``frame`` ready for text formats: money as exact strings, times as ISO
    8601 strings (missing values stay missing)."""
    out = frame.copy()
    for column in money_columns(table, frame, schemas):
        out[column] = frame[column].map(money_text).astype(object)
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: None if pd.isna(v) else pd.Timestamp(v).isoformat()).astype(object)
    return out


def table_names(run_dir: Path) -> list[str]:
    """The tables the run folder holds, in the order of :data:`harness.results.SCHEMAS`."""
    from harness.results import SCHEMAS

    return [name for name in SCHEMAS if (run_dir / f"{name}.parquet").is_file()]


def export_run(run_dir: Path, fmt: str, out: Path | None = None,
               tables: Iterable[str] | None = None) -> list[Path]:
    """Write every table of ``run_dir`` (or those named) as ``fmt`` into ``out`` (default
    ``run_dir / "export"``), with ``schema.json``; return the files written."""
    if fmt not in FORMATS:
        raise ResultsError(f"format {fmt!r}: write one of {', '.join(FORMATS)}")
    if not (run_dir / "manifest.json").is_file():
        raise ResultsError(f"{run_dir}: not a run folder (no manifest.json); see `ls results/`")
    names = table_names(run_dir)
    if tables is not None:
        wanted = list(tables)
        unknown = [name for name in wanted if name not in names]
        if unknown:
            raise ResultsError(f"{run_dir}: no table {', '.join(unknown)}; it has "
                               f"{', '.join(names) or 'none'}")
        names = wanted
    if not names:
        raise ResultsError(f"{run_dir}: no tables; was the run closed? `trialbench resume "
                           f"{run_dir}` builds them")
    target = out if out is not None else run_dir / "export"
    target.mkdir(parents=True, exist_ok=True)
    schemas = _run_schemas(run_dir)
    written: list[Path] = []
    for name in names:
        source = run_dir / f"{name}.parquet"
        path = target / f"{name}.{fmt}"
        if fmt == "parquet":
            if source.resolve() != path.resolve():
                shutil.copyfile(source, path)
        else:
            frame = flat_frame(name, pd.read_parquet(source), schemas)
            if fmt == "csv":
                frame.to_csv(path, index=False)
            else:
                records = [{str(column): _plain(value) for column, value in row.items()}
                           for row in frame.to_dict("records")]
                path.write_text(json.dumps(records, ensure_ascii=False, allow_nan=False,
                                           indent=1) + "\n", encoding="utf-8")
        written.append(path)
    schema_file = run_dir / "schema.json"
    if schema_file.is_file() and schema_file.resolve() != (target / "schema.json").resolve():
        shutil.copyfile(schema_file, target / "schema.json")
        written.append(target / "schema.json")
    return written


def _run_schemas(run_dir: Path) -> dict[str, dict[str, str]] | None:
    """The run's own ``schema.json`` (its tables' columns as they were written), if any."""
    try:
        data = json.loads((run_dir / "schema.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, dict[str, str]] = {}
    for table, columns in data.items():
        if isinstance(columns, dict):
            out[str(table)] = {str(k): v if isinstance(v, str) else json.dumps(v)
                               for k, v in columns.items()}
    return out


__all__ = ["FORMATS", "MONEY_MARK", "ExportFormat", "export_run", "flat_frame",
           "money_columns", "money_text", "table_names"]
