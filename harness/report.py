"""The report: the ranking in the terminal, figures, and one self-contained ``report.html``.

Built from a :class:`harness.analysis.RunAnalysis` (never Locust). The HTML puts the
answer first (the headline, the order with its ties and the gated suppliers, tiers, each
gate with its evidence, one sentence per supplier, what the evidence cannot tell yet and
how many orders would settle it, the gate findings, behaviour under load), then the
figures, then the tables. Figures are
matplotlib :class:`~matplotlib.figure.Figure` objects drawn without pyplot (so no GUI
backend and no global state) and embedded as base64 PNG: the file needs nothing else.

Every word comes from the catalogue of the reader's language (``lang``: ``en`` or
``zh``, :mod:`harness.i18n`; sentences from :mod:`harness.wording`), suppliers appear by
their display name, and the HTML is the Jinja2 template ``harness/templates/report.html.j2``
filled with those words and the tables' cells (autoescaped). Chinese figures use a CJK
font (:mod:`harness.i18n.fonts`), or English labels when none is installed.

Each ``figure_*`` function takes plain data and returns a Figure, so a notebook can draw
them for any ranking it computes:

- :func:`figure_delivery_ecdf`: share of trial orders delivered by time t, per supplier,
  with the SLA line;
- :func:`figure_rates`: SLA share, validity, refund completion and credit with 95%
  Jeffreys intervals;
- :func:`figure_scores`: score median and 95% interval per supplier, by tier;
- :func:`figure_burst_timeline`: scheduled vs achieved rate, p95 acceptance latency and
  errors per second of the bursts, from the ``timeline`` table where a run has one
  (``None`` without burst rows);
- :func:`figure_cost_quality`: comprehensive cost rate against the quality score.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.analysis import RunAnalysis, load_table, percent_interval
from harness.events import parse_error_counts
from harness.i18n import html_lang, text
from harness.i18n.fonts import cjk_font, embedded_font_css, figure_fonts, figure_lang
from harness.i18n.vocabulary import error_counts, term
from harness.metrics import BAD_VERDICTS, seconds
from harness.ranking import Ranking
from harness.ranking_config import CRITERIA, GATED, INSUFFICIENT, RankingConfig
from harness.wording import (
    QUALIFICATION_KINDS,
    above_statements,
    display,
    evidence_limits,
    finding_text,
    findings_of,
    gate_texts,
    headline,
    order_statement,
    settle_sentences,
    verdict_sentences,
)

if TYPE_CHECKING:  # imported where used: `trialbench rank` draws no figure, reads no history
    from matplotlib.figure import Figure

    from harness.check.history import Trend

__all__ = [
    "TIER_COLOURS",
    "figure_burst_timeline",
    "figure_cost_quality",
    "figure_delivery_ecdf",
    "figure_png",
    "figure_rates",
    "figure_scores",
    "figures",
    "print_ranking",
    "quality_scores",
    "ranking_table",
    "render_html",
    "write_report",
]

TIER_COLOURS = {"gold": "#d4a017", "silver": "#9aa5b1", "bronze": "#b87333",
                "none": "#c9c9c9", INSUFFICIENT: "#ffffff", GATED: "#e8a0a0"}
"""Fill colour of each tier in figures and the HTML table."""

_RICH_TIER = {"gold": "bold yellow", "silver": "bold white", "bronze": "bold dark_orange3",
              "none": "dim", INSUFFICIENT: "italic", GATED: "bold red"}


# --------------------------------------------------------------------------- terminal


def ranking_table(ranking: Ranking, *, lang: str = "en", names: Mapping[str, str] | None = None,
                  findings: pd.DataFrame | None = None) -> Table:
    """The ranking as a rich table: rank, rank interval, supplier, tier, score, gates."""
    found = ranking.findings if findings is None else findings
    table = Table(title=text("terminal.ranking_title", lang),
                  caption=text("terminal.ranking_caption", lang))
    for key, justify in (("rank", "right"), ("rank_interval", "right"), ("supplier", "left"),
                         ("tier", "left"), ("score", "right"), ("gates", "left")):
        table.add_column(text(f"th.{key}", lang), justify=justify)  # type: ignore[arg-type]
    for row in ranking.table.itertuples():
        table.add_row(
            str(row.rank), str(row.rank_interval), escape(display(str(row.supplier), names)),
            f"[{_RICH_TIER.get(str(row.tier), '')}]{escape(term('tier', str(row.tier), lang))}[/]",
            f"{row.score_median:.2f} [{row.score_lo:.2f}, {row.score_hi:.2f}]",
            escape(text("join.list", lang).join(
                gate_texts(found, str(row.supplier), short=True, lang=lang))) or "-")
    return table


def print_ranking(ranking: Ranking, config: RankingConfig, console: Console | None = None, *,
                  lang: str = "en", names: Mapping[str, str] | None = None,
                  findings: pd.DataFrame | None = None) -> None:
    """Print the ranking table, the order with its ties and gated suppliers, every
    "A above B", and how many orders would settle each tie or too-wide interval, in
    ``lang`` with display ``names``. The headline (:func:`harness.wording.headline`)
    follows it in ``rank`` and the demo."""
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 110)  # logs and CI: do not wrap the table
    console.print(ranking_table(ranking, lang=lang, names=names, findings=findings))
    console.print(f"{text('order.label', lang)} "
                  f"[bold]{escape(order_statement(ranking, lang, names))}[/]  "
                  f"{escape(text('order.help', lang, p=config.beats_min_prob))}",
                  highlight=False)
    lines = above_statements(ranking, config.beats_min_prob, lang, names)
    for line in lines:
        console.print(f"  {escape(line)}", highlight=False)
    if not lines and sum(len(g) for g in ranking.groups) > 1:
        console.print("  " + escape(text("order.none_above", lang, p=config.beats_min_prob)),
                      highlight=False)
    for line in settle_sentences(ranking, lang, names):
        console.print(f"  {escape(line)}", highlight=False)


def print_analysis(analysis: RunAnalysis, console: Console | None = None, *,
                   lang: str = "en") -> None:
    """The ranking (:func:`print_ranking`) and the headline, as ``rank`` and the demo print
    them: display names, qualification findings included."""
    console = console or Console()
    print_ranking(analysis.ranking, analysis.config, console, lang=lang,
                  names=analysis.display_names, findings=findings_of(analysis))
    console.print(escape(headline(analysis, lang)), highlight=False)


# --------------------------------------------------------------------------- figures


P = ParamSpec("P")


def _localised(draw: Callable[P, Figure]) -> Callable[P, Figure]:
    """Draw the figure with the fonts of its ``lang`` keyword (a CJK font for ``zh``; the
    texts keep it). Without one, ``zh`` falls back to English labels (said once)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with figure_fonts(figure_lang(str(kwargs.get("lang", "en")))):
            return draw(*args, **kwargs)

    return wrapper


def _new_figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure (no pyplot); matplotlib is imported on the first one."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _colours(names: Sequence[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


@_localised
def figure_delivery_ecdf(orders: pd.DataFrame, deadlines_s: Iterable[float],
                         suppliers: Sequence[str] | None = None, *, lang: str = "en",
                         names: Mapping[str, str] | None = None) -> Figure:
    """Share of sent trial orders delivered by time t (s, log axis), per supplier.

    Orders never delivered keep a curve below 1, so its height at the SLA line is the
    SLA share. Labels in ``lang``, suppliers by their display ``names``.
    """
    lang = figure_lang(lang)
    trial = orders[(orders["mode"] == "trial") & (orders["state"] != "skipped")]
    order = list(suppliers) if suppliers is not None else sorted(trial["supplier"].unique())
    colours = _colours(order)
    fig = _new_figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    top = 1.0
    for name in order:
        own = trial[trial["supplier"] == name]
        times = np.sort(own["delivery_ms"].dropna().to_numpy(float) / 1000)
        if not len(own) or not len(times):
            continue
        share = np.arange(1, len(times) + 1) / len(own)
        ax.step(np.concatenate([[times[0]], times]), np.concatenate([[0.0], share]),
                where="post", label=text("fig.delivered_legend", lang,
                                         name=display(name, names), k=len(times),
                                         n=len(own)),
                color=colours[name], lw=1.8)
        top = max(top, float(times[-1]))
    for deadline in deadlines_s:
        ax.axvline(deadline, color="black", ls="--", lw=1)
        ax.text(deadline, 0.02, text("fig.sla_line", lang, s=deadline), rotation=90,
                va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(text("fig.delivery_x", lang))
    ax.set_ylabel(text("fig.delivery_y", lang))
    ax.set_title(text("fig.delivery_title", lang))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


_RATE_PANELS = ("sla_share", "validity", "refund_completion", "refund_credit")


@_localised
def figure_rates(metrics: pd.DataFrame, suppliers: Sequence[str],
                 validity_floor: float | None = None, *, lang: str = "en",
                 names: Mapping[str, str] | None = None) -> Figure:
    """SLA share, validity, refund completion and credit: point and 95% Jeffreys interval.

    ``metrics`` needs the ``<rate>_lo``/``_hi`` columns of
    :func:`harness.metrics.rate_intervals`, indexed or keyed by supplier.
    """
    lang = figure_lang(lang)
    table = metrics.set_index("supplier", drop=False) if "supplier" in metrics else metrics
    fig = _new_figure(figsize=(10, 1.2 + 0.45 * len(suppliers) * 2), layout="constrained")
    axes = fig.subplots(2, 2, sharey=True)
    y = np.arange(len(suppliers))[::-1]
    for ax, rate in zip(axes.flat, _RATE_PANELS, strict=True):
        for yi, name in zip(y, suppliers, strict=True):
            row = table.loc[name]
            n = int(row[f"{rate}_n"])
            if not n:
                ax.text(0.5, yi, text("fig.no_data", lang), va="center", ha="center",
                        fontsize=8, color="grey")
                continue
            point, lo, hi = float(row[rate]), float(row[f"{rate}_lo"]), float(row[f"{rate}_hi"])
            ax.errorbar(point, yi, xerr=[[point - lo], [hi - point]], fmt="o", color="#333",
                        capsize=3)
            ax.text(1.01, yi, f"{int(row[f'{rate}_k'])}/{n}", va="center", fontsize=8,
                    transform=ax.get_yaxis_transform())
        if rate == "validity" and validity_floor is not None:
            ax.axvline(validity_floor, color="#d62728", ls="--", lw=1)
            ax.text(validity_floor, y[0] + 0.45, text("fig.floor", lang, floor=validity_floor),
                    fontsize=7,
                    color="#d62728", ha="right")
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(text(f"fig.rate_{rate}", lang), fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_yticks(y, [display(s, names) for s in suppliers])
    fig.suptitle(text("fig.rates_title", lang))
    return fig


@_localised
def figure_scores(ranking: Ranking, config: RankingConfig, *, lang: str = "en",
                  names: Mapping[str, str] | None = None) -> Figure:
    """Score median and 95% interval per supplier, filled by tier, with the tier lines."""
    lang = figure_lang(lang)
    table = ranking.table
    fig = _new_figure(figsize=(8, 0.9 + 0.5 * len(table)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(table))[::-1]
    for yi, row in zip(y, table.itertuples(), strict=True):
        colour = TIER_COLOURS.get(str(row.tier), "#ffffff")
        ax.barh(yi, row.score_hi - row.score_lo, left=row.score_lo, height=0.55, color=colour,
                edgecolor="#333", ls="--" if row.tier == INSUFFICIENT else "-")
        ax.plot([row.score_median], [yi], "k|", ms=14, mew=2)
        label = term("tier", str(row.tier), lang)
        ax.text(1.01, yi, label, va="center", fontsize=8, transform=ax.get_yaxis_transform())
    for name, rule in (("gold", config.gold), ("silver", config.silver),
                       ("bronze", config.bronze)):
        ax.axvline(rule.min_score, color=TIER_COLOURS[name], lw=2, alpha=0.8)
    ax.set_yticks(y, [f"{r.rank}. {display(str(r.supplier), names)}"
                      for r in table.itertuples()])
    ax.set_xlim(0, 1)
    ax.set_xlabel(text("fig.scores_x", lang))
    ax.set_title(text("fig.scores_title", lang))
    ax.grid(True, axis="x", alpha=0.3)
    return fig


_ERROR_COUNTS = ("err_429", "err_503", "err_5xx", "err_timeout", "err_out_of_stock",
                 "err_connect", "err_balance", "err_refused", "err_bad_response", "err_other")
"""Timeline columns of failed requests the supplier is answerable for (404s to the
harness's own GETs, ``err_not_found``, are left out)."""


def _timeline_from_orders(orders: pd.DataFrame, bin_s: float) -> pd.DataFrame:
    """Per run, supplier and bin of ``bin_s``: scheduled, accepted, errors, p95 acceptance.

    Used when a run has no ``timeline`` table: errors are orders never accepted (by the
    bin they were scheduled in), not failed requests.
    """
    burst = orders[(orders["mode"] == "burst") & (orders["state"] != "skipped")]
    t0 = seconds(burst["intended_at"]).groupby(burst["run_id"]).transform("min")
    frame = pd.DataFrame({
        "run_id": burst["run_id"].to_numpy(), "supplier": burst["supplier"].to_numpy(),
        "second": ((seconds(burst["intended_at"]) - t0) // bin_s).to_numpy(),
        "accepted_second": ((seconds(burst["accepted_at"]) - t0) // bin_s).to_numpy(),
        "never": burst["accepted_at"].isna().to_numpy(),
        "latency_ms": burst["acceptance_ms"].astype(float).to_numpy()})
    keys = ["run_id", "supplier", "second"]
    out = frame.groupby(keys).agg(scheduled=("never", "size"), errors=("never", "sum"),
                                  acceptance_p95_ms=("latency_ms",
                                                     lambda x: x.quantile(0.95)))
    accepted = frame.dropna(subset=["accepted_second"]).groupby(
        ["run_id", "supplier", "accepted_second"]).size()
    accepted.index = accepted.index.set_names(keys)
    out = out.join(accepted.rename("accepted"), how="outer").fillna(
        {"scheduled": 0, "errors": 0, "accepted": 0})
    return out.reset_index()


def figure_burst_timeline(orders: pd.DataFrame, timeline: pd.DataFrame | None = None, *,
                          lang: str = "en", names: Mapping[str, str] | None = None
                          ) -> Figure | None:
    """Per second of the bursts: scheduled vs accepted rate, p95 acceptance, errors.

    Uses the ``timeline`` table (:data:`harness.results.TIMELINE_COLUMNS`) when given and
    not empty, else derives one-second bins from the burst rows of ``orders``. Runs are
    aligned at their burst start and summed. ``None`` when there is no burst at all.
    """
    if timeline is not None and not timeline.empty:
        data = timeline.assign(errors=timeline[[c for c in _ERROR_COUNTS
                                                if c in timeline]].sum(axis=1))
        error_key = "fig.burst_errors_requests"
    elif (orders["mode"] == "burst").any():
        data = _timeline_from_orders(orders, 1.0)
        error_key = "fig.burst_errors_orders"
    else:
        return None
    return _draw_burst_timeline(data, error_key, lang=lang, names=names)


@_localised
def _draw_burst_timeline(data: pd.DataFrame, error_key: str, *, lang: str = "en",
                         names: Mapping[str, str] | None = None) -> Figure:
    lang = figure_lang(lang)
    error_label = text(error_key, lang)
    data = data.astype({"second": int})
    order = sorted(str(n) for n in data["supplier"].unique())
    colours = _colours(order)
    fig = _new_figure(figsize=(9, 7.5), layout="constrained")
    ax_rate, ax_p95, ax_err = fig.subplots(3, 1, sharex=True)
    seconds_axis = np.arange(0, int(data["second"].max()) + 1)
    totals = data.groupby("second")[["scheduled", "accepted"]].sum().reindex(
        seconds_axis, fill_value=0)
    ax_rate.step(seconds_axis, totals["scheduled"], where="post", color="black", ls="--",
                 label=text("fig.burst_scheduled", lang))
    ax_rate.step(seconds_axis, totals["accepted"], where="post", color="#1f77b4",
                 label=text("fig.burst_accepted", lang))
    ax_rate.set_ylabel(text("fig.burst_rate", lang))
    ax_rate.legend(fontsize=8)
    ax_rate.set_title(text("fig.burst_title", lang))
    for name in order:
        own = data[data["supplier"] == name].groupby("second")
        ax_p95.plot(seconds_axis, own["acceptance_p95_ms"].max().reindex(seconds_axis),
                    color=colours[name], label=display(name, names))
        ax_err.step(seconds_axis, own["errors"].sum().reindex(seconds_axis, fill_value=0),
                    where="post", color=colours[name], label=display(name, names))
    ax_p95.set_ylabel(text("fig.burst_p95", lang))
    ax_p95.set_yscale("log")
    ax_p95.legend(fontsize=8, ncols=3)
    ax_err.set_ylabel(error_label, fontsize=8)
    ax_err.set_xlabel(text("fig.burst_x", lang))
    for ax in (ax_rate, ax_p95, ax_err):
        ax.grid(True, alpha=0.3)
    return fig


def quality_scores(ranking: Ranking) -> pd.Series:
    """Score at the point estimates without the cost criterion (weights renormalised)."""
    weights = {c: w for c, w in ranking.weights.items() if c != "cost"}
    total = sum(weights.values())
    table = ranking.table.set_index("supplier")
    if total <= 0:
        return pd.Series(np.nan, index=table.index)
    quality = sum(w * table[f"{c}_value"].fillna(0.0) for c, w in weights.items()) / total
    return pd.Series(quality, index=table.index, dtype=float)


@_localised
def figure_cost_quality(metrics: pd.DataFrame, ranking: Ranking, *, lang: str = "en",
                        names: Mapping[str, str] | None = None) -> Figure:
    """Comprehensive cost rate (x) against the quality score without cost (y)."""
    lang = figure_lang(lang)
    table = metrics.set_index("supplier", drop=False) if "supplier" in metrics else metrics
    quality = quality_scores(ranking)
    tiers = ranking.table.set_index("supplier")["tier"]
    fig = _new_figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name in ranking.table["supplier"]:
        cost = float(table.loc[name, "cost_rate"])
        if not np.isfinite(cost):
            continue
        ax.scatter([cost], [quality[name]], s=120, color=TIER_COLOURS.get(tiers[name], "#fff"),
                   edgecolor="#333", zorder=3)
        ax.annotate(display(str(name), names), (cost, quality[name]), xytext=(6, 4),
                    textcoords="offset points", fontsize=9)
    ax.axvline(1.0, color="#d62728", ls=":", lw=1)
    ax.text(1.0, 0.02, text("fig.break_even", lang), color="#d62728", fontsize=8, rotation=90)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(text("fig.cost_x", lang))
    ax.set_ylabel(text("fig.cost_y", lang))
    ax.set_title(text("fig.cost_title", lang))
    ax.grid(True, alpha=0.3)
    return fig


def figures(analysis: RunAnalysis, lang: str = "en") -> dict[str, Figure]:
    """Every figure of the report for ``analysis``, titled, in report order, labelled in
    ``lang`` (English when ``zh`` has no CJK font: :func:`harness.i18n.fonts.figure_lang`)."""
    lang = figure_lang(lang)
    names: Mapping[str, str] | None = analysis.display_names
    if cjk_font() is None and any(ord(c) >= 0x2E80 for n in analysis.display_names.values()
                                  for c in n):
        names = None  # no font can draw them: the slugs, not boxes
    order = [str(s) for s in analysis.ranking.table["supplier"]]
    out = {
        text("fig.name_delivery", lang): figure_delivery_ecdf(
            analysis.tables.orders, analysis.deadlines_s, order, lang=lang, names=names),
        text("fig.name_rates", lang): figure_rates(
            analysis.metrics, order, analysis.config.validity_floor, lang=lang, names=names),
        text("fig.name_scores", lang): figure_scores(analysis.ranking, analysis.config,
                                                     lang=lang, names=names),
    }
    burst = figure_burst_timeline(analysis.tables.orders,
                                  getattr(analysis.tables, "timeline", None), lang=lang,
                                  names=names)
    if burst is not None:
        out[text("fig.name_burst", lang)] = burst
    out[text("fig.name_cost", lang)] = figure_cost_quality(analysis.metrics, analysis.ranking,
                                                           lang=lang, names=names)
    return out


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --------------------------------------------------------------------------- HTML


@cache
def _environment() -> Any:
    """The Jinja2 environment of the report templates (package data, autoescaped)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _num(x: object, spec: str) -> str:
    value = float(x)  # type: ignore[arg-type]
    return format(value + 0.0, spec) if np.isfinite(value) else "-"


def _tier(tier: str, lang: str) -> dict[str, str]:
    return {"name": tier, "word": term("tier", tier, lang),
            "colour": TIER_COLOURS.get(tier, "#fff")}


def _rate(r: pd.Series, name: str) -> str:
    return percent_interval(int(r[f"{name}_k"]), int(r[f"{name}_n"]))


def _metrics_rows(analysis: RunAnalysis, lang: str) -> list[dict[str, Any]]:
    m, names = analysis.metrics, analysis.display_names
    rows = []
    for name in analysis.ranking.table["supplier"]:
        r = m.loc[name]
        bad = text("join.list", lang).join(
            f"{term('verdict', v, lang)} {int(r[f'codes_{v}'])}" for v in BAD_VERDICTS
            if f"codes_{v}" in r and int(r[f"codes_{v}"])) or "-"
        rows.append({"supplier": display(str(name), names), "cells": [
            str(int(r["orders_sent"])), str(int(r["orders_skipped"])), _rate(r, "sla_share"),
            _num(float(r["delivery_median_ms"]) / 1000, ".2f"), _rate(r, "validity"), bad,
            _rate(r, "refund_completion"), _rate(r, "refund_credit"),
            _num(r["refund_latency_median_s"], ".2f"), _rate(r, "oversold"),
            _num(r["hidden_fee_per_order"], ".2f"), _num(r["cost_rate"], ".3f"),
            text("cell.errors_of", lang, errors=int(r["supplier_errors"]),
                 requests=int(r["requests"]),
                 classes=error_counts(parse_error_counts(str(r["error_classes"])), lang)),
            str(int(r["harness_requests"])), _num(r["delivery_p95_ms"], ".0f"),
            _rate(r, "load_error_rate")]})
    return rows


_METRICS_HEADERS = ("orders_sent", "blocked", "within_sla", "median_delivery", "valid_codes",
                    "bad_codes", "refunds_completed", "credited", "median_refund", "oversold",
                    "hidden_fee", "cost_rate", "supplier_errors", "harness_requests",
                    "burst_p95", "burst_never")
_LOAD_HEADERS = ("burst_orders", "accepted", "oversold", "errors_by_class", "first_third",
                 "last_third", "growth")


def _qualification_rows(analysis: RunAnalysis, lang: str) -> list[dict[str, Any]]:
    """One row per supplier that lists any qualification: its records and findings."""
    names, findings = analysis.display_names, findings_of(analysis)
    rows = []
    for name in analysis.ranking.table["supplier"]:
        quals = {k: v for k, v in (analysis.qualifications.get(str(name)) or {}).items()
                 if not k.startswith("_")}
        mine = findings[(findings["supplier"] == name)
                        & findings["kind"].isin(QUALIFICATION_KINDS)]
        if not any(quals.values()) and mine.empty:
            continue
        not_given = text("cell.not_given", lang)
        grade = quals.get("platform_grade")
        rows.append({
            "supplier": display(str(name), names),
            "registration": quals.get("registration_number") or not_given,
            "icp": quals.get("icp_filing") or not_given,
            "grade": text(f"grade.{grade}", lang) if grade else not_given,
            "authorisations": [text("cell.authorisation", lang, brand=a.get("brand", ""),
                                    products=text("join.list", lang).join(
                                        a.get("products", [])),
                                    expiry=a.get("expires", ""))
                               for a in quals.get("authorisations") or []] or [not_given],
            "findings": [{"text": finding_text(f, lang), "gates": bool(f["gates"])}
                         for f in mine.to_dict("records")]})
    return rows


def _report_context(analysis: RunAnalysis, figs: Mapping[str, Figure], lang: str
                    ) -> dict[str, Any]:
    """Everything the template shows, worded in ``lang``: the template lays it out."""
    ranking, config, names = analysis.ranking, analysis.config, analysis.display_names
    findings = findings_of(analysis)
    gates = config.gates
    verdicts = verdict_sentences(analysis, lang)
    above = above_statements(ranking, config.beats_min_prob, lang, names)
    load = load_table(analysis)
    today = analysis.today.isoformat() if analysis.today else "?"
    peak = (text("report.quals_note_peak", lang, peak=analysis.peak_date.isoformat())
            if analysis.peak_date else "")
    gating = (text("report.quals_note_gating", lang, kinds=text("join.list", lang).join(
        term("finding", k, lang) for k in analysis.qualification_gates))
        if analysis.qualification_gates else text("report.quals_note_no_gating", lang))
    return {
        "lang": lang, "html_lang": html_lang(lang),
        "t": lambda key, **fields: text(key, lang, **fields),
        "runs": ", ".join(d.name for d in analysis.run_dirs),
        "scenarios": ", ".join(sorted(set(analysis.scenario_names))),
        "generated": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "headline": headline(analysis, lang),
        "order": order_statement(ranking, lang, names),
        "above": (text("join.clause", lang).join(above) + text("join.end", lang)) if above
        else text("report.no_above", lang),
        "beats_min_prob": config.beats_min_prob,
        "ranking": [{"rank": row.rank, "rank_interval": row.rank_interval,
                     "supplier": display(str(row.supplier), names),
                     "tier": _tier(str(row.tier), lang),
                     "score": f"{row.score_median:.2f} [{row.score_lo:.2f}, {row.score_hi:.2f}]",
                     "gates": text("join.clause", lang).join(
                         gate_texts(findings, str(row.supplier), lang=lang)) or "-"}
                    for row in ranking.table.itertuples()],
        "verdicts": [{"tier": _tier(str(row.tier), lang), "text": verdicts[str(row.supplier)]}
                     for row in ranking.table.itertuples()],
        "limits": evidence_limits(analysis, lang),
        "findings": [{"supplier": display(str(f["supplier"]), names),
                      "kind": term("finding", str(f["kind"]), lang),
                      "evidence": finding_text(f, lang), "threshold": _num(f["threshold"], "g"),
                      "effect": text("cell.effect_gates" if f["gates"] else
                                     "cell.effect_noted" if f["kind"] in QUALIFICATION_KINDS
                                     else "cell.effect_scored", lang)}
                     for f in findings[~findings["kind"].isin(QUALIFICATION_KINDS)]
                     .to_dict("records")],
        "qualifications": _qualification_rows(analysis, lang),
        "quals_note": text("report.quals_note", lang, today=today,
                           window=analysis.expiry_window_days, peak=peak, gating=gating),
        "load_headers": _LOAD_HEADERS,
        "load": [{"supplier": display(str(r["supplier"]), names), "cells": [
            str(r["burst_orders"]), r["accepted"], r["oversold"],
            error_counts(parse_error_counts(str(r["errors_by_class"])), lang),
            _num(r["acceptance_p95_first_ms"], ".0f"), _num(r["acceptance_p95_last_ms"], ".0f"),
            _num(r["latency_growth"], ".2f")]} for r in load.to_dict("records")],
        "tiers_note": text(
            "report.tiers_note", lang, gold=config.gold.min_score, silver=config.silver.min_score,
            bronze=config.bronze.min_score, prob=config.gold.min_prob,
            width=config.max_interval_width, fake=gates.fake_codes, resold=gates.resold_codes,
            duplicate=gates.duplicate_codes, wrong=gates.wrong_face_value_codes,
            phantom=gates.phantom_refunds, oversold=gates.oversold_orders,
            fee=gates.hidden_fee_per_order, floor=config.validity_floor),
        "figures": [{"title": title,
                     "data": base64.b64encode(figure_png(fig)).decode("ascii")}
                    for title, fig in figs.items()],
        "metrics_headers": _METRICS_HEADERS,
        "metrics": _metrics_rows(analysis, lang),
        "criteria": [c for c in CRITERIA if c in ranking.weights],
        "weights": [f"{ranking.weights[c]:.2f}" for c in CRITERIA if c in ranking.weights],
        "criteria_rows": [{"supplier": display(str(row.supplier), names), "cells": [
            f"{_num(getattr(row, c + '_estimate'), '.3f')} → "
            f"{_num(getattr(row, c + '_value'), '.2f')}"
            for c in CRITERIA if c in ranking.weights]} for row in ranking.table.itertuples()],
        "beats_names": [display(str(c), names) for c in ranking.beats.columns],
        "beats": [{"supplier": display(str(a), names),
                   "cells": ["-" if a == b else f"{ranking.beats.loc[a, b]:.2f}"
                             for b in ranking.beats.columns]} for a in ranking.beats.index],
        "config_json": config.model_dump_json(indent=2),
    }


def _trend_context(trend: Trend | None, folder: str, lang: str,
                   names: Mapping[str, str]) -> dict[str, Any] | None:
    """The history section: per supplier, one row per run (check result, tier, the key
    metrics any run measured) and the change points found; None without a history."""
    if trend is None or trend.table.empty:
        return None
    from harness.check.metrics import KEY_METRICS
    from harness.check.summary import fmt

    table = trend.table
    shown = [m for m in KEY_METRICS if table[m].notna().any()]
    suppliers = []
    for supplier, rows in table.groupby("supplier", sort=True):
        suppliers.append({
            "supplier": display(str(supplier), names),
            "rows": [[str(r["run_id"]), text(f"check.run_status.{r['status']}", lang),
                      term("tier", str(r["tier"]), lang) if r["tier"] else "-",
                      *[fmt(float(r[m])) for m in shown]] for _, r in rows.iterrows()],
            "changes": [text("report.trend_change", lang,
                             metric=text(f"check.metric_name.{c.metric}", lang),
                             run_id=c.run_id, before=fmt(c.before), after=fmt(c.after),
                             p=f"{c.p_value:.2g}",
                             worse=text("check.trend.worse", lang) if c.worse else "")
                        for c in trend.changes if c.supplier == supplier]})
    return {"note": text("report.trend_note", lang, runs=table["run_id"].nunique(),
                         folder=folder),
            "headers": [text("th.run", lang), text("th.run_status", lang),
                        text("th.tier", lang),
                        *[text(f"check.metric_name.{m}", lang) for m in shown]],
            "suppliers": suppliers}


def render_html(analysis: RunAnalysis, figs: dict[str, Figure] | None = None,
                lang: str = "en", *, embed_font: bool = True,
                trend: Trend | None = None, trend_folder: str = "") -> str:
    """The whole report as one HTML document in ``lang`` (figures inline as base64 PNG),
    from the template ``harness/templates/report.html.j2``. A ``zh`` report embeds the
    glyphs it uses of the CJK font (``embed_font``; so does a report naming a supplier in
    Chinese), so it reads right anywhere. ``trend`` (from
    :func:`harness.check.history.load_trend`) adds the history of runs kept in ``trend_folder``."""
    figs = figs if figs is not None else figures(analysis, lang)
    template = _environment().get_template("report.html.j2")
    context = _report_context(analysis, figs, lang)
    context["trend"] = _trend_context(trend, trend_folder, lang, analysis.display_names)
    html: str = template.render(context, font_css="")
    if embed_font:  # the CJK glyphs it uses (zh, display names), for readers without them
        font_css = embedded_font_css(html)
        if font_css:
            html = template.render(context, font_css=font_css)
    return html


def write_report(analysis: RunAnalysis, out_dir: Path | None = None, lang: str = "en",
                 history: Path | None = None) -> Path:
    """Write ``report.html`` in ``lang`` into ``out_dir`` (default: the first run folder),
    with the trend over the history of runs in ``history`` when given."""
    folder = out_dir if out_dir is not None else analysis.run_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.html"
    trend = None
    if history is not None:  # harness.check imports scipy.stats: only for a history
        from harness.check.history import load_trend

        trend = load_trend(history)
    path.write_text(render_html(analysis, lang=lang, trend=trend,
                                trend_folder=str(history or "")), encoding="utf-8")
    return path
