"""``trialbench check``: judge runs on SLA thresholds, against a baseline, over a history.

Plain data in, plain data out: :func:`check_runs` returns a :class:`CheckReport` whose
results are :class:`CheckResult` rows (one per supplier and check); the terminal text, the
Markdown summary and the JUnit file are all rendered from it. The statistics are in
:mod:`harness.check.stats`, and why each decision is made is written there.

Exit codes (:attr:`CheckReport.exit_code`): 0 every check that could be judged passed and
at least one could (a supplier being reachable is not a judgement); 1 a breach or a
regression (whatever else happened); 3 the runs cannot
be judged: interrupted or failed, no orders, a supplier that accepted nothing
(unreachable), or no check had enough data (with ``strict``, any skipped check); 2 (bad
input) is raised as a :class:`~harness.errors.HarnessError` before any check runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from harness.check.metrics import METRICS, Measure, measure_tables
from harness.check.sla import SlaConfig, SlaError, Threshold
from harness.check.stats import (
    bootstrap_quantile_interval,
    bootstrap_tail_p,
    holm,
    holm_threshold,
    is_boundary,
    judge_interval,
    judge_rate_exact,
    quantile_interval,
    rate_interval,
    rate_worse_p,
    shift_p,
)
from harness.errors import ResultsError
from harness.events import run_complete
from harness.results import RunTables, load_manifest, load_runs

Status = Literal["pass", "fail", "skipped", "error"]
Layer = Literal["run", "threshold", "regression", "change_point"]

REGRESSION_METRICS = ("delivery_p50_s", "delivery_p95_s", "acceptance_p95_s",
                      "within_sla_rate", "success_rate", "validity_rate", "burst_error_rate",
                      "refund_ok_rate", "oversold_rate", "hidden_fee_per_order")
"""The metrics compared with a baseline (fewer tests keep Holm's correction mild)."""

RUN_SUITE = "(run)"
"""The supplier name of checks about a run as a whole (interrupted, no orders)."""

OK, BREACH, BAD_INPUT, UNJUDGED = 0, 1, 2, 3


@dataclass
class CheckResult:
    """One check of one supplier; ``reason`` names its sentence (``check.reason.<reason>``
    in the language catalogues)."""

    supplier: str
    layer: Layer
    metric: str
    name: str
    status: Status
    reason: str
    value: float | None = None
    n: int = 0
    needs: int = 0
    interval: tuple[float, float] | None = None
    baseline: float | None = None
    baseline_n: int = 0
    p_value: float | None = None
    alpha: float | None = None
    margin: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckReport:
    """Everything ``check`` found; ``exit_code`` is what the command returns."""

    runs: list[str]
    baseline_runs: list[str]
    results: list[CheckResult]
    strict: bool = False
    history: str | None = None

    @property
    def suppliers(self) -> list[str]:
        """Suppliers in the order they first appear in the results."""
        return list(dict.fromkeys(r.supplier for r in self.results))

    def counts(self) -> dict[str, int]:
        """How many checks ended in each status."""
        out = {"pass": 0, "fail": 0, "skipped": 0, "error": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    @property
    def exit_code(self) -> int:
        """0 good, 1 breach or regression, 3 cannot be judged (see the module docstring)."""
        c = self.counts()
        judged = sum(r.status == "pass" and r.layer != "run" for r in self.results)
        if c["fail"]:
            return BREACH
        if c["error"] or not judged or (self.strict and c["skipped"]):
            return UNJUDGED
        return OK


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def judge_threshold(supplier: str, threshold: Threshold, measure: Measure | None
                    ) -> CheckResult:
    """Judge one threshold on one supplier's measure (see :mod:`harness.check.stats`)."""
    expr = threshold.expression
    spec = expr.spec
    needs = threshold.needs
    base = CheckResult(supplier, "threshold", expr.metric, str(expr), "skipped", "no_samples",
                       needs=needs)
    if measure is None or measure.n == 0:
        return base
    base.value, base.n = _finite(measure.value), measure.n
    if measure.n < needs:
        base.reason = "too_few"
        return base
    if spec.kind == "rate":
        base.interval = rate_interval(measure.k, measure.n)
        if is_boundary(expr.op, expr.value):
            decision = judge_rate_exact(measure.k, measure.n, expr.op, expr.value)
            base.detail["exact"] = True
        else:
            decision = judge_interval(*base.interval, expr.op, expr.value)
    elif spec.kind == "quantile":
        base.interval = quantile_interval(measure.samples, spec.quantile)
        decision = judge_interval(*base.interval, expr.op, expr.value)
    else:
        decision = "pass" if expr.holds(measure.value) else "breach"
    outcomes: dict[str, tuple[Status, str]] = {
        "pass": ("pass", "met"), "breach": ("fail", "breach"),
        "inconclusive": ("skipped", "inconclusive")}
    base.status, base.reason = outcomes[decision]
    return base


def regression_check(supplier: str, metric: str, old: Measure | None, new: Measure | None,
                sla: SlaConfig) -> CheckResult:
    spec = METRICS[metric]
    margin = sla.margin(metric)
    result = CheckResult(supplier, "regression", metric, f"{metric} vs baseline", "skipped",
                         "no_samples", needs=spec.min_samples, margin=margin)
    if old is None or new is None or old.n == 0 or new.n == 0:
        return result
    result.value, result.n = _finite(new.value), new.n
    result.baseline, result.baseline_n = _finite(old.value), old.n
    if min(old.n, new.n) < spec.min_samples:
        result.reason = "too_few"
        return result
    result.status, result.reason = "pass", "no_regression"
    if spec.test == "bootstrap":
        result.p_value = bootstrap_tail_p(old.samples, new.samples, spec.quantile, margin)
        result.interval = bootstrap_quantile_interval(new.samples, spec.quantile)
    elif spec.test == "mannwhitney":
        result.p_value = shift_p(old.samples, new.samples, margin)
        result.interval = bootstrap_quantile_interval(new.samples, spec.quantile)
    elif spec.test == "beta":
        result.p_value = rate_worse_p(old.k, old.n, new.k, new.n, margin,
                                      spec.higher_is_better)
        result.interval = rate_interval(new.k, new.n)
    elif spec.test == "exact":
        change = new.value - old.value
        worse = -change if spec.higher_is_better else change
        if worse > margin + 1e-12:
            result.status, result.reason = "fail", "regressed"
    return result


def _reachability(supplier: str, tables: RunTables) -> CheckResult | None:
    own = tables.orders[tables.orders["supplier"] == supplier]
    sent = own[own["state"] != "skipped"]
    result = CheckResult(supplier, "run", "orders_accepted", "supplier reachable", "pass",
                         "reachable", n=len(sent))
    if sent.empty:
        result.status, result.reason = "error", "no_orders"
        return result
    accepted = int(sent["accepted_at"].notna().sum())
    result.value = float(accepted)
    if accepted == 0:
        result.status, result.reason = "error", "unreachable"
        classes = sent["error_classes"].dropna().astype(str) if "error_classes" in sent \
            else pd.Series(dtype=str)
        result.detail["errors"] = ", ".join(sorted(set(classes) - {"-", ""}))[:200] or "-"
    return result


def sla_of_manifest(manifest: dict[str, Any]) -> SlaConfig | None:
    """The ``sla:`` section of the scenario a run recorded, if any."""
    section = (manifest.get("scenario") or {}).get("sla")
    if section is None:
        return None
    try:
        return SlaConfig.model_validate(section)
    except ValueError as exc:
        raise SlaError(f"the run's scenario has an invalid sla: section ({exc})",
                       path=str(manifest.get("run_id"))) from None


def _refund_deadline(manifest: dict[str, Any]) -> float:
    from harness.analysis import ranking_config_from_manifest

    return float(ranking_config_from_manifest(manifest).refund_deadline_s)


def _run_problems(run_dirs: Sequence[Path]) -> list[CheckResult]:
    problems = []
    for run_dir in run_dirs:
        manifest = load_manifest(run_dir)  # ResultsError (bad input) if not a run folder
        if manifest.get("failed"):
            problems.append(CheckResult(RUN_SUITE, "run", "run", run_dir.name, "error",
                                        "run_failed", detail={"why": str(manifest["failed"])}))
        elif not run_complete(run_dir):
            problems.append(CheckResult(RUN_SUITE, "run", "run", run_dir.name, "error",
                                        "interrupted"))
    return problems


def load_measures(run_dirs: Sequence[Path], *, allow_partial: bool = True
                  ) -> tuple[RunTables, dict[str, dict[str, Measure]]]:
    """Load runs and measure every supplier (the refund deadline from the first scenario)."""
    tables = load_runs(list(run_dirs), allow_partial=allow_partial)
    return tables, measure_tables(tables,
                                  refund_deadline_s=_refund_deadline(tables.manifests[0]))


def check_runs(run_dirs: Sequence[Path], *, sla: SlaConfig | None = None,
               baseline_dirs: Sequence[Path] = (), history_dir: Path | None = None,
               strict: bool = False) -> CheckReport:
    """Judge ``run_dirs`` (together, as one new run) on thresholds, against the baseline
    runs (or the last green run of ``history_dir``), and for change points over the history.

    ``sla`` defaults to the ``sla:`` of the first run's scenario. Raises
    :class:`~harness.errors.HarnessError` for bad input (no such run folder, an invalid SLA,
    nothing to check).
    """
    from harness.check import history as hist

    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ResultsError("no run folders given")
    report = CheckReport([d.name for d in dirs], [], [], strict=strict,
                         history=None if history_dir is None else str(history_dir))
    problems = _run_problems(dirs)
    if sla is None:
        sla = sla_of_manifest(load_manifest(dirs[0]))
    entries: list[hist.HistoryEntry] = []
    baseline = [Path(b) for b in baseline_dirs]
    if history_dir is not None:
        entries = hist.read_history(history_dir)
        if not baseline:
            green = hist.last_green(entries, exclude={d.name for d in dirs})
            baseline = [] if green is None else [green]
    if sla is None and not baseline and history_dir is None:
        raise SlaError("nothing to check: the run's scenario has no sla: section; give "
                       "--sla FILE, --baseline RUN or --history DIR")
    sla = sla if sla is not None else SlaConfig()
    report.results.extend(problems)
    if problems:  # an interrupted or failed run cannot be judged: say so and stop
        return report
    tables, measures = load_measures(dirs)
    if tables.orders.empty:
        report.results.append(CheckResult(RUN_SUITE, "run", "orders", dirs[0].name, "error",
                                          "no_orders"))
        return report
    old: dict[str, dict[str, Measure]] = {}
    if baseline:
        report.baseline_runs = [b.name for b in baseline]
        if not _run_problems(baseline):
            old = load_measures(baseline)[1]
        else:
            raise ResultsError(f"baseline {baseline[0]}: interrupted or failed; choose a "
                               "complete baseline run")
    for supplier in sla.suppliers:
        if supplier not in measures:
            report.results.append(CheckResult(supplier, "run", "orders", "supplier in the run",
                                              "skipped", "not_in_run"))
    regressions: list[CheckResult] = []
    for supplier, found in measures.items():
        reach = _reachability(supplier, tables)
        if reach is not None:
            report.results.append(reach)
            if reach.status == "error":
                continue
        for threshold in sla.thresholds_for(supplier):
            report.results.append(judge_threshold(supplier, threshold,
                                                  found.get(threshold.expression.metric)))
        if baseline:
            if supplier not in old:
                report.results.append(CheckResult(supplier, "regression", "orders",
                                                  "in the baseline", "skipped",
                                                  "not_in_baseline"))
                continue
            for metric in REGRESSION_METRICS:
                result = regression_check(supplier, metric, old[supplier].get(metric),
                                     found.get(metric), sla)
                regressions.append(result)
                report.results.append(result)
    apply_holm(regressions, sla.alpha)
    if history_dir is not None:
        report.results.extend(hist.change_point_checks(entries, dirs, measures,
                                                       baseline=report.baseline_runs))
        if not report.baseline_runs:
            report.results.append(CheckResult(RUN_SUITE, "regression", "baseline",
                                              "baseline", "skipped", "no_baseline"))
    return report


def apply_holm(results: list[CheckResult], alpha: float) -> None:
    tested = [r for r in results if r.p_value is not None and r.status == "pass"]
    p_values = [float(r.p_value) for r in tested if r.p_value is not None]
    for result, rejected in zip(tested, holm(p_values, alpha), strict=True):
        result.alpha = holm_threshold(p_values, tested.index(result), alpha)
        if rejected:
            result.status, result.reason = "fail", "regressed"
