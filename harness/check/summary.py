"""Words for ``trialbench check`` and ``trialbench history``: terminal text and Markdown.

Every sentence is a template in :data:`TEXT` (English), keyed so a language catalogue can
take them over: ``reason.<reason>`` explains a :class:`~harness.check.evaluate.CheckResult`,
the others frame the output. Templates use ``str.format`` fields only.
"""

from __future__ import annotations

import math
from typing import Any

from harness.check.evaluate import CheckReport, CheckResult
from harness.check.history import Trend
from harness.check.metrics import KEY_METRICS, METRICS

TEXT: dict[str, str] = {
    "reason.met": "met: {value} (95% interval {interval}, n={n})",
    "reason.breach": "BREACH: {value} (95% interval {interval}, n={n}) does not meet {name}",
    "reason.inconclusive": "inconclusive, not passed: {value} with 95% interval {interval} "
                           "(n={n}) lies on both sides of the limit; more orders would decide",
    "reason.too_few": "skipped, not passed: {n} samples, the check needs {needs}",
    "reason.no_samples": "skipped, not passed: no samples for {metric}",
    "reason.no_regression": "no regression: baseline {baseline} (n={baseline_n}) → new "
                            "{value} (n={n}), 95% interval {interval}, p={p} "
                            "(Holm alpha {alpha}, margin {margin})",
    "reason.regressed": "REGRESSION: baseline {baseline} (n={baseline_n}) → new {value} "
                        "(n={n}), 95% interval {interval}, p={p} below Holm alpha {alpha}; "
                        "worse by more than the margin {margin}",
    "reason.reachable": "{value} of {n} orders accepted",
    "reason.unreachable": "UNREACHABLE: none of {n} orders was accepted ({errors}); check "
                          "the base URL and credentials",
    "reason.no_orders": "no orders were sent; the run cannot be judged",
    "reason.interrupted": "the run was interrupted; finish it with `trialbench resume` first",
    "reason.run_failed": "the run failed: {why}",
    "reason.not_in_run": "skipped: the SLA names this supplier but the runs have none of its "
                         "orders",
    "reason.not_in_baseline": "skipped: the supplier is not in the baseline runs",
    "reason.no_baseline": "skipped: the history has no green run to compare with",
    "reason.change_point": "CHANGE POINT after the last green run: {changes}",
    "reason.no_change_point": "no worsening change point since the last green run{changes}",
    "reason.short_history": "skipped: {n} runs in the history, change points need 6",
    "title": "trialbench check",
    "runs": "runs: {runs}",
    "baseline": "baseline: {runs}",
    "history": "history: {folder}",
    "totals": "{pass} passed, {fail} failed, {skipped} skipped (never counted as passed), "
              "{error} could not be judged",
    "exit.0": "result: OK (exit 0)",
    "exit.1": "result: FAILED, a breach or a regression (exit 1): {failures}",
    "exit.3": "result: CANNOT JUDGE (exit 3): {why}",
    "why.nothing": "no check had enough data",
    "why.strict": "checks were skipped and --strict is on",
    "col.supplier": "supplier",
    "col.check": "check",
    "col.status": "status",
    "col.detail": "detail",
    "status.pass": "pass",
    "status.fail": "FAIL",
    "status.skipped": "skipped",
    "status.error": "ERROR",
    "trend.title": "history of {folder}: {runs} runs",
    "trend.supplier": "supplier {supplier}",
    "trend.changes": "change points:",
    "trend.change": "  {metric} at run {run_id}: {before} → {after} (p={p}){worse}",
    "trend.worse": " (worse)",
    "trend.none": "  no change points",
}
"""Every user-facing string of check and history (English)."""


def fmt(x: float | None) -> str:
    """A number for people: 4 significant digits, '-' for none, '∞' for infinity."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.4g}"


def _fields(r: CheckResult) -> dict[str, Any]:
    changes = r.detail.get("changes") or []
    return {"value": fmt(r.value), "n": r.n, "needs": r.needs, "name": r.name,
            "metric": r.metric, "baseline": fmt(r.baseline), "baseline_n": r.baseline_n,
            "interval": "-" if r.interval is None
            else f"[{fmt(r.interval[0])}, {fmt(r.interval[1])}]",
            "p": "-" if r.p_value is None else f"{r.p_value:.2g}",
            "alpha": "-" if r.alpha is None else f"{r.alpha:.2g}",
            "margin": fmt(r.margin), "errors": r.detail.get("errors", "-"),
            "why": r.detail.get("why", ""),
            "changes": ("; ".join(changes) if r.reason == "change_point"
                        else (" (earlier: " + "; ".join(changes) + ")") if changes else "")}


def message(r: CheckResult) -> str:
    """The one-line explanation of a check result."""
    return TEXT[f"reason.{r.reason}"].format(**_fields(r))


def case_name(r: CheckResult) -> str:
    """The check's name as CI shows it, e.g. ``threshold: validity_rate >= 0.99``."""
    return f"{r.layer}: {r.name}"


def verdict(report: CheckReport) -> str:
    """The last line: the exit code and why."""
    code = report.exit_code
    if code == 1:
        failures = ", ".join(f"{r.supplier} {r.metric}" for r in report.results
                             if r.status == "fail")
        return TEXT["exit.1"].format(failures=failures)
    if code == 3:
        errors = [f"{r.supplier}: {message(r)}" for r in report.results if r.status == "error"]
        why = "; ".join(errors) if errors else TEXT["why.strict"] \
            if report.strict and report.counts()["pass"] else TEXT["why.nothing"]
        return TEXT["exit.3"].format(why=why)
    return TEXT["exit.0"]


def _header(report: CheckReport) -> list[str]:
    lines = [TEXT["runs"].format(runs=", ".join(report.runs))]
    if report.baseline_runs:
        lines.append(TEXT["baseline"].format(runs=", ".join(report.baseline_runs)))
    if report.history:
        lines.append(TEXT["history"].format(folder=report.history))
    return lines


def terminal_text(report: CheckReport) -> str:
    """The check's result as plain text, grouped by supplier."""
    lines = [TEXT["title"], *_header(report), ""]
    for supplier in report.suppliers:
        lines.append(supplier)
        for r in report.results:
            if r.supplier == supplier:
                lines.append(f"  {TEXT['status.' + r.status]:<8} {case_name(r)}: {message(r)}")
    lines += ["", TEXT["totals"].format(**report.counts()), verdict(report)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: CheckReport) -> str:
    """A Markdown summary for a CI job summary (GitHub ``$GITHUB_STEP_SUMMARY``)."""
    icon = {"pass": "✅", "fail": "❌", "skipped": "⚪", "error": "⚠️"}
    lines = [f"## {TEXT['title']}", "", *[f"- {h}" for h in _header(report)], "",
             f"**{verdict(report)}**", "", TEXT["totals"].format(**report.counts()), "",
             f"| {TEXT['col.supplier']} | {TEXT['col.check']} | {TEXT['col.status']} | "
             f"{TEXT['col.detail']} |", "|---|---|---|---|"]
    ordered = sorted(report.results, key=lambda r: ({"fail": 0, "error": 1, "skipped": 2,
                                                    "pass": 3}[r.status],
                                                   report.suppliers.index(r.supplier)))
    for r in ordered:
        lines.append(f"| {_cell(r.supplier)} | {_cell(case_name(r))} | {icon[r.status]} "
                     f"{TEXT['status.' + r.status]} | {_cell(message(r))} |")
    return "\n".join(lines) + "\n"


def trend_text(trend: Trend, folder: str) -> str:
    """Each supplier's trend (tier and key metrics per run) and its change points."""
    table = trend.table
    lines = [TEXT["trend.title"].format(folder=folder, runs=table["run_id"].nunique())]
    shown = [m for m in KEY_METRICS if table[m].notna().any()] if len(table) else []
    for supplier, rows in table.groupby("supplier", sort=True):
        lines += ["", TEXT["trend.supplier"].format(supplier=supplier)]
        head = ["run", "status", "tier", *shown]
        body = [[str(r["run_id"]), str(r["status"]), str(r["tier"] or "-"),
                 *[fmt(float(r[m])) for m in shown]] for _, r in rows.iterrows()]
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        for row in (head, *body):
            lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)))
        lines.append(TEXT["trend.changes"])
        own = [c for c in trend.changes if c.supplier == supplier]
        lines += [TEXT["trend.change"].format(
            metric=c.metric, run_id=c.run_id, before=fmt(c.before), after=fmt(c.after),
            p=f"{c.p_value:.2g}", worse=TEXT["trend.worse"] if c.worse else "")
            for c in own] or [TEXT["trend.none"]]
    return "\n".join(lines)


__all__ = ["METRICS", "TEXT", "case_name", "fmt", "markdown", "message", "terminal_text",
           "trend_text", "verdict"]
