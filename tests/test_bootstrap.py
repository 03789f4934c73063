"""The vectorised bootstraps of the ranking give what the per-draw loops gave."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.ranking import _cost_draws, _p95_of_block_draws


def test_block_p95_equals_the_percentile_of_each_concatenated_draw() -> None:
    """Every draw's p95 equals np.percentile of the blocks it picked, concatenated."""
    rng = np.random.default_rng(5)
    blocks = [rng.lognormal(3, 1, int(rng.integers(1, 40))).round(1) for _ in range(30)]
    picks = rng.integers(0, len(blocks), (300, len(blocks)))
    looped = np.array([np.percentile(np.concatenate([blocks[i] for i in row]), 95)
                       for row in picks])
    assert np.array_equal(_p95_of_block_draws(blocks, picks), looped)


def test_cost_bootstrap_by_distinct_orders_matches_the_index_gather() -> None:
    """Drawing counts of distinct orders (multinomial) gives the same bootstrap
    distribution of the cost rate as resampling order indices: same mean and spread."""
    n = 2000
    sold = pd.DataFrame({"sale_price": np.where(np.arange(n) % 3 == 0, 10.5, 21.0),
                         "quantity": 1, "state": "success", "codes_delivered": 1,
                         "amount": np.where(np.arange(n) % 3 == 0, 9.5, 19.0)})
    sold.loc[::7, "amount"] = 0.0
    fast = _cost_draws(np.random.default_rng(1), sold, {}, float("nan"), 4000)
    revenue = sold["sale_price"].to_numpy()
    spend = sold["amount"].to_numpy()
    idx = np.random.default_rng(2).integers(0, n, (4000, n))
    slow = spend[idx].sum(axis=1) / revenue[idx].sum(axis=1)
    assert abs(fast.mean() - slow.mean()) < 3 * slow.std() / np.sqrt(4000) * 2
    assert 0.9 < fast.std() / slow.std() < 1.1
