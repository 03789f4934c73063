"""The report: the ranking in the terminal, figures, and one self-contained ``report.html``.

Built from a :class:`harness.analysis.RunAnalysis` (never Locust). The HTML puts the
answer first (the headline, the order with its ties and the gated suppliers, tiers, each
gate with its evidence, one sentence per supplier, what the evidence cannot tell yet and
how many orders would settle it, the gate findings, behaviour under load), then the
figures, then the tables. Figures are
matplotlib :class:`~matplotlib.figure.Figure` objects drawn without pyplot (so no GUI
backend and no global state) and embedded as base64 PNG: the file needs nothing else.

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
import html
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.analysis import (
    RunAnalysis,
    above_statements,
    evidence_limits,
    finding_text,
    gate_texts,
    headline,
    load_table,
    order_statement,
    percent_interval,
    settle_sentences,
    verdict_sentences,
)
from harness.metrics import seconds
from harness.ranking import Ranking
from harness.ranking_config import CRITERIA, GATED, INSUFFICIENT, RankingConfig

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


def ranking_table(ranking: Ranking) -> Table:
    """The ranking as a rich table: rank, rank interval, supplier, tier, score, gates."""
    table = Table(title="supplier ranking",
                  caption="score: median [95% interval] over the draws; rank interval: 95% "
                          "of the draws' ranks; gated: took money without delivering value, "
                          "ranked below every supplier no gate holds")
    for name, justify in (("rank", "right"), ("rank interval", "right"), ("supplier", "left"),
                          ("tier", "left"), ("score", "right"), ("gates", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in ranking.table.itertuples():
        table.add_row(
            str(row.rank), str(row.rank_interval), str(row.supplier),
            f"[{_RICH_TIER.get(str(row.tier), '')}]{row.tier}[/]",
            f"{row.score_median:.2f} [{row.score_lo:.2f}, {row.score_hi:.2f}]",
            escape(", ".join(gate_texts(ranking, str(row.supplier), short=True))) or "-")
    return table


def print_ranking(ranking: Ranking, config: RankingConfig, console: Console | None = None
                  ) -> None:
    """Print the ranking table, the order with its ties and gated suppliers, every
    "A above B", and how many orders would settle each tie or too-wide interval. The
    headline (:func:`harness.analysis.headline`) follows it in ``rank`` and the demo."""
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 110)  # logs and CI: do not wrap the table
    console.print(ranking_table(ranking))
    console.print(f"order: [bold]{escape(order_statement(ranking))}[/]  "
                  f"(>: P ≥ {config.beats_min_prob:.2f} for every pair across; =: tie)",
                  highlight=False)
    lines = above_statements(ranking, config.beats_min_prob)
    for line in lines:
        console.print(f"  {escape(line)}", highlight=False)
    if not lines and sum(len(g) for g in ranking.groups) > 1:
        console.print("  no supplier is above another with P ≥ "
                      f"{config.beats_min_prob:.2f}: they all tie on this evidence",
                      highlight=False)
    for line in settle_sentences(ranking):
        console.print(f"  {escape(line)}", highlight=False)


# --------------------------------------------------------------------------- figures


def _colours(names: Sequence[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def figure_delivery_ecdf(orders: pd.DataFrame, deadlines_s: Iterable[float],
                         suppliers: Sequence[str] | None = None) -> Figure:
    """Share of sent trial orders delivered by time t (s, log axis), per supplier.

    Orders never delivered keep a curve below 1, so its height at the SLA line is the
    SLA share.
    """
    trial = orders[(orders["mode"] == "trial") & (orders["state"] != "skipped")]
    names = list(suppliers) if suppliers is not None else sorted(trial["supplier"].unique())
    colours = _colours(names)
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    top = 1.0
    for name in names:
        own = trial[trial["supplier"] == name]
        times = np.sort(own["delivery_ms"].dropna().to_numpy(float) / 1000)
        if not len(own) or not len(times):
            continue
        share = np.arange(1, len(times) + 1) / len(own)
        ax.step(np.concatenate([[times[0]], times]), np.concatenate([[0.0], share]),
                where="post", label=f"{name} ({len(times)}/{len(own)} delivered)",
                color=colours[name], lw=1.8)
        top = max(top, float(times[-1]))
    for deadline in deadlines_s:
        ax.axvline(deadline, color="black", ls="--", lw=1)
        ax.text(deadline, 0.02, f" SLA {deadline:g} s", rotation=90, va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("delivery time from the intended send (s, log scale)")
    ax.set_ylabel("share of orders delivered")
    ax.set_title("Delivery time: share of trial orders delivered by t")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


_RATE_PANELS = (("sla_share", "delivered within the SLA"), ("validity", "codes valid"),
                ("refund_completion", "refunds completed"),
                ("refund_credit", "completed refunds credited"))


def figure_rates(metrics: pd.DataFrame, suppliers: Sequence[str],
                 validity_floor: float | None = None) -> Figure:
    """SLA share, validity, refund completion and credit: point and 95% Jeffreys interval.

    ``metrics`` needs the ``<rate>_lo``/``_hi`` columns of
    :func:`harness.metrics.rate_intervals`, indexed or keyed by supplier.
    """
    table = metrics.set_index("supplier", drop=False) if "supplier" in metrics else metrics
    fig = Figure(figsize=(10, 1.2 + 0.45 * len(suppliers) * 2), layout="constrained")
    axes = fig.subplots(2, 2, sharey=True)
    y = np.arange(len(suppliers))[::-1]
    for ax, (rate, title) in zip(axes.flat, _RATE_PANELS, strict=True):
        for yi, name in zip(y, suppliers, strict=True):
            row = table.loc[name]
            n = int(row[f"{rate}_n"])
            if not n:
                ax.text(0.5, yi, "no data", va="center", ha="center", fontsize=8, color="grey")
                continue
            point, lo, hi = float(row[rate]), float(row[f"{rate}_lo"]), float(row[f"{rate}_hi"])
            ax.errorbar(point, yi, xerr=[[point - lo], [hi - point]], fmt="o", color="#333",
                        capsize=3)
            ax.text(1.01, yi, f"{int(row[f'{rate}_k'])}/{n}", va="center", fontsize=8,
                    transform=ax.get_yaxis_transform())
        if rate == "validity" and validity_floor is not None:
            ax.axvline(validity_floor, color="#d62728", ls="--", lw=1)
            ax.text(validity_floor, y[0] + 0.45, f"floor {validity_floor:g}", fontsize=7,
                    color="#d62728", ha="right")
        ax.set_xlim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_yticks(y, list(suppliers))
    fig.suptitle("Rates with 95% intervals (Jeffreys); k/n at the right")
    return fig


def figure_scores(ranking: Ranking, config: RankingConfig) -> Figure:
    """Score median and 95% interval per supplier, filled by tier, with the tier lines."""
    table = ranking.table
    fig = Figure(figsize=(8, 0.9 + 0.5 * len(table)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(table))[::-1]
    for yi, row in zip(y, table.itertuples(), strict=True):
        colour = TIER_COLOURS.get(str(row.tier), "#ffffff")
        ax.barh(yi, row.score_hi - row.score_lo, left=row.score_lo, height=0.55, color=colour,
                edgecolor="#333", ls="--" if row.tier == INSUFFICIENT else "-")
        ax.plot([row.score_median], [yi], "k|", ms=14, mew=2)
        label = str(row.tier)
        ax.text(1.01, yi, label, va="center", fontsize=8, transform=ax.get_yaxis_transform())
    for name, rule in (("gold", config.gold), ("silver", config.silver),
                       ("bronze", config.bronze)):
        ax.axvline(rule.min_score, color=TIER_COLOURS[name], lw=2, alpha=0.8)
    ax.set_yticks(y, [f"{r.rank}. {r.supplier}" for r in table.itertuples()])
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (0–1): bar = 95% interval, tick = median; lines: tier thresholds")
    ax.set_title("Scores with their uncertainty")
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


def figure_burst_timeline(orders: pd.DataFrame, timeline: pd.DataFrame | None = None
                          ) -> Figure | None:
    """Per second of the bursts: scheduled vs accepted rate, p95 acceptance, errors.

    Uses the ``timeline`` table (:data:`harness.results.TIMELINE_COLUMNS`) when given and
    not empty, else derives one-second bins from the burst rows of ``orders``. Runs are
    aligned at their burst start and summed. ``None`` when there is no burst at all.
    """
    if timeline is not None and not timeline.empty:
        data = timeline.assign(errors=timeline[[c for c in _ERROR_COUNTS
                                                if c in timeline]].sum(axis=1))
        error_label = "failed requests/s\n(every class but 404s to GETs)"
    elif (orders["mode"] == "burst").any():
        data = _timeline_from_orders(orders, 1.0)
        error_label = "orders never accepted /s"
    else:
        return None
    data = data.astype({"second": int})
    names = sorted(str(n) for n in data["supplier"].unique())
    colours = _colours(names)
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    ax_rate, ax_p95, ax_err = fig.subplots(3, 1, sharex=True)
    seconds_axis = np.arange(0, int(data["second"].max()) + 1)
    totals = data.groupby("second")[["scheduled", "accepted"]].sum().reindex(
        seconds_axis, fill_value=0)
    ax_rate.step(seconds_axis, totals["scheduled"], where="post", color="black", ls="--",
                 label="scheduled")
    ax_rate.step(seconds_axis, totals["accepted"], where="post", color="#1f77b4",
                 label="accepted")
    ax_rate.set_ylabel("orders/s (all suppliers)")
    ax_rate.legend(fontsize=8)
    ax_rate.set_title("Burst timeline: scheduled vs achieved, p95 acceptance, errors")
    for name in names:
        own = data[data["supplier"] == name].groupby("second")
        ax_p95.plot(seconds_axis, own["acceptance_p95_ms"].max().reindex(seconds_axis),
                    color=colours[name], label=name)
        ax_err.step(seconds_axis, own["errors"].sum().reindex(seconds_axis, fill_value=0),
                    where="post", color=colours[name], label=name)
    ax_p95.set_ylabel("p95 acceptance (ms, log)")
    ax_p95.set_yscale("log")
    ax_p95.legend(fontsize=8, ncols=3)
    ax_err.set_ylabel(error_label, fontsize=8)
    ax_err.set_xlabel("seconds since the burst started (by intended send time)")
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


def figure_cost_quality(metrics: pd.DataFrame, ranking: Ranking) -> Figure:
    """Comprehensive cost rate (x) against the quality score without cost (y)."""
    table = metrics.set_index("supplier", drop=False) if "supplier" in metrics else metrics
    quality = quality_scores(ranking)
    tiers = ranking.table.set_index("supplier")["tier"]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name in ranking.table["supplier"]:
        cost = float(table.loc[name, "cost_rate"])
        if not np.isfinite(cost):
            continue
        ax.scatter([cost], [quality[name]], s=120, color=TIER_COLOURS.get(tiers[name], "#fff"),
                   edgecolor="#333", zorder=3)
        ax.annotate(str(name), (cost, quality[name]), xytext=(6, 4),
                    textcoords="offset points", fontsize=9)
    ax.axvline(1.0, color="#d62728", ls=":", lw=1)
    ax.text(1.0, 0.02, " break-even", color="#d62728", fontsize=8, rotation=90)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("comprehensive cost rate = (purchase + fees + hidden fees) / sale price")
    ax.set_ylabel("quality score without cost (0–1)")
    ax.set_title("Cost against quality (better: up and to the left; fill = tier)")
    ax.grid(True, alpha=0.3)
    return fig


def figures(analysis: RunAnalysis) -> dict[str, Figure]:
    """Every figure of the report for ``analysis``, titled, in report order."""
    names = [str(s) for s in analysis.ranking.table["supplier"]]
    out = {
        "Delivery time": figure_delivery_ecdf(analysis.tables.orders, analysis.deadlines_s,
                                              names),
        "Rates with intervals": figure_rates(analysis.metrics, names,
                                             analysis.config.validity_floor),
        "Score intervals": figure_scores(analysis.ranking, analysis.config),
    }
    burst = figure_burst_timeline(analysis.tables.orders,
                                  getattr(analysis.tables, "timeline", None))
    if burst is not None:
        out["Burst timeline"] = burst
    out["Cost against quality"] = figure_cost_quality(analysis.metrics, analysis.ranking)
    return out


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}.sub{color:#666;margin-top:0}
.order{font-size:1.35em;font-weight:600;background:#f4f6f8;padding:.5em .8em;
border-radius:6px}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}.tier{padding:.1em .5em;border-radius:4px;border:1px solid #888}
.gate{color:#b00020}ul.verdicts li{margin:.25em 0}.limits li{margin:.2em 0}
img{max-width:100%;border:1px solid #eee}.num{text-align:right}
details{margin:.5em 0}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _tier_badge(tier: str) -> str:
    colour = TIER_COLOURS.get(tier, "#fff")
    return f'<span class="tier" style="background:{colour}">{_e(tier)}</span>'


def _ranking_html(ranking: Ranking) -> str:
    rows = []
    for row in ranking.table.itertuples():
        reasons = _e("; ".join(gate_texts(ranking, str(row.supplier)))) or "-"
        rows.append(
            f"<tr><td class=num>{row.rank}</td><td class=num>{_e(row.rank_interval)}</td>"
            f"<td><b>{_e(row.supplier)}</b></td><td>{_tier_badge(str(row.tier))}</td>"
            f"<td class=num>{row.score_median:.2f} [{row.score_lo:.2f}, {row.score_hi:.2f}]"
            f"</td><td class=gate>{reasons}</td></tr>")
    return ("<table id=ranking><tr><th>rank</th><th>rank interval</th><th>supplier</th>"
            "<th>tier</th><th>score median [95%]</th><th>gates, with their evidence</th></tr>"
            + "".join(rows) + "</table>")


def _metrics_html(analysis: RunAnalysis) -> str:
    m = analysis.metrics

    def rate(r: pd.Series, name: str) -> str:
        return percent_interval(int(r[f"{name}_k"]), int(r[f"{name}_n"]))

    rows = []
    for name in analysis.ranking.table["supplier"]:
        r = m.loc[name]
        bad = ", ".join(f"{c[6:]} {int(r[c])}" for c in m.columns
                        if c.startswith("codes_") and int(r[c])) or "-"
        cells = [str(int(r["orders_sent"])), str(int(r["orders_skipped"])),
                 rate(r, "sla_share"),
                 _num(float(r["delivery_median_ms"]) / 1000, ".2f"), rate(r, "validity"), bad,
                 rate(r, "refund_completion"), rate(r, "refund_credit"),
                 _num(r["refund_latency_median_s"], ".2f"), rate(r, "oversold"),
                 _num(r["hidden_fee_per_order"], ".2f"), _num(r["cost_rate"], ".3f"),
                 f"{int(r['supplier_errors'])} of {int(r['requests'])}: {r['error_classes']}",
                 str(int(r["harness_requests"])),
                 _num(r["delivery_p95_ms"], ".0f"), rate(r, "load_error_rate")]
        rows.append(f"<tr><td>{_e(name)}</td>"
                    + "".join(f"<td class=num>{_e(c)}</td>" for c in cells) + "</tr>")
    return ("<table id=metrics><tr><th>supplier</th><th>orders sent</th>"
            "<th>blocked by the cap (not sent)</th>"
            "<th>within SLA [95%]</th><th>median delivery (s)</th><th>valid codes [95%]</th>"
            "<th>bad codes</th><th>refunds completed [95%]</th><th>credited [95%]</th>"
            "<th>median refund (s, from the request)</th><th>oversold of accepted [95%]</th>"
            "<th>hidden fee / order</th><th>cost rate</th>"
            "<th>supplier errors of requests: by class</th>"
            "<th>harness's own re-POSTs and resolution GETs</th>"
            "<th>burst p95 delivery (ms)</th>"
            "<th>burst orders never accepted [95%]</th></tr>" + "".join(rows) + "</table>")


def _findings_html(ranking: Ranking) -> str:
    found = ranking.findings
    if found.empty:
        return "<p>No gate finding: no supplier took money without delivering value.</p>"
    rows = "".join(
        f"<tr><td>{_e(r['supplier'])}</td><td>{_e(r['kind'])}</td>"
        f"<td>{_e(finding_text(r))}</td><td>{_num(r['threshold'], 'g')}</td>"
        f"<td>{'gates' if r['gates'] else 'scored'}</td></tr>"
        for r in found.to_dict("records"))
    return ("<table id=findings><tr><th>supplier</th><th>kind</th><th>evidence [95%]</th>"
            "<th>threshold</th><th>effect</th></tr>" + rows + "</table>")


def _load_html(analysis: RunAnalysis) -> str:
    frame = load_table(analysis)
    if frame.empty:
        return ("<p>No burst in these runs: acceptance under load, overselling under load, "
                "errors by class and latency growth are not measured.</p>")
    rows = "".join(
        f"<tr><td>{_e(r['supplier'])}</td><td class=num>{r['burst_orders']}</td>"
        f"<td class=num>{_e(r['accepted'])}</td><td class=num>{_e(r['oversold'])}</td>"
        f"<td>{_e(r['errors_by_class'])}</td>"
        f"<td class=num>{_num(r['acceptance_p95_first_ms'], '.0f')}</td>"
        f"<td class=num>{_num(r['acceptance_p95_last_ms'], '.0f')}</td>"
        f"<td class=num>{_num(r['latency_growth'], '.2f')}</td></tr>"
        for r in frame.to_dict("records"))
    return ("<table id=load><tr><th>supplier</th><th>burst orders</th>"
            "<th>accepted [95%]</th><th>oversold of accepted [95%]</th>"
            "<th>failed requests by class</th><th>p95 acceptance, first third (ms)</th>"
            "<th>last third (ms)</th><th>growth</th></tr>" + rows + "</table>")


def _num(x: object, spec: str) -> str:
    value = float(x)  # type: ignore[arg-type]
    return format(value + 0.0, spec) if np.isfinite(value) else "-"


def _beats_html(ranking: Ranking) -> str:
    beats = ranking.beats
    head = "".join(f"<th>{_e(c)}</th>" for c in beats.columns)
    rows = []
    for a in beats.index:
        cells = "".join("<td>-</td>" if a == b else f"<td class=num>{beats.loc[a, b]:.2f}</td>"
                        for b in beats.columns)
        rows.append(f"<tr><th>{_e(a)}</th>{cells}</tr>")
    return f"<table id=beats><tr><th>P(row above column)</th>{head}</tr>{''.join(rows)}</table>"


def _criteria_html(ranking: Ranking) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in CRITERIA if c in ranking.weights)
    weights = "".join(f"<td class=num>{ranking.weights[c]:.2f}</td>" for c in CRITERIA
                      if c in ranking.weights)
    rows = [f"<tr><th>weight</th>{weights}</tr>"]
    for row in ranking.table.itertuples():
        cells = "".join(
            f"<td class=num>{_num(getattr(row, c + '_estimate'), '.3f')} → "
            f"{_num(getattr(row, c + '_value'), '.2f')}</td>"
            for c in CRITERIA if c in ranking.weights)
        rows.append(f"<tr><th>{_e(row.supplier)}</th>{cells}</tr>")
    return (f"<table id=criteria><tr><th>metric → value</th>{head}</tr>{''.join(rows)}"
            "</table>")


def render_html(analysis: RunAnalysis, figs: dict[str, Figure] | None = None) -> str:
    """The whole report as one HTML document (figures inline as base64 PNG)."""
    ranking, config = analysis.ranking, analysis.config
    figs = figs if figs is not None else figures(analysis)
    runs = ", ".join(_e(d.name) for d in analysis.run_dirs)
    scenarios = ", ".join(sorted(set(analysis.scenario_names)))
    verdicts = verdict_sentences(analysis)
    limits = evidence_limits(analysis)
    above = above_statements(ranking, config.beats_min_prob)
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>trialbench report: {runs}</title><style>{_CSS}</style></head><body>",
        "<h1>Which suppliers to trust</h1>",
        f"<p class=sub>runs {runs} · scenario {_e(scenarios)} · generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>",
        "<h2 id=verdict>Verdict</h2>",
        f"<p><b>{_e(headline(analysis))}</b></p>",
        f"<p class=order>{_e(order_statement(ranking))}</p>",
        f"<p>&gt; means every supplier on the left beats every one on the right with "
        f"probability ≥ {config.beats_min_prob:.2f} over the score draws; = means the "
        "evidence does not separate them. "
        + (_e("; ".join(above)) + "." if above else "No supplier is above another yet.")
        + "</p>",
        _ranking_html(ranking),
        "<ul class=verdicts>"
        + "".join(f"<li>{_tier_badge(str(t))} {_e(verdicts[str(s)])}</li>"
                  for s, t in zip(ranking.table["supplier"], ranking.table["tier"],
                                  strict=True))
        + "</ul>",
        "<h3 id=limits>What the evidence cannot tell yet, and what would settle it</h3>"
        "<ul class=limits>"
        + "".join(f"<li>{_e(line)}</li>" for line in limits) + "</ul>",
        "<h3 id=gates>Gates: money taken without value delivered</h3>",
        _findings_html(ranking),
        "<h3 id=load-behaviour>Behaviour under load</h3>", _load_html(analysis),
        "<p><small>Tiers come from absolute thresholds on the score draws (gold ≥ "
        f"{config.gold.min_score:g}, silver ≥ {config.silver.min_score:g}, bronze ≥ "
        f"{config.bronze.min_score:g}, each with probability ≥ {config.gold.min_prob:g}; "
        f"no tier when the 95% score interval is wider than {config.max_interval_width:g}). "
        "A gate makes a supplier \"gated\" and ranks it below every supplier no gate holds: "
        f"from {config.gates.fake_codes} fake, {config.gates.resold_codes} resold, "
        f"{config.gates.duplicate_codes} duplicate or {config.gates.wrong_face_value_codes} "
        f"wrong-face-value code(s), {config.gates.phantom_refunds} refund(s) completed but "
        f"never credited, {config.gates.oversold_orders} oversold order(s), a hidden fee of "
        f"{config.gates.hidden_fee_per_order:g} per order, or validity whose upper 95% bound "
        f"is under {config.validity_floor:g} (0 turns a count gate off). A criterion no "
        "supplier has data for is dropped; one only some lack is drawn anywhere in [0, 1] "
        "for them, widening their interval.</small></p>",
        "<h2 id=figures>Figures</h2>",
    ]
    for title, fig in figs.items():
        data = base64.b64encode(figure_png(fig)).decode("ascii")
        parts.append(f"<h3>{_e(title)}</h3><img alt='{_e(title)}' "
                     f"src='data:image/png;base64,{data}'>")
    parts += [
        "<h2 id=tables>Tables</h2>",
        "<h3>Metrics per supplier</h3>", _metrics_html(analysis),
        "<p><small>Intervals are 95% Jeffreys intervals. Cost rate = (purchase cost + "
        "platform fees + hidden fees) / sale revenue, hidden fees measured from the balance."
        "</small></p>",
        "<h3>Criteria: metric point estimate → value (fixed anchors)</h3>",
        _criteria_html(ranking),
        "<h3>P(row above column)</h3>", _beats_html(ranking),
        "<details><summary>Ranking configuration</summary><pre>"
        + _e(config.model_dump_json(indent=2)) + "</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(analysis: RunAnalysis, out_dir: Path | None = None) -> Path:
    """Write ``report.html`` into ``out_dir`` (default: the first run folder)."""
    folder = out_dir if out_dir is not None else analysis.run_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.html"
    path.write_text(render_html(analysis), encoding="utf-8")
    return path
