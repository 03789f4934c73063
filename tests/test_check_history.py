"""Change points over a history of runs, and the history index check keeps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.check.changepoints import change_points
from harness.check.history import load_trend, read_history
from harness.check.summary import trend_text


def write_validity_drop_index(folder: Path, *, red_after_drop: bool = False) -> None:
    """A history index of 20 runs of one supplier, acme, whose validity drops from about
    0.99 to 0.90 at run 12 (gold, then silver); with ``red_after_drop`` the runs from the
    drop on are recorded as failed checks."""
    rng = np.random.default_rng(5)
    with (folder / "index.jsonl").open("w") as handle:
        for i in range(20):
            validity = float(np.clip(rng.normal(0.99 if i < 12 else 0.90, 0.005), 0, 1))
            handle.write(json.dumps({
                "run_id": f"run-{i:02d}", "started_at": f"2026-11-{i + 1:02d}T00:00:00Z",
                "status": "red" if red_after_drop and i >= 12 else "green", "path": None,
                "suppliers": {"acme": {"tier": "gold" if i < 12 else "silver",
                                       "validity_rate": validity, "validity_rate_n": 200}}})
                         + "\n")


def test_step_is_found_within_two_runs_and_flat_history_raises_nothing() -> None:
    """A step of 3 standard deviations put at run 15 of 30 is found within two runs of it in
    at least 19 of 20 series; 20 flat series give at most one change point in all."""
    rng = np.random.default_rng(21)
    found = false = 0
    for _ in range(20):
        step = rng.normal(1.0, 0.1, 30)
        step[15:] += 0.3
        found += any(abs(cp.index - 15) <= 2 for cp in change_points(step))
        false += len(change_points(rng.normal(1.0, 0.1, 30)))
    assert found >= 19
    assert false <= 1


def test_history_index_gives_trend_and_change_points(tmp_path: Path) -> None:
    """An index with a supplier whose validity drops at run 12 yields a trend table and a
    worsening change point there, which ``trialbench history`` prints."""
    write_validity_drop_index(tmp_path)
    assert len(read_history(tmp_path)) == 20
    trend = load_trend(tmp_path)
    assert list(trend.table["tier"][:2]) == ["gold", "gold"]
    (change,) = trend.changes
    assert (change.supplier, change.metric, change.worse) == ("acme", "validity_rate", True)
    assert abs(change.index - 12) <= 2
    assert "validity_rate at run run-1" in trend_text(trend, str(tmp_path))
