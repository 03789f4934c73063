"""The first summary of a trial run: per supplier, in the terminal and as ``report.md``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.results import RunTables, load_runs


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (NaNs for n = 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def supplier_summary(tables: RunTables, fees: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per supplier with the trial's headline figures (see ``report.md``)."""
    rows: list[dict[str, Any]] = []
    orders, codes, refunds = tables.orders, tables.codes, tables.refunds
    for supplier in orders["supplier"].drop_duplicates():
        o = orders[(orders["supplier"] == supplier) & (orders["state"] != "skipped")]
        c = codes[codes["supplier"] == supplier]
        r = refunds[refunds["supplier"] == supplier]
        s = tables.suppliers[tables.suppliers["supplier"] == supplier]
        delivered = o[o["delivered"].astype(bool)]
        valid = int((c["verdict"] == "valid").sum())
        lo, hi = wilson(valid, len(c))
        bad = c[c["verdict"] != "valid"]["verdict"].value_counts().to_dict()
        completed = r[r["state"] == "completed"]
        credited = completed[completed["credited"].fillna(False).astype(bool)]
        units = float(delivered["quantity"].sum()) if len(delivered) else 0.0
        revenue = float((delivered["sale_price"] * delivered["quantity"]).sum())
        purchase = float(delivered["amount"].sum())
        fee = fees.get(supplier, {})
        platform = revenue * fee.get("platform_pct", 0.0) / 100 \
            + fee.get("fixed_per_order", 0.0) * len(delivered)
        hidden = float(s["hidden_fees"].iloc[0]) if len(s) else math.nan
        per_order = float(s["hidden_fee_per_order"].iloc[0]) if len(s) else math.nan
        rows.append({
            "supplier": supplier, "orders": len(o),
            "in_sla": int(o["within_deadline"].sum()),
            "in_sla_share": float(o["within_deadline"].mean()) if len(o) else math.nan,
            "median_delivery_s": float(delivered["delivery_ms"].median()) / 1000
            if len(delivered) else math.nan,
            "codes": len(c), "valid": valid,
            "validity": valid / len(c) if len(c) else math.nan,
            "validity_lo": lo, "validity_hi": hi,
            "bad_codes": ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "-",
            "refunds": len(r), "refunds_completed": len(completed),
            "refunds_credited": len(credited),
            "hidden_fees": hidden, "hidden_fee_per_order": per_order,
            "cost_rate": (purchase + platform + (hidden if hidden == hidden else 0.0)) / revenue
            if revenue else math.nan,
            "units": units,
        })
    return pd.DataFrame(rows)


def _fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value + 0.0, spec)  # + 0.0: no "-0.00"


SHORT_VERDICT = {"bad_pattern": "pattern", "duplicate": "dup", "wrong_face_value": "face",
                 "not_minted": "fake", "resold": "resold", "expired": "expired",
                 "disabled": "disabled", "expiring": "expiring"}


def render_table(summary: pd.DataFrame) -> Table:
    """The terminal table: compact enough for 100 columns."""
    table = Table(title="trial summary", caption="valid: codes valid, [95% Wilson interval]; "
                  "refunds: completed/credited of requested; fee: hidden fee per order")
    for name in ("supplier", "in SLA", "median s", "valid", "bad codes", "refunds", "fee",
                 "cost rate"):
        table.add_column(name, justify="left" if name in ("supplier", "bad codes") else "right")
    for row in summary.itertuples():
        bad = str(row.bad_codes)
        for long, short in SHORT_VERDICT.items():
            bad = bad.replace(long, short)
        table.add_row(
            str(row.supplier), f"{row.in_sla}/{row.orders}", _fmt(row.median_delivery_s, ".2f"),
            f"{row.valid}/{row.codes} [{_fmt(row.validity_lo, '.2f')},"
            f"{_fmt(row.validity_hi, '.2f')}]",
            bad, f"{row.refunds_completed}/{row.refunds_credited} of {row.refunds}",
            _fmt(row.hidden_fee_per_order, ".2f"), _fmt(row.cost_rate, ".3f"))
    return table


def render_markdown(summary: pd.DataFrame, run_id: str, deadline_s: float) -> str:
    lines = [f"# Trial summary: {run_id}", "",
             f"Delivery SLA: {deadline_s:g} s. Validity intervals are 95% Wilson intervals; "
             "with a handful of codes they are wide, and that is the honest answer.", "",
             "| supplier | in SLA | median delivery (s) | valid codes | 95% interval | "
             "bad codes | refunds requested | completed | credited | hidden fee / order | "
             "cost rate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary.itertuples():
        lines.append(
            f"| {row.supplier} | {row.in_sla}/{row.orders} | {_fmt(row.median_delivery_s, '.2f')}"
            f" | {row.valid}/{row.codes} | [{_fmt(row.validity_lo, '.3f')}, "
            f"{_fmt(row.validity_hi, '.3f')}] | {row.bad_codes} | {row.refunds} | "
            f"{row.refunds_completed} | {row.refunds_credited} | "
            f"{_fmt(row.hidden_fee_per_order, '.2f')} | {_fmt(row.cost_rate, '.3f')} |")
    lines += ["", "Cost rate = (purchase cost + platform fees + hidden fees) / sale revenue, "
              "with hidden fees measured from the balance, not from the price list.", ""]
    return "\n".join(lines)


def write_summary(run_dir: Path, scenario: Any, console: Console | None = None) -> pd.DataFrame:
    """Print the summary and write ``report.md`` and ``summary.csv`` into the run folder."""
    tables = load_runs([run_dir])
    fees = {s.name: {"platform_pct": float(s.fees.platform_pct),
                     "fixed_per_order": float(s.fees.fixed_per_order)}
            for s in scenario.suppliers}
    summary = supplier_summary(tables, fees)
    deadline = scenario.trial.deadline_s if scenario.trial is not None else math.nan
    (run_dir / "report.md").write_text(render_markdown(summary, run_dir.name, deadline))
    summary.to_csv(run_dir / "summary.csv", index=False)
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 110)  # logs and CI: do not wrap the table
    console.print(render_table(summary))
    return summary
