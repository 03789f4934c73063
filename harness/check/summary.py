"""Words for ``trialbench check`` and ``trialbench history``: terminal text and Markdown.

Every sentence is a template in the ``check:`` section of the language catalogues
(``harness/i18n/en.yaml``, ``zh.yaml``): ``check.reason.<reason>`` explains a
:class:`~harness.check.evaluate.CheckResult` (``<reason>_exact`` when the value was measured
exactly, with no interval), the others frame the output. Every function takes ``lang``.
"""

from __future__ import annotations

import math
from typing import Any

from harness.check.evaluate import CheckReport, CheckResult
from harness.check.history import Trend
from harness.check.metrics import KEY_METRICS
from harness.i18n import DEFAULT_LANG, text


def t(key: str, lang: str = DEFAULT_LANG, /, **fields: Any) -> str:
    """The catalogue string ``check.<key>`` in ``lang`` (harness/i18n/en.yaml, zh.yaml)."""
    return text(f"check.{key}", lang, **fields)


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


def message(r: CheckResult, lang: str = DEFAULT_LANG) -> str:
    """The one-line explanation of a check result."""
    exact = r.interval is None and r.p_value is None and r.reason in (
        "met", "breach", "no_regression", "regressed")
    return t(f"reason.{r.reason}{'_exact' if exact else ''}", lang, **_fields(r))


def case_name(r: CheckResult) -> str:
    """The check's name as CI shows it, e.g. ``threshold: validity_rate >= 0.99``."""
    return f"{r.layer}: {r.name}"


def verdict(report: CheckReport, lang: str = DEFAULT_LANG) -> str:
    """The last line: the exit code and why."""
    code = report.exit_code
    if code == 1:
        failures = ", ".join(f"{r.supplier} {r.metric}" for r in report.results
                             if r.status == "fail")
        return t("exit.1", lang, failures=failures)
    if code == 3:
        errors = [f"{r.supplier}: {message(r, lang)}" for r in report.results
                  if r.status == "error"]
        why = "; ".join(errors) if errors else t("why.strict", lang) \
            if report.strict and report.counts()["pass"] else t("why.nothing", lang)
        return t("exit.3", lang, why=why)
    return t("exit.0", lang)


def _header(report: CheckReport, lang: str) -> list[str]:
    lines = [t("runs", lang, runs=", ".join(report.runs))]
    if report.baseline_runs:
        lines.append(t("baseline", lang, runs=", ".join(report.baseline_runs)))
    if report.history:
        lines.append(t("history", lang, folder=report.history))
    return lines


def terminal_text(report: CheckReport, lang: str = DEFAULT_LANG) -> str:
    """The check's result as plain text, grouped by supplier."""
    lines = [t("title", lang), *_header(report, lang), ""]
    for supplier in report.suppliers:
        lines.append(supplier)
        for r in report.results:
            if r.supplier == supplier:
                lines.append(f"  {t('status.' + r.status, lang):<8} {case_name(r)}: "
                             f"{message(r, lang)}")
    lines += ["", t("totals", lang, **report.counts()), verdict(report, lang)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: CheckReport, lang: str = DEFAULT_LANG) -> str:
    """A Markdown summary for a CI job summary (GitHub ``$GITHUB_STEP_SUMMARY``)."""
    icon = {"pass": "✅", "fail": "❌", "skipped": "⚪", "error": "⚠️"}
    lines = [f"## {t('title', lang)}", "", *[f"- {h}" for h in _header(report, lang)], "",
             f"**{verdict(report, lang)}**", "", t("totals", lang, **report.counts()), "",
             f"| {t('col.supplier', lang)} | {t('col.check', lang)} | "
             f"{t('col.status', lang)} | {t('col.detail', lang)} |", "|---|---|---|---|"]
    ordered = sorted(report.results, key=lambda r: ({"fail": 0, "error": 1, "skipped": 2,
                                                    "pass": 3}[r.status],
                                                   report.suppliers.index(r.supplier)))
    for r in ordered:
        lines.append(f"| {_cell(r.supplier)} | {_cell(case_name(r))} | {icon[r.status]} "
                     f"{t('status.' + r.status, lang)} | {_cell(message(r, lang))} |")
    return "\n".join(lines) + "\n"


def trend_text(trend: Trend, folder: str, lang: str = DEFAULT_LANG) -> str:
    """Each supplier's trend (tier and key metrics per run) and its change points."""
    table = trend.table
    lines = [t("trend.title", lang, folder=folder, runs=table["run_id"].nunique())]
    shown = [m for m in KEY_METRICS if table[m].notna().any()] if len(table) else []
    for supplier, rows in table.groupby("supplier", sort=True):
        lines += ["", t("trend.supplier", lang, supplier=supplier)]
        head = ["run", "status", "tier", *shown]
        body = [[str(r["run_id"]), str(r["status"]), str(r["tier"] or "-"),
                 *[fmt(float(r[m])) for m in shown]] for _, r in rows.iterrows()]
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        for row in (head, *body):
            lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)))
        lines.append(t("trend.changes", lang))
        own = [c for c in trend.changes if c.supplier == supplier]
        lines += [t("trend.change", lang,
                    metric=c.metric, run_id=c.run_id, before=fmt(c.before), after=fmt(c.after),
                    p=f"{c.p_value:.2g}", worse=t("trend.worse", lang) if c.worse else "")
                  for c in own] or [t("trend.none", lang)]
    return "\n".join(lines)


__all__ = [
    "case_name",
    "fmt",
    "markdown",
    "message",
    "t",
    "terminal_text",
    "trend_text",
    "verdict",
]
