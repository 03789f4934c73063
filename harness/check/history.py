"""The history of runs: an index that ``check`` keeps, trends and change points.

A history is a folder holding run folders (at any depth up to two: ``DIR/<run>`` or
``DIR/runs/<run>``) and/or ``index.jsonl``, which ``trialbench check --history DIR``
appends to after every check: one JSON line per checked run with its start time, its
verdict (``green`` exit 0, ``red`` exit 1, ``unjudged`` exit 3), the tier of each supplier
and every metric's point value and sample size. The index alone is enough for trends and
change points, so CI can keep it as a small artifact; regressions against the last green
run also need that run's folder, resolved relative to ``DIR`` (see docs/github-actions.yml).
Run folders in ``DIR`` that the index does not name count as green (you put them there).

:func:`load_trend` is the entry point for reports: the trend as a DataFrame plus the
change points found, plain data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.check.changepoints import change_points
from harness.check.metrics import KEY_METRICS, METRICS, Measure
from harness.errors import ResultsError

INDEX = "index.jsonl"

TREND_COLUMNS: dict[str, str] = {
    "run_id": "run folder name",
    "started_at": "when the run started (UTC, ISO 8601)",
    "status": "green (check passed), red (breach or regression), unjudged, or "
              "unchecked (a run folder the index does not name)",
    "supplier": "supplier name",
    "tier": "the ranking's tier for the supplier in that run (empty if not ranked)",
    **{m: f"{METRICS[m].description} ({METRICS[m].unit}); NaN if not measured"
       for m in KEY_METRICS},
}
"""The trend table of :func:`load_trend`, column by column."""


@dataclass
class HistoryEntry:
    """One run in a history."""

    run_id: str
    started_at: str
    status: str
    suppliers: dict[str, dict[str, Any]]
    """``{supplier: {"tier": str, metric: value, metric + "_n": n}}``."""
    path: Path | None = None


@dataclass(frozen=True)
class TrendChange:
    """A change point in one supplier's metric over the history."""

    supplier: str
    metric: str
    run_id: str
    index: int
    before: float
    after: float
    p_value: float
    worse: bool


@dataclass
class Trend:
    """A history as plain data: the table (:data:`TREND_COLUMNS`) and its change points."""

    table: pd.DataFrame
    changes: list[TrendChange] = field(default_factory=list)


def _value(x: float) -> float | None:
    return x if math.isfinite(x) else None


def entry_values(measures: dict[str, dict[str, Measure]], tiers: dict[str, str]
                 ) -> dict[str, dict[str, Any]]:
    """The per-supplier part of an index line."""
    out: dict[str, dict[str, Any]] = {}
    for supplier, found in measures.items():
        row: dict[str, Any] = {"tier": tiers.get(supplier, "")}
        for metric, m in found.items():
            # a percentile from too few orders is not a percentile: not shown, not followed
            enough = m.n >= METRICS[metric].min_samples if METRICS[metric].kind == "quantile" \
                else m.n > 0
            row[metric] = _value(m.value) if enough else None
            row[f"{metric}_n"] = m.n
        out[supplier] = row
    return out


def tiers_of(run_dirs: Sequence[Path]) -> dict[str, str]:
    """Each supplier's tier from ranking the runs; empty if they cannot be ranked."""
    from harness.analysis import analyse_runs
    from harness.errors import HarnessError

    try:
        ranking = analyse_runs(list(run_dirs), allow_partial=True).ranking
    except (HarnessError, ValueError, KeyError):
        return {}
    return {str(s): str(t) for s, t in zip(ranking.table["supplier"], ranking.table["tier"],
                                           strict=True)}


def _from_run(run_dir: Path, status: str) -> HistoryEntry:
    from harness.check.evaluate import load_measures
    from harness.results import load_manifest

    manifest = load_manifest(run_dir)
    _, measures = load_measures([run_dir])
    return HistoryEntry(run_dir.name, str(manifest.get("started_at", "")), status,
                        entry_values(measures, tiers_of([run_dir])), run_dir)


def read_history(folder: Path) -> list[HistoryEntry]:
    """Every run of a history, oldest first (index lines, then unindexed run folders)."""
    if not folder.is_dir():
        raise ResultsError(f"{folder}: no such history folder; create it (an empty folder "
                           "is an empty history)")
    entries: dict[str, HistoryEntry] = {}
    index = folder / INDEX
    if index.is_file():
        for number, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                path = Path(data["path"]) if data.get("path") else None
                if path is not None and not path.is_absolute():
                    path = folder / path
                entries[data["run_id"]] = HistoryEntry(
                    str(data["run_id"]), str(data.get("started_at", "")),
                    str(data.get("status", "unjudged")), dict(data.get("suppliers", {})),
                    path)
            except (ValueError, KeyError, TypeError) as exc:
                raise ResultsError(f"{index}:{number}: not an index line ({exc}); remove the "
                                   "line or the file (check rebuilds it)") from None
    runs = [p.parent for p in (*folder.glob("*/manifest.json"), *folder.glob("*/*/manifest.json"))]
    for run_dir in sorted(runs):
        if run_dir.name not in entries:
            entries[run_dir.name] = _from_run(run_dir, "unchecked")
        elif entries[run_dir.name].path is None or not entries[run_dir.name].path.exists():  # type: ignore[union-attr]
            entries[run_dir.name].path = run_dir
    return sorted(entries.values(), key=lambda e: (e.started_at, e.run_id))


def last_green(entries: Sequence[HistoryEntry], exclude: set[str] = frozenset()  # type: ignore[assignment]
               ) -> Path | None:
    """The newest green (or unchecked) run whose folder is present."""
    for entry in reversed(entries):
        if entry.run_id in exclude or entry.status not in ("green", "unchecked"):
            continue
        if entry.path is not None and (entry.path / "manifest.json").is_file():
            return entry.path
    return None


def record(folder: Path, run_dirs: Sequence[Path], measures: dict[str, dict[str, Measure]],
           exit_code: int) -> None:
    """Append the checked run to ``folder/index.jsonl`` (a line per ``check``)."""
    from harness.results import load_manifest

    status = {0: "green", 1: "red"}.get(exit_code, "unjudged")
    first = run_dirs[0]
    try:
        path = str(first.resolve().relative_to(folder.resolve()))
    except ValueError:
        path = str(first.resolve())
    line = {"run_id": "+".join(d.name for d in run_dirs),
            "started_at": str(load_manifest(first).get("started_at", "")),
            "status": status, "path": path,
            "suppliers": entry_values(measures, tiers_of(run_dirs))}
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / INDEX).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def series_changes(entries: Sequence[HistoryEntry], metrics: Sequence[str] = KEY_METRICS
                   ) -> list[TrendChange]:
    """Change points of every supplier's key metrics over ``entries`` (in their order).

    A change is kept only when the levels differ by at least the metric's regression margin
    (relative for percentiles), so noise well inside the SLA's tolerance is not reported.
    """
    from harness.check.sla import SlaConfig

    margins = SlaConfig()
    suppliers = sorted({s for e in entries for s in e.suppliers})
    out: list[TrendChange] = []
    for supplier in suppliers:
        for metric in metrics:
            spec = METRICS[metric]
            values = [float(v) if (v := e.suppliers.get(supplier, {}).get(metric)) is not None
                      else float("nan") for e in entries]
            for cp in change_points(values, min_magnitude=margins.margin(metric),
                                    relative=spec.kind == "quantile"):
                up = cp.mean_after > cp.mean_before
                out.append(TrendChange(supplier, metric, entries[cp.index].run_id, cp.index,
                                       cp.mean_before, cp.mean_after, cp.p_value,
                                       worse=up != spec.higher_is_better))
    return out


def change_point_checks(entries: Sequence[HistoryEntry], run_dirs: Sequence[Path],
                        measures: dict[str, dict[str, Measure]], *, baseline: Sequence[str]
                        ) -> list[Any]:
    """One check per supplier: fails on a worsening change point after the baseline run
    (the last green one), over the history with the new run appended."""
    from harness.check.evaluate import CheckResult

    names = {d.name for d in run_dirs}
    series = [e for e in entries if e.run_id not in names and
              e.run_id != "+".join(sorted(names))]
    series.append(HistoryEntry("+".join(d.name for d in run_dirs), "~", "new",
                               entry_values(measures, {})))
    base_at = max((i for i, e in enumerate(series) if e.run_id in baseline), default=-1)
    changes = series_changes(series)
    results = []
    for supplier in measures:
        own = [c for c in changes if c.supplier == supplier]
        bad = [c for c in own if c.worse and c.index > base_at]
        result = CheckResult(supplier, "change_point", ",".join(sorted({c.metric for c in bad}))
                             or "history", "change points over the history",
                             "fail" if bad else "pass",
                             "change_point" if bad else "no_change_point", n=len(series))
        result.detail["changes"] = [
            f"{c.metric} at {c.run_id}: {c.before:.4g} → {c.after:.4g} (p={c.p_value:.2g})"
            for c in (bad or own)]
        if len(series) < 6:
            result.status, result.reason = "skipped", "short_history"
        results.append(result)
    return results


def load_trend(folder: Path) -> Trend:
    """Each supplier's trend over the history in ``folder`` (tier, key metrics) and the
    change points found: the data ``trialbench history`` prints and a report can show."""
    entries = read_history(folder)
    rows = []
    for entry in entries:
        for supplier, values in entry.suppliers.items():
            rows.append({"run_id": entry.run_id, "started_at": entry.started_at,
                         "status": entry.status, "supplier": supplier,
                         "tier": values.get("tier", ""),
                         **{m: values.get(m) if values.get(m) is not None else float("nan")
                            for m in KEY_METRICS}})
    table = pd.DataFrame(rows, columns=list(TREND_COLUMNS))
    return Trend(table, series_changes(entries))
