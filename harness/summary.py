"""The first summary of a trial run: per supplier, in the terminal and as ``report.md``.

Every figure comes from :func:`harness.metrics.supplier_metrics`; this module only lays
them out, in the reader's language (``lang``; default :func:`harness.i18n.resolve_lang`:
``$TRIALBENCH_LANG``, else the locale), suppliers by their display name, code faults by
their one name from :mod:`harness.i18n.vocabulary`. ``summary.csv`` keeps the English
column names and slugs of the metrics table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.i18n import resolve_lang, text
from harness.i18n.vocabulary import term
from harness.metrics import BAD_VERDICTS, rate_intervals, supplier_metrics
from harness.results import load_runs

SHORT_VERDICT = {v: term("verdict", v, "en") for v in BAD_VERDICTS}
"""English display name of each bad code verdict (the vocabulary's; kept for callers)."""


def scenario_fees(scenario: Any) -> dict[str, dict[str, float]]:
    """``{supplier: {fee: value}}`` from a scenario's suppliers, for the cost rate."""
    return {s.name: {k: float(v) for k, v in s.fees.model_dump().items()}
            for s in scenario.suppliers}


def scenario_names(scenario: Any) -> dict[str, str]:
    """``{slug: display name}`` of a scenario's suppliers."""
    return {s.name: s.display_name or s.name for s in scenario.suppliers}


def _fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value + 0.0, spec)  # + 0.0: no "-0.00"


def _bad_codes(row: Any, lang: str) -> str:
    parts = []
    for verdict in BAD_VERDICTS:
        count = int(getattr(row, f"codes_{verdict}"))
        if count:
            parts.append(f"{term('verdict', verdict, lang)} {count}")
    return text("join.list", lang).join(parts) or "-"


def supplier_summary(run_dirs: list[Path], fees: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The metrics of the runs with Wilson intervals on the rates."""
    tables = load_runs(run_dirs)
    metrics = supplier_metrics(tables.orders, tables.codes, tables.refunds, tables.suppliers,
                               fees)
    return rate_intervals(metrics, method="wilson")


def render_table(summary: pd.DataFrame, lang: str = "en",
                 names: Mapping[str, str] | None = None) -> Table:
    """The terminal table: compact enough for 110 columns."""
    table = Table(title=text("summary.title", lang), caption=text("summary.caption", lang))
    for key in ("supplier", "in_sla", "median_s", "valid", "bad_codes", "refunds", "fee",
                "cost_rate"):
        table.add_column(text(f"summary.col_{key}", lang),
                         justify="left" if key in ("supplier", "bad_codes") else "right")
    for row in summary.itertuples():
        table.add_row(
            escape((names or {}).get(str(row.supplier), str(row.supplier))),
            f"{row.sla_share_k}/{row.sla_share_n}"
            + (text("summary.blocked", lang, count=row.orders_skipped)
               if row.orders_skipped else ""),
            _fmt(row.delivery_median_ms / 1000, ".2f"),
            f"{row.validity_k}/{row.validity_n} [{_fmt(row.validity_lo, '.2f')},"
            f"{_fmt(row.validity_hi, '.2f')}]",
            escape(_bad_codes(row, lang)),
            text("summary.refunds_cell", lang, completed=row.refund_completion_k,
                 credited=row.refund_credit_k, requested=row.refund_completion_n),
            _fmt(row.hidden_fee_per_order, ".2f"), _fmt(row.cost_rate, ".3f"))
    return table


def render_markdown(summary: pd.DataFrame, run_id: str, deadline_s: float, lang: str = "en",
                    names: Mapping[str, str] | None = None) -> str:
    """``report.md``: the summary as a Markdown table, in ``lang``."""
    lines = [text("summary.md_title", lang, run=run_id), "",
             text("summary.md_intro", lang, deadline=deadline_s), "",
             text("summary.md_header", lang),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary.itertuples():
        name = (names or {}).get(str(row.supplier), str(row.supplier)).replace("|", "\\|")
        lines.append(
            f"| {name} | {row.sla_share_k}/{row.sla_share_n} | {row.orders_skipped} | "
            f"{_fmt(row.delivery_median_ms / 1000, '.2f')} | "
            f"{row.validity_k}/{row.validity_n} | [{_fmt(row.validity_lo, '.3f')}, "
            f"{_fmt(row.validity_hi, '.3f')}] | {_bad_codes(row, lang)} | "
            f"{row.refund_completion_n} | {row.refund_completion_k} | {row.refund_credit_k} | "
            f"{_fmt(row.refund_latency_median_s, '.2f')} | {row.oversold_k}/{row.oversold_n} | "
            f"{_fmt(row.hidden_fee_per_order, '.2f')} | {_fmt(row.cost_rate, '.3f')} |")
    lines += ["", text("summary.md_cost_note", lang), ""]
    return "\n".join(lines)


def write_summary(run_dir: Path, scenario: Any, console: Console | None = None,
                  lang: str | None = None) -> pd.DataFrame:
    """Print the summary and write ``report.md`` and ``summary.csv`` into the run folder
    (``lang``: default :func:`harness.i18n.resolve_lang`)."""
    lang = resolve_lang(lang)
    names = scenario_names(scenario)
    summary = supplier_summary([run_dir], scenario_fees(scenario))
    deadline = scenario.trial.deadline_s if scenario.trial is not None else math.nan
    (run_dir / "report.md").write_text(render_markdown(summary, run_dir.name, deadline, lang,
                                                       names), encoding="utf-8")
    summary.to_csv(run_dir / "summary.csv", index=False)
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 110)  # logs and CI: do not wrap the table
    console.print(render_table(summary, lang, names))
    return summary
