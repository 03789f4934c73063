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

The narrative helpers turn those findings (data) into the sentences of the report, the
``rank`` command and the demo: the order with its ties and the gated suppliers
(:func:`order_statement`), the headline (:func:`headline`), each gate with its evidence
(:func:`finding_text`), one verdict per supplier (:func:`verdict_sentences`), behaviour
under load (:func:`load_table`), and what the evidence cannot tell yet and how many orders
would settle it (:func:`evidence_limits`, :func:`settle_sentences`).
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
from harness.events import format_error_counts, parse_error_counts
from harness.metrics import jeffreys, rate_intervals, supplier_metrics
from harness.ranking import Ranking, rank_suppliers, settle_rows, value
from harness.ranking_config import INSUFFICIENT, RankingConfig
from harness.results import RunTables, load_runs

__all__ = [
    "RunAnalysis",
    "above_statements",
    "analyse_runs",
    "burst_orders",
    "evidence_limits",
    "fees_from_manifests",
    "finding_short",
    "finding_text",
    "gate_texts",
    "headline",
    "latest_run",
    "load_table",
    "order_statement",
    "percent_interval",
    "ranking_config_from_manifest",
    "separations",
    "settle_sentences",
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
                                              tables.suppliers, fees,
                                              refund_deadline_s=config.refund_deadline_s))
    return RunAnalysis(run_dirs=dirs, tables=tables, config=config, fees=fees,
                       metrics=metrics.set_index("supplier", drop=False), ranking=ranking)


def burst_orders(tables: RunTables) -> pd.DataFrame:
    """The burst rows of the orders table (empty when no run had a burst)."""
    return tables.orders[tables.orders["mode"] == "burst"]


# --------------------------------------------------------------------------- narrative


def separations(ranking: Ranking, min_prob: float) -> list[tuple[str, str, float]]:
    """Every ``(A, B, P(A beats B))`` among suppliers no gate holds with P ≥ ``min_prob``
    (and enough measured to decide), best A first."""
    if not ranking.decided:
        return []
    order = [n for group in ranking.groups for n in group]
    return [(a, b, float(ranking.beats.loc[a, b])) for a in order for b in order
            if a != b and float(ranking.beats.loc[a, b]) >= min_prob]


def order_statement(ranking: Ranking) -> str:
    """The order with its ties, e.g. ``acme > flaky = slowpoke; gated: shady, feeder``.

    ``>`` means every supplier on the left is above every one on the right (P ≥
    beats_min_prob); ``=`` joins suppliers the evidence does not separate as groups, and a
    pair inside a group that is separated is named in brackets. Gated suppliers come after
    ``gated:``: a gate puts them below every supplier no gate holds, whatever their score.
    """
    parts = []
    for group in ranking.groups:
        text = " = ".join(group)
        inside = [f"{a} above {b}" for a in group for b in group
                  if a != b and ranking.above(a, b)]
        parts.append(text + (f" (but {', '.join(inside)})" if inside else ""))
    text = " > ".join(parts)
    if ranking.gated:
        text += ("; " if text else "") + "gated: " + ", ".join(ranking.gated)
    return text


def above_statements(ranking: Ranking, min_prob: float) -> list[str]:
    """``A above B, C`` for each supplier no gate holds that beats others no gate holds with
    P ≥ ``min_prob``. (Every such supplier is above every gated one; the order says so.)"""
    lines = []
    for a, b_list in _above_map(ranking, min_prob).items():
        lines.append(f"{a} above {', '.join(b_list)}")
    return lines


def _above_map(ranking: Ranking, min_prob: float) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a, b, _ in separations(ranking, min_prob):
        out.setdefault(a, []).append(b)
    return out


_FINDING_WORDS = {
    "fake_codes": "{count} of {n} codes unknown to the issuer (fake)",
    "resold_codes": "{count} of {n} codes already redeemed (resold)",
    "duplicate_codes": "{count} of {n} codes delivered twice",
    "wrong_face_value_codes": "{count} of {n} codes of the wrong face value",
    "phantom_refunds": "{count} of {n} refunds marked completed but never credited",
    "oversold_orders": "{count} of {n} accepted orders oversold (then failed for stock, "
                       "partly filled or without a code)",
    "low_validity": "validity {valid}/{n}: upper 95% bound {hi:.3f} under the floor "
                    "{threshold:.2f}",
    "slow_refunds": "{count} of {n} refunds completed later than the {threshold:g} s "
                    "refund deadline",
}


def finding_text(finding: Mapping[str, Any]) -> str:
    """One finding (a row of :data:`harness.ranking.FINDINGS_COLUMNS`) in words, with its
    share and 95% interval, e.g. "10 of 120 codes unknown to the issuer (fake): 8.3%
    [4.4%, 14.3%]"."""
    kind = str(finding["kind"])
    count, n = int(finding["count"]), int(finding["n"])
    if kind == "hidden_fee":
        return (f"an undisclosed fee of {float(finding['share']):.2f} per order taken from the "
                f"balance ({count} orders)" + ("" if finding["gates"] else
                                               ", which orders left unknown may explain"))
    if kind == "low_validity":
        k = n - count
        return _FINDING_WORDS[kind].format(valid=k, n=n, hi=jeffreys(k, n)[1],
                                           threshold=float(finding["threshold"]))
    words = _FINDING_WORDS.get(kind, kind.replace("_", " ") + ": {count} of {n}")
    text = words.format(count=count, n=n, threshold=float(finding["threshold"]))
    if n and kind != "slow_refunds":
        text += (f": {count / n:.1%} [{float(finding['lo']):.1%}, "
                 f"{float(finding['hi']):.1%}]")
    return text


_SHORT = {"fake_codes": "fake codes", "resold_codes": "resold codes",
          "duplicate_codes": "duplicate codes", "wrong_face_value_codes": "wrong-face codes",
          "phantom_refunds": "refunds never credited", "oversold_orders": "oversold orders",
          "slow_refunds": "slow refunds"}


def finding_short(finding: Mapping[str, Any]) -> str:
    """A finding in a few words for a table cell, e.g. "fake codes 10/120"."""
    kind = str(finding["kind"])
    if kind == "hidden_fee":
        return f"hidden fee {float(finding['share']):.2f}/order"
    if kind == "low_validity":
        n = int(finding["n"])
        hi = jeffreys(n - int(finding["count"]), n)[1]
        return f"validity bound {hi:.3f} < {float(finding['threshold']):.2f}"
    return f"{_SHORT.get(kind, kind)} {int(finding['count'])}/{int(finding['n'])}"


def gate_texts(ranking: Ranking, supplier: str, *, short: bool = False) -> list[str]:
    """The gates that hold for ``supplier``, in words with their evidence."""
    found = ranking.findings
    rows = found[(found["supplier"] == supplier) & found["gates"].astype(bool)]
    return [(finding_short if short else finding_text)(r) for r in rows.to_dict("records")]


def settle_sentences(ranking: Ranking) -> list[str]:
    """For every tie and every "insufficient evidence": how many orders per supplier would
    settle it at the stated probability, if the observed rates hold
    (:func:`harness.ranking.settle_rows`)."""
    config = ranking.config
    out = []
    for row in settle_rows(ranking).to_dict("records"):
        a, b, now = str(row["a"]), str(row["b"]), int(row["orders_now"])
        needed, share = float(row["orders_needed"]), float(row["share"])
        what = (f"separate {a} from {b} (P ≥ {config.beats_min_prob:.2f})" if b
                else f"narrow {a}'s score interval to {config.max_interval_width:g} for a tier")
        if np.isfinite(needed):
            out.append(f"About {int(needed)} orders per supplier (now {now}) would {what} in "
                       f"{config.settle_assurance:.0%} of reruns, if the observed rates hold.")
        else:
            most = int(np.ceil(now * 32 / 10) * 10)
            out.append(f"More orders would not {what}: even {most} per supplier do in only "
                       f"{share:.0%} of reruns, if the observed rates hold"
                       + (f"; {a} and {b} perform alike." if b else "."))
    return out


def headline(analysis: RunAnalysis) -> str:
    """The answer in one or two sentences: who leads, who is gated and why, what would
    settle the rest. ``rank``, the demo and the report print this same text."""
    ranking, min_prob = analysis.ranking, analysis.config.beats_min_prob
    tiers = dict(zip(ranking.table["supplier"], ranking.table["tier"], strict=True))
    if not ranking.decided:
        text = (f"No verdict: the criteria measured carry {ranking.measured_share:.0%} of "
                "the policy's weight besides cost, under the "
                f"{analysis.config.min_measured_weight:.0%} needed, so price would decide; "
                "missing: " + ", ".join(ranking.not_measured) + ".")
    elif not ranking.groups:
        text = "No supplier passes the gates."
    elif len(ranking.groups[0]) == 1:
        best = ranking.groups[0][0]
        text = f"Best on this evidence: {best} ({tiers[best]})."
    else:
        top = ranking.groups[0]
        named = ", ".join(f"{n} ({tiers[n]})" for n in top)
        inside = [f"{a} above {b}" for a, b, _ in separations(ranking, min_prob)
                  if a in top and b in top]
        text = (f"Leading group: {named}; within it, "
                + (f"only {', '.join(inside)} is settled." if inside
                   else "the evidence does not separate them yet."))
    for name in ranking.gated:
        text += f" Gated: {name} ({'; '.join(gate_texts(ranking, name))})."
    ties = [r for r in settle_rows(ranking).to_dict("records")
            if r["b"] and np.isfinite(float(r["orders_needed"]))]
    if ties:
        most = max(int(r["orders_needed"]) for r in ties)
        text += (f" About {most} orders per supplier would settle every tie "
                 f"({analysis.config.settle_assurance:.0%} of reruns).")
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _facts(row: pd.Series, deadline: str, deadline_s: float | None, config: RankingConfig
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
        median = float(row["refund_latency_median_s"])
        speed = f", median {median:.2f} s" if np.isfinite(median) else ""
        if k == n and ck == cn and not int(row["refund_slow"]):
            good.append(f"{k} of {n} refunds completed and credited{speed}")
        else:
            if k < n:
                bad.append(f"{n - k} of {n} refund requests not completed")
            if int(row["refund_slow"]):
                bad.append(f"{int(row['refund_slow'])} of {k} refunds slower than the "
                           f"{config.refund_deadline_s:g} s refund deadline{speed}")
    skipped = int(row["orders_skipped"])
    if skipped:
        bad.append(f"{_plural(skipped, 'order')} not sent: the spending cap blocked "
                   f"{'it' if skipped == 1 else 'them'}")
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
    requests, errors = int(row["requests"]), int(row["supplier_errors"])
    classes = parse_error_counts(str(row["error_classes"]))
    not_found = classes.pop("not_found", 0)
    if requests and errors:
        text = (f"{errors} of {requests} requests failed at the supplier "
                f"({format_error_counts(classes)})")
        (bad if errors / requests >= 0.05 else good).append(text)
    extra = int(row["harness_requests"])
    if extra or not_found:
        own = [f"{_plural(extra, 'request')} of its own (re-POSTs after 429, GETs resolving "
               "unknown outcomes)"] if extra else []
        if not_found:
            own.append(f"{not_found} not-found answers to its GETs, which the protocol allows "
                       "before an order is visible")
        good.append("the harness counted apart " + " and ".join(own))
    return good, bad


def verdict_sentences(analysis: RunAnalysis) -> dict[str, str]:
    """One plain-language sentence per supplier, in ranking order."""
    ranking = analysis.ranking
    table = ranking.table
    deadlines = analysis.deadlines_s
    deadline = f"{deadlines[0]:g} s" if len(deadlines) == 1 else "deadline"
    out: dict[str, str] = {}
    for row in table.itertuples():
        name = str(row.supplier)
        metrics = analysis.metrics.loc[name]
        good, bad = _facts(metrics, deadline, deadlines[0] if len(deadlines) == 1 else None,
                           analysis.config)
        cost = float(metrics["cost_rate"])
        cost_value = float(row.cost_value)
        if cost == cost and cost_value == cost_value:
            text = f"cost rate {cost:.3f} of the sale price"
            (good if cost_value >= 0.5 else bad).append(text)
        unknown = [c for c in str(row.missing_criteria).split(", ")
                   if c and c in ranking.weights]
        if unknown:
            bad.append(f"no data for {', '.join(unknown)} (anywhere in 0–1 in the score)")
        tier = str(row.tier)
        if row.gated:
            head = f"{name} is gated: {'; '.join(gate_texts(ranking, name))}"
            bad = [b for b in bad if "codes valid" not in b]
        elif tier == INSUFFICIENT:
            head = (f"{name} has no tier yet (score {row.score_lo:.2f}–{row.score_hi:.2f} is "
                    "too wide)")
        else:
            head = f"{name} is {tier}" if tier != "none" else f"{name} reaches no tier"
        parts = []
        if good:
            parts.append(", ".join(good))
        if bad:
            parts.append(("but " if good else "") + ", ".join(bad))
        joiner = ". Also: " if row.gated else ": "
        out[name] = head + (joiner + "; ".join(parts) if parts else "") + "."
    return out


def load_table(analysis: RunAnalysis) -> pd.DataFrame:
    """Behaviour under load per supplier, from the bursts (empty without one): burst orders
    sent and accepted (share, 95% interval), oversold share of the accepted, failed requests
    by class, p95 acceptance in the first and last third and their ratio."""
    rows = []
    for name, m in analysis.metrics.iterrows():
        n = int(m["load_error_rate_n"])
        if not n:
            continue
        accepted = n - int(m["load_error_rate_k"])
        rows.append({
            "supplier": name, "burst_orders": n,
            "accepted": percent_interval(accepted, n),
            "oversold": percent_interval(int(m["load_oversold_k"]), int(m["load_oversold_n"])),
            "errors_by_class": str(m["load_error_classes"]),
            "acceptance_p95_first_ms": float(m["acceptance_p95_first_ms"]),
            "acceptance_p95_last_ms": float(m["acceptance_p95_last_ms"]),
            "latency_growth": float(m["latency_growth"]),
        })
    return pd.DataFrame(rows, columns=["supplier", "burst_orders", "accepted", "oversold",
                                       "errors_by_class", "acceptance_p95_first_ms",
                                       "acceptance_p95_last_ms", "latency_growth"])


def _widest_criterion(row: pd.Series, config: RankingConfig,
                      weights: Mapping[str, float]) -> tuple[str, str] | None:
    """The rate criterion whose 95% interval spreads this supplier's score most."""
    anchors = config.anchors.model_dump()
    best: tuple[float, str, str] | None = None
    for crit, rate in (("sla_share", "sla_share"), ("validity", "validity"),
                       ("refunds", "refund_ok"), ("load_errors", "load_error_rate")):
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
    """What these runs cannot tell yet, one sentence each, with what would settle it."""
    ranking, config, metrics = analysis.ranking, analysis.config, analysis.metrics
    out: list[str] = []
    for manifest in analysis.tables.manifests:
        if manifest.get("partial"):
            out.append(f"Run {manifest.get('run_id')} was interrupted and not resumed: "
                       "its figures are partial (`trialbench resume` finishes it).")
    if ranking.not_measured:
        out.append(f"Not measured by these runs: {', '.join(ranking.not_measured)}; dropped "
                   "from every score (the other weights renormalised)"
                   + ("; no burst, so percentiles and load behaviour are unknown."
                      if burst_orders(analysis.tables).empty else "."))
    for group in ranking.groups:
        for a, b in pairwise(group):
            if ranking.above(a, b):
                continue
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
                   f"than {config.max_interval_width:.2f}, so it gets no tier{why}.")
    out += settle_sentences(ranking)
    perfect = [(str(s), int(metrics.loc[s, "validity_n"])) for s in ranking.table["supplier"]
               if int(metrics.loc[s, "validity_n"])
               and int(metrics.loc[s, "validity_k"]) == int(metrics.loc[s, "validity_n"])]
    if perfect:
        name, n = min(perfect, key=lambda item: item[1])
        lo = jeffreys(n, n)[0]
        out.append(f"Even a perfect record is a sample: {n} of {n} valid codes ({name}) is "
                   f"compatible with a true validity as low as {lo:.3f} (Jeffreys 95%).")
    for row in ranking.table.itertuples():
        unknown = [c for c in str(row.missing_criteria).split(", ")
                   if c and c in ranking.weights]
        if unknown:
            out.append(f"{row.supplier} has no data for {', '.join(unknown)}, which others "
                       "have: each draw takes its value anywhere in [0, 1], which widens its "
                       "score interval by up to that weight.")
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
