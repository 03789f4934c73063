"""The first summary of a trial run: per supplier, in the terminal and as ``report.md``.

Every figure comes from :func:`harness.metrics.supplier_metrics`; this module only lays
them out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.metrics import BAD_VERDICTS, rate_intervals, supplier_metrics
from harness.results import load_runs

SHORT_VERDICT = {"bad_pattern": "pattern", "duplicate": "dup", "wrong_face_value": "face",
                 "not_minted": "fake", "resold": "resold", "expired": "expired",
                 "disabled": "disabled", "expiring": "expiring"}


def scenario_fees(scenario: Any) -> dict[str, dict[str, float]]:
    """``{supplier: {fee: value}}`` from a scenario's suppliers, for the cost rate."""
    return {s.name: {k: float(v) for k, v in s.fees.model_dump().items()}
            for s in scenario.suppliers}


def _fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value + 0.0, spec)  # + 0.0: no "-0.00"


def _bad_codes(row: Any, short: bool) -> str:
    parts = []
    for verdict in BAD_VERDICTS:
        count = int(getattr(row, f"codes_{verdict}"))
        if count:
            parts.append(f"{SHORT_VERDICT[verdict] if short else verdict} {count}")
    return ", ".join(parts) or "-"


def supplier_summary(run_dirs: list[Path], fees: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The metrics of the runs with Wilson intervals on the rates."""
    tables = load_runs(run_dirs)
    metrics = supplier_metrics(tables.orders, tables.codes, tables.refunds, tables.suppliers,
                               fees)
    return rate_intervals(metrics, method="wilson")


def render_table(summary: pd.DataFrame) -> Table:
    """The terminal table: compact enough for 110 columns."""
    table = Table(title="trial summary", caption="in SLA: of orders sent, and orders the "
                  "spending cap blocked (never sent); valid: valid/checked codes [95% Wilson "
                  "interval]; refunds: completed/credited of requested; fee: hidden fee "
                  "per order")
    for name in ("supplier", "in SLA", "median s", "valid", "bad codes", "refunds", "fee",
                 "cost rate"):
        table.add_column(name, justify="left" if name in ("supplier", "bad codes") else "right")
    for row in summary.itertuples():
        table.add_row(
            str(row.supplier), f"{row.sla_share_k}/{row.sla_share_n}"
            + (f", {row.orders_skipped} blocked" if row.orders_skipped else ""),
            _fmt(row.delivery_median_ms / 1000, ".2f"),
            f"{row.validity_k}/{row.validity_n} [{_fmt(row.validity_lo, '.2f')},"
            f"{_fmt(row.validity_hi, '.2f')}]",
            _bad_codes(row, short=True),
            f"{row.refund_completion_k}/{row.refund_credit_k} of {row.refund_completion_n}",
            _fmt(row.hidden_fee_per_order, ".2f"), _fmt(row.cost_rate, ".3f"))
    return table


def render_markdown(summary: pd.DataFrame, run_id: str, deadline_s: float) -> str:
    lines = [f"# Trial summary: {run_id}", "",
             f"Delivery SLA: {deadline_s:g} s. Intervals are 95% Wilson intervals; with a "
             "handful of orders they are wide, and that is the honest answer.", "",
             "| supplier | in SLA (of sent) | blocked by the cap | median delivery (s) | "
             "valid codes | 95% interval | bad codes | refunds requested | completed | "
             "credited | median refund (s) | oversold of accepted | hidden fee / order | "
             "cost rate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary.itertuples():
        lines.append(
            f"| {row.supplier} | {row.sla_share_k}/{row.sla_share_n} | {row.orders_skipped} | "
            f"{_fmt(row.delivery_median_ms / 1000, '.2f')} | "
            f"{row.validity_k}/{row.validity_n} | [{_fmt(row.validity_lo, '.3f')}, "
            f"{_fmt(row.validity_hi, '.3f')}] | {_bad_codes(row, short=False)} | "
            f"{row.refund_completion_n} | {row.refund_completion_k} | {row.refund_credit_k} | "
            f"{_fmt(row.refund_latency_median_s, '.2f')} | {row.oversold_k}/{row.oversold_n} | "
            f"{_fmt(row.hidden_fee_per_order, '.2f')} | {_fmt(row.cost_rate, '.3f')} |")
    lines += ["", "Cost rate = (purchase cost + platform fees + hidden fees) / sale revenue, "
              "with hidden fees measured from the balance, not from the price list.", ""]
    return "\n".join(lines)


def write_summary(run_dir: Path, scenario: Any, console: Console | None = None) -> pd.DataFrame:
    """Print the summary and write ``report.md`` and ``summary.csv`` into the run folder."""
    summary = supplier_summary([run_dir], scenario_fees(scenario))
    deadline = scenario.trial.deadline_s if scenario.trial is not None else math.nan
    (run_dir / "report.md").write_text(render_markdown(summary, run_dir.name, deadline))
    summary.to_csv(run_dir / "summary.csv", index=False)
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 110)  # logs and CI: do not wrap the table
    console.print(render_table(summary))
    return summary
