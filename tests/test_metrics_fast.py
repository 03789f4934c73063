"""The one-pass metrics (rows picked per supplier by one groupby, row masks computed once,
the metrics table computed once per analysis) give what per-supplier filtering gives."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.metrics import rows_by_supplier, supplier_metrics, text
from harness.ranking import rank_suppliers
from harness.ranking_config import RankingConfig
from harness.results import RunTables, load_runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from synth_run import write_run  # bench/ is not a package


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> RunTables:
    """A 3,000-order synthetic burst of 4 suppliers, read back as trialbench reads runs,
    rows shuffled, some skipped, reconciled, out of stock or without a supplier."""
    run = write_run(tmp_path_factory.mktemp("fast") / "run", 3000, 4, 2)
    loaded = load_runs([run])
    orders = loaded.orders.sample(frac=1.0, random_state=3)
    orders.index = orders.index * 7 + 11  # not a range index
    state, supplier = orders["state"].copy(), orders["supplier"].copy()
    state.iloc[::41] = "skipped"
    state.iloc[7::89] = "failed"
    orders["state"] = state
    orders.loc[orders.index[::53], "resolution"] = "reconciled"
    orders.loc[orders.index[5::67], "mode"] = "trial"
    orders.loc[orders.index[7::89], "failure_reason"] = "Out of STOCK"
    supplier.iloc[::97] = np.nan
    orders["supplier"] = supplier
    loaded.orders = orders
    return loaded


def test_text_fast_path_matches_object_path() -> None:
    """text() of a str column equals the round trip through Python objects."""
    column = pd.Series(["a", None, "b", np.nan, ""], dtype="str")
    fast = text(column)
    slow = column.astype(object).where(column.notna(), "").astype(str)
    pd.testing.assert_series_equal(fast, slow, check_exact=True)


def test_rows_by_supplier_is_boolean_filtering(tables: RunTables) -> None:
    """rows_by_supplier gives each supplier's rows, order and index as a boolean filter does."""
    orders = tables.orders
    rows = rows_by_supplier(orders)
    for name in [*sorted(orders["supplier"].dropna().unique()), "nobody"]:
        pd.testing.assert_frame_equal(rows(str(name)), orders[orders["supplier"] == name],
                                      check_exact=True)


def test_metrics_of_all_equal_metrics_of_each(tables: RunTables) -> None:
    """Each supplier's metrics row is the same computed with every supplier or alone."""
    whole = supplier_metrics(tables.orders, tables.codes, tables.refunds, tables.suppliers)
    assert len(whole) == 4 and whole["oversold_k"].sum() > 0
    assert whole["orders_skipped"].sum() > 0
    for i, name in enumerate(whole["supplier"]):
        alone = supplier_metrics(*(frame[frame["supplier"] == name] for frame in (
            tables.orders, tables.codes, tables.refunds, tables.suppliers)))
        pd.testing.assert_frame_equal(whole.iloc[[i]].reset_index(drop=True), alone,
                                      check_exact=True)


def test_ranking_with_given_metrics_is_the_same(tables: RunTables) -> None:
    """rank_suppliers with the metrics handed in ranks exactly as when it computes them."""
    config = RankingConfig(draws=100)
    frames = (tables.orders, tables.codes, tables.refunds, tables.suppliers)
    own = rank_suppliers(*frames, config=config)
    given = rank_suppliers(*frames, config=config, metrics=supplier_metrics(
        *frames, refund_deadline_s=config.refund_deadline_s))
    pd.testing.assert_frame_equal(own.table, given.table, check_exact=True)
    pd.testing.assert_frame_equal(own.scores, given.scores, check_exact=True)
    pd.testing.assert_frame_equal(own.findings, given.findings, check_exact=True)
