"""The spending cap holds at its edge: hidden fees counted, shared fairly, never passed.

Unit tests drive :class:`~harness.run.budget.Budget` directly; the trials run in this
process against the simulator on 127.0.0.1, and what was really spent comes from its
ground truth (``/_sim/truth``), which the harness never reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from harness.demo import DEMO_FLEET, fleet_env
from harness.results import load_runs
from harness.run.budget import Budget, Budgets, fair_share
from harness.run.trial import run_trial
from harness.simulator.process import SimulatorProcess, start_simulator
from harness.simulator.profiles import load_fleet

SUPPLIER = {
    "feeder": "netflix-1m, kind: card, face_value: \"65.00\", sale_price: \"64.00\"",
    "acme": "psn-50, kind: card, face_value: \"50.00\", sale_price: \"49.50\"",
}
"""feeder sells netflix-1m at 62.00 and takes an undisclosed 1.50 per order; acme sells
psn-50 at 48.80, with no fee, and answers faster (scenarios/fleet-demo.yaml)."""


def scenario(tmp_path: Path, cap: str, suppliers: tuple[str, ...]) -> Path:
    lines = ["name: cap-edge", "seed: 3", "suppliers:"]
    for name in suppliers:
        up = name.upper()
        lines += [f"  - name: {name}",
                  f"    base_url: ${{TRIALBENCH_SIM_URL}}/suppliers/{name}",
                  f"    credentials: {{api_key: \"${{TRIALBENCH_DEMO_{up}_API_KEY}}\", "
                  f"secret: \"${{TRIALBENCH_DEMO_{up}_SECRET}}\"}}",
                  f"    products: [{{sku: {SUPPLIER[name]}}}]"]
    lines += ["trial:", "  orders_per_supplier: 6", "  concurrency: 1", "  deadline_s: 3",
              "  delivery: poll", "  request_timeout_s: 2", "  unknown_outcome_window_s: 2",
              "  poll: {initial_interval_s: 0.1, max_interval_s: 0.5, backoff_factor: 1.5}",
              "  after_sales: {refund_unused: 0, refund_bad_codes: false, "
              "refund_follow_s: 1}",
              "  redeem_sample: 0", f"  spending_cap: {cap}"]
    path = tmp_path / f"cap-{cap}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def demo_sim() -> Iterator[tuple[SimulatorProcess, dict[str, str]]]:
    fleet = load_fleet(DEMO_FLEET)
    with start_simulator(DEMO_FLEET, seed=5) as sim:
        yield sim, fleet_env(fleet, sim.url)


def spent(sim: SimulatorProcess, name: str) -> Decimal:
    truth = sim.truth()["suppliers"][name]
    return Decimal(truth["initial_balance"]) - Decimal(truth["balance"])


def test_budget_allows_the_cap_exactly_and_not_a_cent_more() -> None:
    """A reservation that reaches the cap exactly is allowed; one cent more is refused."""
    budget = Budget(Decimal("20.00"))
    assert budget.reserve(Decimal("10.00")) == Decimal("10.00")
    assert budget.reserve(Decimal("10.01")) is None
    assert budget.reserve(Decimal("10.00")) == Decimal("10.00")
    assert budget.reserve(Decimal("0.01")) is None and budget.spent == Decimal("20.00")


@pytest.mark.parametrize("amount", ["-1", "NaN", "Infinity", "-Infinity"])
def test_budget_refuses_amounts_that_are_not_sane(amount: str) -> None:
    """Negative or non-finite money never reserves (nor lowers what is committed)."""
    budget = Budget(Decimal("20.00"))
    assert budget.reserve(Decimal(amount)) is None and budget.committed == 0


def test_hidden_fees_seen_in_the_balance_count_against_the_cap() -> None:
    """A balance that fell more than the orders explain makes the difference a fee,
    counted for the orders settled and reserved with every later one."""
    budget = Budget(Decimal("190.49"))
    for _ in range(2):
        reserved = budget.reserve(Decimal("62.00"))
        assert reserved is not None
        budget.settle(reserved, Decimal("62.00"))
    budget.observe(Decimal("127.00"))  # two orders and two fees of 1.50
    assert budget.fees == Decimal("3.00") and budget.fee_per_order == Decimal("1.50")
    assert budget.reserve(Decimal("62.00")) is None  # 124 + 3 + 63.50 > 190.49
    budget.cap = Decimal("190.50")
    assert budget.reserve(Decimal("62.00")) == Decimal("63.50")


def test_held_money_is_counted_past_the_cap() -> None:
    """An order a resumed log says was sent is counted even when the cap is spent."""
    budget = Budget(Decimal("5.00"))
    assert budget.reserve(Decimal("10.00"), held=True) == Decimal("10.00")
    assert budget.reserve(Decimal("1.00")) is None


def test_fair_share_rounds_down_to_the_cent() -> None:
    """Each supplier's share of the cap is equal and their sum never passes the cap."""
    assert fair_share(Decimal("100.00"), 3) == Decimal("33.33")
    assert fair_share(Decimal("100.00"), 1) == Decimal("100.00")


def test_burst_shares_follow_each_suppliers_scheduled_worst_case() -> None:
    """A worker's part of the cap is split by what it will place at each supplier, in
    cents rounded down, so the parts never sum past it and none can take another's."""
    budgets = Budgets(Decimal("100.00"), ["a", "b", "c"],
                      {"a": Decimal("300"), "b": Decimal("100"), "c": Decimal(0)})
    assert {n: b.cap for n, b in budgets.parts.items()} == {
        "a": Decimal("75.00"), "b": Decimal("25.00"), "c": Decimal("0.00")}
    assert Budgets(Decimal("10.00"), ["a", "b", "c"]).cap == Decimal("9.99")
    assert budgets.of("a").reserve(Decimal("75.01")) is None


@pytest.mark.parametrize(("cap", "orders"), [("190.50", 3), ("190.49", 2)])
def test_trial_at_the_cap_edge_never_spends_past_it_hidden_fees_included(
        cap: str, orders: int, tmp_path: Path,
        demo_sim: tuple[SimulatorProcess, dict[str, str]]) -> None:
    """Against a supplier with an undisclosed 1.50 fee, a cap of exactly three orders
    with their fees buys three, and one cent less buys two: what the supplier took
    (its own books) never passes the cap."""
    sim, env = demo_sim
    run_dir = run_trial(scenario(tmp_path, cap, ("feeder",)), results_root=tmp_path / "r",
                        env=env, show_progress=False)
    orders_table = load_runs([run_dir]).orders
    assert (orders_table["state"] == "success").sum() == orders
    assert (orders_table["state"] == "skipped").sum() == 6 - orders
    assert spent(sim, "feeder") <= Decimal(cap)
    assert spent(sim, "feeder") == orders * Decimal("63.50")


def test_cap_is_shared_fairly_so_a_fast_supplier_cannot_take_a_slow_ones_budget(
        tmp_path: Path, demo_sim: tuple[SimulatorProcess, dict[str, str]]) -> None:
    """With a cap of 381.00 for two suppliers, each gets 190.50: the faster one buys
    three orders (not the four its speed would take) and the slower one still buys its
    three, fee included, each within its share."""
    sim, env = demo_sim
    run_dir = run_trial(scenario(tmp_path, "381.00", ("acme", "feeder")),
                        results_root=tmp_path / "r", env=env, show_progress=False)
    orders_table = load_runs([run_dir]).orders
    bought = orders_table[orders_table["state"] == "success"].groupby("supplier").size()
    assert bought.to_dict() == {"acme": 3, "feeder": 3}
    assert spent(sim, "acme") <= Decimal("190.50") and spent(sim, "feeder") <= Decimal("190.50")
