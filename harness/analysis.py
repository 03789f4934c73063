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

The analysis states what it finds as data, never as sentences: the gate findings and
the qualification findings (supplier, kind, count, n, share, interval, threshold, whether
it gates; :func:`qualification_findings` adds the brand, products and expiry), the facts of
each supplier's verdict (:func:`supplier_facts`: a reason code, good or bad, and its
numbers), what the evidence cannot tell yet (:func:`evidence_gaps`), and behaviour under
load (:func:`load_table`). :mod:`harness.wording` alone turns them into words, in the
reader's language; suppliers keep their slug here and are shown by their display name
(:attr:`RunAnalysis.display_names`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ResultsError
from harness.events import parse_error_counts
from harness.metrics import jeffreys, rate_intervals, supplier_metrics
from harness.ranking import FINDINGS_COLUMNS, Ranking, rank_suppliers, value
from harness.ranking_config import INSUFFICIENT, RankingConfig
from harness.results import RunTables, load_runs

__all__ = [
    "QUALIFICATION_COLUMNS",
    "RunAnalysis",
    "Statement",
    "analyse_runs",
    "burst_orders",
    "display_names_from_manifests",
    "evidence_gaps",
    "fees_from_manifests",
    "latest_run",
    "load_table",
    "percent_interval",
    "qualification_findings",
    "qualifications_from_manifests",
    "ranking_config_from_manifest",
    "run_date",
    "separations",
    "supplier_facts",
    "write_analysis_csv",
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
    display_names: dict[str, str] = field(default_factory=dict)
    """Slug → the name as merchants write it (the scenario's ``display_name``)."""
    qualifications: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Slug → the supplier's ``qualifications:`` as recorded in the manifest."""
    findings: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Every finding: the ranking's (:data:`harness.ranking.FINDINGS_COLUMNS`) and the
    qualification findings, with :data:`QUALIFICATION_COLUMNS` (NaN for other kinds)."""
    today: date | None = None
    """The day qualifications were checked on: the first run's start (UTC)."""
    peak_date: date | None = None
    expiry_window_days: int = 60
    qualification_gates: tuple[str, ...] = ()

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
    """Load the runs, then compute metrics, qualification findings and the ranking (see the
    module docstring). An interrupted run is refused unless ``allow_partial`` (then the
    report names it)."""
    dirs = [Path(d) for d in run_dirs]
    tables = load_runs(dirs, allow_partial=allow_partial)
    config = config if config is not None else ranking_config_from_manifest(tables.manifests[0])
    fees = fees_from_manifests(tables.manifests)
    if tables.orders.empty:
        raise ResultsError(f"{dirs[0]}: the run has no orders; nothing to rank")
    scenario = tables.manifests[0].get("scenario") or {}
    checks = scenario.get("qualification_checks") or {}
    today = run_date(tables.manifests[0])
    peak = _as_date(scenario.get("peak_date"))
    window = int(checks.get("expiry_window_days", 60))
    gates = tuple(str(g) for g in checks.get("gate", ()))
    quals = qualifications_from_manifests(tables.manifests)
    names = sorted({str(n) for n in tables.orders["supplier"].unique()})
    qual_found = qualification_findings(quals, {n: quals.get(n, {}).get("_products", [])
                                                for n in names},
                                        today=today, peak_date=peak, window_days=window,
                                        gates=gates)
    # computed once: the ranking's metrics and the metrics table are the same
    raw_metrics = supplier_metrics(tables.orders, tables.codes, tables.refunds,
                                   tables.suppliers, fees,
                                   refund_deadline_s=config.refund_deadline_s)
    ranking = rank_suppliers(tables.orders, tables.codes, tables.refunds, tables.suppliers,
                             fees, config, extra_findings=qual_found, metrics=raw_metrics)
    metrics = rate_intervals(raw_metrics)
    quals_frame = pd.DataFrame(qual_found, columns=[*FINDINGS_COLUMNS, *QUALIFICATION_COLUMNS])
    own = ranking.findings[~ranking.findings["kind"].isin(quals_frame["kind"].unique())]
    findings = pd.concat([own.assign(**{c: np.nan for c in QUALIFICATION_COLUMNS}),
                          quals_frame], ignore_index=True) if len(quals_frame) else \
        ranking.findings.assign(**{c: np.nan for c in QUALIFICATION_COLUMNS})
    return RunAnalysis(run_dirs=dirs, tables=tables, config=config, fees=fees,
                       metrics=metrics.set_index("supplier", drop=False), ranking=ranking,
                       display_names=display_names_from_manifests(tables.manifests),
                       qualifications=quals, findings=findings, today=today, peak_date=peak,
                       expiry_window_days=window, qualification_gates=gates)


def display_names_from_manifests(manifests: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``{slug: display name}`` from the scenarios (``display_name``, else the slug); the
    first run naming a supplier wins."""
    out: dict[str, str] = {}
    for manifest in manifests:
        for supplier in (manifest.get("scenario") or {}).get("suppliers", []):
            name = str(supplier["name"])
            out.setdefault(name, str(supplier.get("display_name") or name))
    return out


def qualifications_from_manifests(manifests: Iterable[Mapping[str, Any]]
                                  ) -> dict[str, dict[str, Any]]:
    """``{slug: qualifications}`` from the scenarios, each with ``_products``: the skus the
    scenario sells at that supplier. The first run naming a supplier wins."""
    out: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        for supplier in (manifest.get("scenario") or {}).get("suppliers", []):
            name = str(supplier["name"])
            if name not in out:
                quals = dict(supplier.get("qualifications") or {})
                quals["_products"] = [str(p["sku"]) for p in supplier.get("products", [])]
                out[name] = quals
    return out


def run_date(manifest: Mapping[str, Any]) -> date:
    """The UTC day a run started (its manifest's ``started_at``), else today."""
    started = manifest.get("started_at")
    if isinstance(started, str):
        try:
            return datetime.fromisoformat(started.replace("Z", "+00:00")).astimezone(UTC).date()
        except ValueError:
            pass
    return datetime.now(UTC).date()


def _as_date(value: object) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        return date.fromisoformat(value)
    return None


QUALIFICATION_COLUMNS: dict[str, str] = {
    "brand": "the brand of the authorisation (empty for missing_authorisation)",
    "products": "the skus concerned, ', '-separated: not covered (missing_authorisation) "
                "or covered by the authorisation",
    "expires": "the authorisation's last valid day, YYYY-MM-DD (empty if missing)",
    "days_left": "days from the run's start to the expiry (negative: expired)",
    "peak_date": "the scenario's peak_date, YYYY-MM-DD (empty without one)",
}
"""Extra columns of a qualification finding (kinds missing_authorisation,
authorisation_expired, authorisation_expiring, authorisation_lapses_before_peak)."""


def qualification_findings(qualifications: Mapping[str, Mapping[str, Any]],
                           sold: Mapping[str, Sequence[str]], *, today: date,
                           peak_date: date | None = None, window_days: int = 60,
                           gates: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The qualification findings of every supplier, as data (finding rows with
    :data:`QUALIFICATION_COLUMNS`):

    - ``missing_authorisation``: products being sold (``sold``) that no brand authorisation
      covers; only for a supplier that lists any authorisation or for every supplier when
      it gates (a supplier with no paperwork recorded is not judged unless asked to);
    - per authorisation covering a product being sold: ``authorisation_expired`` (expiry
      before ``today``), else ``authorisation_lapses_before_peak`` (before ``peak_date``),
      else ``authorisation_expiring`` (within ``window_days`` of ``today``).

    A kind in ``gates`` gates the supplier; ``threshold`` is the window in days."""
    out: list[dict[str, Any]] = []
    peak = peak_date.isoformat() if peak_date else ""
    for name, products in sold.items():
        quals = qualifications.get(name, {})
        auths = list(quals.get("authorisations") or [])
        covered = {str(p) for a in auths for p in a.get("products", [])}
        missing = [p for p in products if p not in covered]
        if missing and (auths or "missing_authorisation" in gates):
            out.append(_qual_row(name, "missing_authorisation", len(missing), len(products),
                                 window_days, "missing_authorisation" in gates, brand="",
                                 products=", ".join(missing), expires="", days_left=np.nan,
                                 peak_date=peak))
        for auth in auths:
            mine = [str(p) for p in auth.get("products", []) if str(p) in products]
            expires = _as_date(auth.get("expires"))
            if not mine or expires is None:
                continue
            days = (expires - today).days
            if days < 0:
                kind = "authorisation_expired"
            elif peak_date is not None and expires < peak_date:
                kind = "authorisation_lapses_before_peak"
            elif days <= window_days:
                kind = "authorisation_expiring"
            else:
                continue
            out.append(_qual_row(name, kind, len(mine), len(products), window_days,
                                 kind in gates, brand=str(auth.get("brand", "")),
                                 products=", ".join(mine), expires=expires.isoformat(),
                                 days_left=days, peak_date=peak))
    return out


def _qual_row(supplier: str, kind: str, count: int, n: int, window: int, gates: bool,
              **detail: Any) -> dict[str, Any]:
    return {"supplier": supplier, "kind": kind, "count": count, "n": n,
            "share": count / n if n else np.nan, "lo": np.nan, "hi": np.nan,
            "threshold": float(window), "gates": gates, **detail}


def write_analysis_csv(analysis: RunAnalysis, folder: Path) -> Path:
    """:func:`harness.ranking.write_ranking_csv` (``ranking.csv``, ``ranking_beats.csv``),
    with ``findings.csv`` holding every finding: the gates' and the qualifications', these
    with :data:`QUALIFICATION_COLUMNS` after the columns of
    :data:`harness.ranking.FINDINGS_COLUMNS`. Returns the path of ``ranking.csv``."""
    from harness.ranking import write_ranking_csv

    path = write_ranking_csv(analysis.ranking, folder)
    if len(analysis.findings.columns):
        analysis.findings.to_csv(folder / "findings.csv", index=False)
    return path


def burst_orders(tables: RunTables) -> pd.DataFrame:
    """The burst rows of the orders table (empty when no run had a burst)."""
    return tables.orders[tables.orders["mode"] == "burst"]


# --------------------------------------------------------------------------- findings as data


@dataclass(frozen=True)
class Statement:
    """One thing the analysis found, as data: a reason ``code`` (its words are the catalogue
    entry ``fact.<code>`` or ``limits.<code>``), whether it speaks for the supplier
    (``good``; None when neither), and its numbers and names (``fields``: suppliers by
    slug under ``name``/``a``/``b``, criteria by name under ``criterion``/``criteria``)."""

    code: str
    fields: dict[str, Any]
    good: bool | None = None


def separations(ranking: Ranking, min_prob: float) -> list[tuple[str, str, float]]:
    """Every ``(A, B, P(A beats B))`` among suppliers no gate holds with P ≥ ``min_prob``
    (and enough measured to decide), best A first."""
    if not ranking.decided:
        return []
    order = [n for group in ranking.groups for n in group]
    return [(a, b, float(ranking.beats.loc[a, b])) for a in order for b in order
            if a != b and float(ranking.beats.loc[a, b]) >= min_prob]


def _facts(row: pd.Series, deadline_s: float | None, config: RankingConfig
           ) -> list[Statement]:
    """The facts about one supplier's metrics row, each good or bad."""
    out: list[Statement] = []

    def add(code: str, good: bool, **fields: Any) -> None:
        out.append(Statement(code, fields, good))

    k, n = int(row["sla_share_k"]), int(row["sla_share_n"])
    if n:
        add("sla", k / n >= 0.95, k=k, n=n, deadline_s=deadline_s)
    k, n = int(row["validity_k"]), int(row["validity_n"])
    if n:
        if k == n:
            add("codes_all_valid", True, n=n)
        else:
            add("codes_some_valid", False, k=k, n=n)
    k, n = int(row["refund_completion_k"]), int(row["refund_completion_n"])
    if n:
        ck, cn = int(row["refund_credit_k"]), int(row["refund_credit_n"])
        median = float(row["refund_latency_median_s"])
        slow = int(row["refund_slow"])
        if k == n and ck == cn and not slow:
            add("refunds_ok", True, k=k, n=n, median=median)
        else:
            if k < n:
                add("refunds_not_completed", False, missing=n - k, n=n)
            if slow:
                add("refunds_slow", False, slow=slow, k=k, deadline=config.refund_deadline_s,
                    median=median)
    skipped = int(row["orders_skipped"])
    if skipped:
        add("skipped", False, count=skipped)
    k, n = int(row["load_error_rate_k"]), int(row["load_error_rate_n"])
    if n:
        if k / n <= 0.01:
            add("burst_accepted", True, k=n - k, n=n)
        else:
            add("burst_never_accepted", False, k=k, n=n)
    if bool(row["percentiles_ok"]):
        p95_s = float(row["delivery_p95_ms"]) / 1000
        if deadline_s is None or p95_s <= deadline_s:
            add("burst_p95", True, p95=p95_s)
        else:
            add("burst_p95_slow", False, p95=p95_s, deadline_s=deadline_s)
    growth = float(row["latency_growth"])
    if np.isfinite(growth) and growth >= 2:
        add("latency_growth", False, growth=growth)
    requests, errors = int(row["requests"]), int(row["supplier_errors"])
    classes = parse_error_counts(str(row["error_classes"]))
    not_found = classes.pop("not_found", 0)
    if requests and errors:
        add("supplier_errors", errors / requests < 0.05, errors=errors, requests=requests,
            classes=classes)
    extra = int(row["harness_requests"])
    if extra or not_found:
        add("harness_apart", True, requests=extra, not_found=not_found)
    return out


def supplier_facts(analysis: RunAnalysis) -> dict[str, list[Statement]]:
    """The facts of each supplier's verdict, in ranking order (slug → statements): delivery
    within the SLA, codes, refunds, the cap, bursts, supplier errors, the harness's own
    requests, the cost rate, criteria without data, the platform grade. Each is good or
    bad; :func:`harness.wording.verdict_sentences` words them."""
    ranking = analysis.ranking
    deadlines = analysis.deadlines_s
    deadline = deadlines[0] if len(deadlines) == 1 else None
    out: dict[str, list[Statement]] = {}
    for row in ranking.table.itertuples():
        name = str(row.supplier)
        metrics = analysis.metrics.loc[name]
        facts = _facts(metrics, deadline, analysis.config)
        cost, cost_value = float(metrics["cost_rate"]), float(row.cost_value)
        if cost == cost and cost_value == cost_value:
            facts.append(Statement("cost_rate", {"cost": cost}, cost_value >= 0.5))
        unknown = [c for c in str(row.missing_criteria).split(", ")
                   if c and c in ranking.weights]
        if unknown:
            facts.append(Statement("no_data", {"criteria": unknown}, False))
        grade = (analysis.qualifications.get(name) or {}).get("platform_grade")
        if grade:
            facts.append(Statement("platform_grade", {"grade": str(grade)}, True))
        out[name] = facts
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
                      weights: Mapping[str, float]) -> dict[str, Any] | None:
    """The rate criterion whose 95% interval spreads this supplier's score most."""
    anchors = config.anchors.model_dump()
    best: tuple[float, dict[str, Any]] | None = None
    for crit, rate in (("sla_share", "sla_share"), ("validity", "validity"),
                       ("refunds", "refund_ok"), ("load_errors", "load_error_rate")):
        if crit not in weights or not int(row[f"{rate}_n"]):
            continue
        k, n = int(row[f"{rate}_k"]), int(row[f"{rate}_n"])
        lo, hi = jeffreys(k, n)
        spread = weights[crit] * abs(float(value(anchors[crit], hi) - value(anchors[crit], lo)))
        if best is None or spread > best[0]:
            best = (spread, {"criterion": crit, "k": k, "n": n, "lo": lo, "hi": hi})
    return None if best is None else best[1]


def evidence_gaps(analysis: RunAnalysis) -> list[Statement]:
    """What these runs cannot tell yet, as statements (codes of ``limits.*``): interrupted
    runs, criteria not measured, ties and their probability, too-wide score intervals
    (with the widest criterion), what would settle each (``settle``: the rows of
    :func:`harness.ranking.settle_rows`), the floor a perfect record still allows, and
    criteria a supplier lacks."""
    from harness.ranking import settle_rows

    ranking, config, metrics = analysis.ranking, analysis.config, analysis.metrics
    out: list[Statement] = []
    for manifest in analysis.tables.manifests:
        if manifest.get("partial"):
            out.append(Statement("partial", {"run": str(manifest.get("run_id"))}))
    if ranking.not_measured:
        out.append(Statement("not_measured", {
            "criteria": list(ranking.not_measured),
            "no_burst": burst_orders(analysis.tables).empty}))
    for group in ranking.groups:
        for a, b in pairwise(group):
            if ranking.above(a, b):
                continue
            out.append(Statement("tie", {
                "a": a, "b": b, "n_a": int(metrics.loc[a, "sla_share_n"]),
                "n_b": int(metrics.loc[b, "sla_share_n"]),
                "p": float(ranking.beats.loc[a, b]), "needed": config.beats_min_prob}))
    for row in ranking.table.itertuples():
        if row.tier != INSUFFICIENT:
            continue
        name = str(row.supplier)
        out.append(Statement("wide", {
            "name": name, "lo": float(row.score_lo), "hi": float(row.score_hi),
            "width": config.max_interval_width,
            "widest": _widest_criterion(metrics.loc[name], config, ranking.weights)}))
    for settle in settle_rows(ranking).to_dict("records"):
        out.append(Statement("settle", dict(settle)))
    perfect = [(str(s), int(metrics.loc[s, "validity_n"])) for s in ranking.table["supplier"]
               if int(metrics.loc[s, "validity_n"])
               and int(metrics.loc[s, "validity_k"]) == int(metrics.loc[s, "validity_n"])]
    if perfect:
        name, n = min(perfect, key=lambda item: item[1])
        out.append(Statement("perfect", {"name": name, "n": n, "lo": jeffreys(n, n)[0]}))
    for row in ranking.table.itertuples():
        unknown = [c for c in str(row.missing_criteria).split(", ")
                   if c and c in ranking.weights]
        if unknown:
            out.append(Statement("unknown", {"name": str(row.supplier), "criteria": unknown}))
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
