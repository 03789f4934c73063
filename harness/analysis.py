"""Analysis of run folders: tables, metrics and ranking, and the verdict in plain words.

Pure pandas/scipy on top of :mod:`harness.results`, :mod:`harness.metrics` and
:mod:`harness.ranking` (never Locust). :func:`analyse_runs` is the one entry point the
``rank`` and ``report`` commands, the demo and the notebook share:

- the tables of every run, concatenated (:func:`harness.results.load_runs`);
- the ranking configuration: the first run's scenario ``ranking:`` section, or the
  defaults of :class:`~harness.ranking.RankingConfig` (a caller may pass its own);
- each supplier's published fees from the scenarios in the manifests, the first run that
  names the supplier winning (:func:`fees_from_manifests`);
- metrics per supplier with 95% Jeffreys intervals, and the ranking.

The narrative helpers turn those into the sentences of the report: the order with its
ties (:func:`order_statement`), one verdict per supplier (:func:`verdict_sentences`), and
what the evidence cannot tell yet (:func:`evidence_limits`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ResultsError
from harness.metrics import jeffreys, rate_intervals, supplier_metrics
from harness.ranking import Ranking, rank_suppliers, value
from harness.ranking_config import INSUFFICIENT, RankingConfig
from harness.results import RunTables, load_runs

__all__ = [
    "RunAnalysis",
    "above_statements",
    "analyse_runs",
    "burst_orders",
    "evidence_limits",
    "fees_from_manifests",
    "headline",
    "latest_run",
    "order_statement",
    "ranking_config_from_manifest",
    "separations",
    "verdict_sentences",
]


@dataclass
class RunAnalysis:
    """Everything the report shows: the tables, the metrics, the ranking and its inputs."""

    run_dirs: list[Path]
    tables: RunTables
    config: RankingConfig
    fees: dict[str, dict[str, float]]
    metrics: pd.DataFrame  # harness.metrics.METRICS_COLUMNS plus <rate>_lo/_hi
    ranking: Ranking

    @property
    def deadlines_s(self) -> list[float]:
        """The distinct delivery deadlines of the trial orders, seconds."""
        trial = self.tables.orders[self.tables.orders["mode"] == "trial"]
        return sorted({float(d) for d in trial["deadline_s"].dropna()})

    @property
    def scenario_names(self) -> list[str]:
        """Name of the scenario of each run, in order."""
        return [str(m.get("scenario", {}).get("name", "?")) for m in self.tables.manifests]


def ranking_config_from_manifest(manifest: Mapping[str, Any]) -> RankingConfig:
    """The scenario's ``ranking:`` section recorded in a run manifest, or the defaults."""
    section = (manifest.get("scenario") or {}).get("ranking")
    return RankingConfig() if section is None else RankingConfig.model_validate(section)


def fees_from_manifests(manifests: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{supplier: {fee key: amount}}`` from the scenarios; the first run naming one wins."""
    fees: dict[str, dict[str, float]] = {}
    for manifest in manifests:
        for supplier in (manifest.get("scenario") or {}).get("suppliers", []):
            name = str(supplier["name"])
            if name not in fees:
                fees[name] = {k: float(v) for k, v in (supplier.get("fees") or {}).items()}
    return fees


def latest_run(root: Path = Path("results")) -> Path:
    """The newest run folder (by name, which starts with the UTC start time) under ``root``."""
    runs = sorted(p for p in root.glob("*") if (p / "manifest.json").is_file())
    if not runs:
        raise ResultsError(f"{root}: no run folders; run `trialbench demo` or `trialbench "
                           "trial SCENARIO` first")
    return runs[-1]


def analyse_runs(run_dirs: Sequence[Path], config: RankingConfig | None = None, *,
                 allow_partial: bool = False) -> RunAnalysis:
    """Load the runs, then compute metrics and the ranking (see the module docstring).
    An interrupted run is refused unless ``allow_partial`` (then the report names it)."""
    dirs = [Path(d) for d in run_dirs]
    tables = load_runs(dirs, allow_partial=allow_partial)
    config = config if config is not None else ranking_config_from_manifest(tables.manifests[0])
    fees = fees_from_manifests(tables.manifests)
    if tables.orders.empty:
        raise ResultsError(f"{dirs[0]}: the run has no orders; nothing to rank")
    ranking = rank_suppliers(tables.orders, tables.codes, tables.refunds, tables.suppliers,
                             fees, config)
    metrics = rate_intervals(supplier_metrics(tables.orders, tables.codes, tables.refunds,
                                              tables.suppliers, fees))
    return RunAnalysis(run_dirs=dirs, tables=tables, config=config, fees=fees,
                       metrics=metrics.set_index("supplier", drop=False), ranking=ranking)


def burst_orders(tables: RunTables) -> pd.DataFrame:
    """The burst rows of the orders table (empty when no run had a burst)."""
    return tables.orders[tables.orders["mode"] == "burst"]


# --------------------------------------------------------------------------- narrative


def separations(ranking: Ranking, min_prob: float) -> list[tuple[str, str, float]]:
    """Every ``(A, B, P(A beats B))`` with P ≥ ``min_prob``, best A first."""
    order = list(ranking.beats.index)
    return [(a, b, float(ranking.beats.loc[a, b])) for a in order for b in order
            if a != b and float(ranking.beats.loc[a, b]) >= min_prob]


def order_statement(ranking: Ranking) -> str:
    """The order with its ties, e.g. ``acme > flaky = feeder > shady``.

    ``>`` means every supplier on the left beats every one on the right with
    P ≥ beats_min_prob; ``=`` joins suppliers the evidence does not separate.
    """
    return " > ".join(" = ".join(group) for group in ranking.groups)


def above_statements(ranking: Ranking, min_prob: float) -> list[str]:
    """``A above B, C`` for each supplier that beats others with P ≥ ``min_prob``."""
    lines = []
    for a in ranking.beats.index:
        below = [str(b) for b in ranking.beats.columns
                 if b != a and float(ranking.beats.loc[a, b]) >= min_prob]
        if below:
            lines.append(f"{a} above {', '.join(below)}")
    return lines


def headline(analysis: RunAnalysis) -> str:
    """The answer in one or two sentences: who leads, and whom not to trust."""
    ranking, min_prob = analysis.ranking, analysis.config.beats_min_prob
    tiers = dict(zip(ranking.table["supplier"], ranking.table["tier"], strict=True))
    top = ranking.groups[0]
    if len(ranking.groups) == 1 and len(top) > 1:
        settled = above_statements(ranking, min_prob)
        text = ("The evidence does not split the suppliers into ordered groups yet"
                + (f"; settled pairs: {'; '.join(settled)}." if settled else "."))
    elif len(top) == 1:
        text = f"Best on this evidence: {top[0]} ({tiers[top[0]]})."
    else:
        named = ", ".join(f"{n} ({tiers[n]})" for n in top)
        inside = [f"{a} above {b}" for a, b, _ in separations(ranking, min_prob)
                  if a in top and b in top]
        text = (f"Leading group: {named}; within it, "
                + (f"only {', '.join(inside)} is settled." if inside
                   else "the evidence does not separate them yet."))
    gated = [str(r.supplier) for r in ranking.table.itertuples() if r.gated]
    if gated:
        text += f" Gated (bad codes, cannot be gold or silver): {', '.join(gated)}."
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _facts(row: pd.Series, deadline: str, deadline_s: float | None
           ) -> tuple[list[str], list[str]]:
    """(good, bad) plain-language facts about one supplier's metrics row."""
    good: list[str] = []
    bad: list[str] = []
    k, n = int(row["sla_share_k"]), int(row["sla_share_n"])
    if n:
        text = f"{k} of {n} orders delivered within the {deadline} SLA"
        (good if k / n >= 0.95 else bad).append(text)
    k, n = int(row["validity_k"]), int(row["validity_n"])
    if n:
        if k == n:
            good.append(f"all {n} codes valid")
        else:
            bad.append(f"only {k} of {n} codes valid")
    k, n = int(row["refund_completion_k"]), int(row["refund_completion_n"])
    if n:
        ck, cn = int(row["refund_credit_k"]), int(row["refund_credit_n"])
        if k == n and ck == cn:
            good.append(f"{k} of {n} refunds completed and credited")
        else:
            if k < n:
                bad.append(f"{n - k} of {n} refund requests not completed")
            if ck < cn:
                bad.append(f"{cn - ck} of {cn} 'completed' refunds never reached the balance")
    fee = float(row["hidden_fee_per_order"])
    if fee == fee and fee >= 0.005:
        bad.append(f"a hidden fee of {fee:.2f} per order taken from the balance")
    k, n = int(row["load_error_rate_k"]), int(row["load_error_rate_n"])
    if n:
        if k / n <= 0.01:
            good.append(f"{n - k} of {n} burst orders accepted")
        else:
            bad.append(f"{k} of {n} burst orders never accepted")
    if bool(row["percentiles_ok"]):
        p95_s = float(row["delivery_p95_ms"]) / 1000
        if deadline_s is None or p95_s <= deadline_s:
            good.append(f"burst delivery p95 {p95_s:.2f} s")
        else:
            bad.append(f"burst delivery p95 {p95_s:.1f} s, beyond the {deadline} SLA")
    growth = float(row["latency_growth"])
    if np.isfinite(growth) and growth >= 2:
        bad.append(f"p95 acceptance {growth:.1f}x slower at the end of the burst than at "
                   "the start")
    partial = int(row["partial_orders"])
    if partial:
        bad.append(f"{_plural(partial, 'order')} only partly filled")
    return good, bad


def verdict_sentences(analysis: RunAnalysis) -> dict[str, str]:
    """One plain-language sentence per supplier, in ranking order."""
    table = analysis.ranking.table
    deadlines = analysis.deadlines_s
    deadline = f"{deadlines[0]:g} s" if len(deadlines) == 1 else "deadline"
    orders = analysis.tables.orders
    out: dict[str, str] = {}
    for row in table.itertuples():
        name = str(row.supplier)
        metrics = analysis.metrics.loc[name]
        good, bad = _facts(metrics, deadline, deadlines[0] if len(deadlines) == 1 else None)
        if row.gated:
            bad = [str(row.gate_reasons).replace("; ", ", ")] + [
                b for b in bad if "codes valid" not in b]
        cost = float(metrics["cost_rate"])
        cost_value = float(row.cost_value)
        if cost == cost and cost_value == cost_value:
            text = f"cost rate {cost:.3f} of the sale price"
            (good if cost_value >= 0.5 else bad).append(text)
        own = orders[orders["supplier"] == name]
        requests, errors = int(own["attempts"].sum()), int(own["errors"].sum())
        if requests and errors / requests >= 0.05:
            bad.append(f"{errors} of {requests} API requests failed (retried by the harness)")
        tier = str(row.tier)
        if tier == INSUFFICIENT:
            head = (f"{name} has no tier yet (score {row.score_lo:.2f}–{row.score_hi:.2f} is "
                    "too wide)")
        elif row.gated:
            head = (f"{name} is capped at {tier} by a gate" if tier != "none"
                    else f"{name} reaches no tier and is gated")
        else:
            head = f"{name} is {tier}" if tier != "none" else f"{name} reaches no tier"
        parts = []
        if good:
            parts.append(", ".join(good))
        if bad:
            parts.append(("but " if good else "") + ", ".join(bad))
        out[name] = head + (": " + "; ".join(parts) if parts else "") + "."
    return out


def _widest_criterion(row: pd.Series, config: RankingConfig,
                      weights: Mapping[str, float]) -> tuple[str, str] | None:
    """The rate criterion whose 95% interval spreads this supplier's score most."""
    anchors = config.anchors.model_dump()
    best: tuple[float, str, str] | None = None
    for crit, rate in (("sla_share", "sla_share"), ("validity", "validity"),
                       ("load_errors", "load_error_rate")):
        if crit not in weights or not int(row[f"{rate}_n"]):
            continue
        k, n = int(row[f"{rate}_k"]), int(row[f"{rate}_n"])
        lo, hi = jeffreys(k, n)
        spread = weights[crit] * abs(float(value(anchors[crit], hi) - value(anchors[crit], lo)))
        text = f"{crit.replace('_', ' ')} {k}/{n} could be anywhere in [{lo:.2f}, {hi:.2f}]"
        if best is None or spread > best[0]:
            best = (spread, crit, text)
    return None if best is None else (best[1], best[2])


def evidence_limits(analysis: RunAnalysis) -> list[str]:
    """What these runs cannot tell yet, one sentence each."""
    ranking, config, metrics = analysis.ranking, analysis.config, analysis.metrics
    out: list[str] = []
    for manifest in analysis.tables.manifests:
        if manifest.get("partial"):
            out.append(f"Run {manifest.get('run_id')} was interrupted and not resumed: "
                       "its figures are partial (`trialbench resume` finishes it).")
    for group in ranking.groups:
        for a, b in pairwise(group):
            n_a, n_b = int(metrics.loc[a, "sla_share_n"]), int(metrics.loc[b, "sla_share_n"])
            count = f"{n_a} orders" if n_a == n_b else f"{n_a} and {n_b} orders"
            p = float(ranking.beats.loc[a, b])
            out.append(f"{count} cannot separate {a} from {b}: P({a} above {b}) = {p:.2f}, "
                       f"below the {config.beats_min_prob:.2f} needed to say so.")
    for row in ranking.table.itertuples():
        if row.tier != INSUFFICIENT:
            continue
        name = str(row.supplier)
        widest = _widest_criterion(metrics.loc[name], config, ranking.weights)
        why = f"; its {widest[1]}" if widest else ""
        out.append(f"{name}'s score interval [{row.score_lo:.2f}, {row.score_hi:.2f}] is wider "
                   f"than {config.max_interval_width:.2f}, so it gets no tier{why}. "
                   "More orders would settle it.")
    perfect = [(str(s), int(metrics.loc[s, "validity_n"])) for s in ranking.table["supplier"]
               if int(metrics.loc[s, "validity_n"])
               and int(metrics.loc[s, "validity_k"]) == int(metrics.loc[s, "validity_n"])]
    if perfect:
        name, n = min(perfect, key=lambda item: item[1])
        lo = jeffreys(n, n)[0]
        out.append(f"Even a perfect record is a sample: {n} of {n} valid codes ({name}) is "
                   f"compatible with a true validity as low as {lo:.3f} (Jeffreys 95%).")
    if burst_orders(analysis.tables).empty:
        out.append("No burst in these runs: latency percentiles (p95) and behaviour under "
                   "peak load are not measured; the trial ranks delivery by the share "
                   "within the SLA only.")
    missing = [(str(r.supplier), str(r.missing_criteria)) for r in ranking.table.itertuples()
               if r.missing_criteria]
    for name, crits in missing:
        out.append(f"{name} has no data for {crits}: scored 0 there (no evidence, no credit).")
    return out


def percent_interval(k: int, n: int) -> str:
    """``k/n [lo, hi]`` with the Jeffreys 95% interval, or ``-`` when n is 0."""
    if not n:
        return "-"
    lo, hi = jeffreys(k, n)
    return f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def finite(x: float) -> bool:
    """True for a real number (not NaN or infinite)."""
    return bool(np.isfinite(x))
