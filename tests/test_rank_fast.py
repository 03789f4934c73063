"""Issue 13, rank/report at 1M orders: the shortcuts they take give the old answers."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from harness.events import COMPLETE_STAMP, run_complete
from harness.metrics import jeffreys, rate_intervals
from harness.results import read_table


def _log(path: Path, *events: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")


def test_run_complete_stamp_follows_the_log(tmp_path: Path) -> None:
    """The kept answer is reused only while the shards are unchanged: an interrupted run
    stays incomplete, a resume that finishes makes it complete, a stale stamp is ignored."""
    run = tmp_path / "run"
    run.mkdir()
    _log(run / "events.jsonl", {"t": 1.0, "type": "burst_started"})
    _log(run / "events-w0.jsonl", {"t": 2.0, "type": "order_planned"})
    assert run_complete(run) is False
    assert json.loads((run / COMPLETE_STAMP).read_text())["complete"] is False
    assert run_complete(run) is False  # from the stamp
    _log(run / "events.jsonl", {"t": 3.0, "type": "burst_finished", "interrupted": True})
    assert run_complete(run) is False  # interrupted finish: still incomplete
    _log(run / "events-resume-1.jsonl", {"t": 4.0, "type": "run_resumed"})
    assert run_complete(run) is False
    _log(run / "events-resume-1.jsonl", {"t": 5.0, "type": "resume_finished"})
    assert run_complete(run) is True
    assert run_complete(run) is True  # from the stamp
    (run / "events-resume-1.jsonl").unlink()  # the finish gone: the stamp no longer holds
    assert run_complete(run) is False
    stamp = json.loads((run / COMPLETE_STAMP).read_text())
    (run / COMPLETE_STAMP).write_text(json.dumps({**stamp, "complete": True,
                                                  "shards": {"events.jsonl": [1, 2, 3]}}))
    assert run_complete(run) is False  # a stamp for other shards is not believed
    (run / COMPLETE_STAMP).write_text("{torn")
    assert run_complete(run) is False


def test_read_table_decimals_equal_the_text_path(tmp_path: Path) -> None:
    """Decimal money read back as floats is bit for bit what decimal -> text -> float64
    gives, for small and huge unscaled values, negatives, nulls and several chunks."""
    rng = np.random.default_rng(13)
    for scale in (2, 5, 8):
        ints = [int(v) for v in rng.integers(-(10**12), 10**12, 3000)]
        ints += [2**53, 2**53 + 1, -(2**53) - 1, 2**63 + 7, -(2**70), 10**30, 0, -1, 1]
        values = [None if i % 97 == 0 else Decimal(v).scaleb(-scale)
                  for i, v in enumerate(ints)]
        column = pa.array(values, pa.decimal128(38, scale))
        path = tmp_path / f"t{scale}.parquet"
        pq.write_table(pa.table({"money": column, "n": pa.array(range(len(values)))}), path,
                       row_group_size=700)
        frame = read_table(path)
        by_text = pq.read_table(path).column("money").cast(pa.string()).cast(pa.float64())
        expected = by_text.to_pandas().to_numpy()
        got = frame["money"].to_numpy()
        assert frame["money"].dtype == np.float64
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        assert np.array_equal(got.view(np.int64)[~np.isnan(got)],
                              expected.view(np.int64)[~np.isnan(expected)])


def test_intervals_equal_scipy_stats() -> None:
    """Jeffreys bounds and the Wilson z computed without scipy.stats are the same floats
    scipy.stats.beta.ppf and norm.ppf give."""
    for level in (0.9, 0.95, 0.99):
        alpha = (1 - level) / 2
        for n in (*range(1, 60), 999, 12_345, 1_000_000):
            for k in {1, n // 3, n // 2, n - 1}:
                if not 0 < k < n:
                    continue
                assert jeffreys(k, n, level) == (
                    float(stats.beta.ppf(alpha, k + 0.5, n - k + 0.5)),
                    float(stats.beta.ppf(1 - alpha, k + 0.5, n - k + 0.5)))
    import pandas as pd

    counts = pd.DataFrame({"sla_share_k": [3, 50], "sla_share_n": [10, 60]})
    z = float(stats.norm.ppf(0.975))
    wilson = rate_intervals(counts, method="wilson")
    from harness.metrics import wilson as wilson_interval

    assert list(wilson["sla_share_lo"]) == [wilson_interval(3, 10, z)[0],
                                            wilson_interval(50, 60, z)[0]]


def test_distinct_pairs_equal_row_unique() -> None:
    """The cost bootstrap's distinct (revenue, spend) pairs and counts are np.unique's
    over rows, with repeats, infinities, and (by its fallback) NaN and negative zero."""
    from harness.ranking import _distinct_pairs

    rng = np.random.default_rng(7)
    x = rng.choice([0.0, 10.5, 21.0, 31.5, np.inf], 5000)
    y = x * 1.02 + rng.choice([0.1, 0.2, 3.0], 5000)
    for a, b in ((x, y), (y, x), (np.append(x, np.nan), np.append(y, 1.0)),
                 (np.append(x, -0.0), np.append(y, 0.0)), (x[:0], y[:0])):
        rows, counts = _distinct_pairs(a, b)
        want_rows, want_counts = np.unique(np.column_stack([a, b]), axis=0, return_counts=True)
        assert np.array_equal(rows, want_rows, equal_nan=True)
        assert np.array_equal(counts, want_counts)
