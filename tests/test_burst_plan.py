"""``burst --dry-run``: the schedule and its worst-case cost, printed from the scenario
alone (pure arithmetic: no Locust, nothing sent)."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

from harness.demo import fleet_env
from harness.run.schedule import burst_worst_case_cost, print_burst_plan
from harness.scenario import Scenario, load_scenario
from harness.simulator.profiles import load_fleet

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def _scenario(path: Path, fleet: Path) -> Scenario:
    """``path`` with fake credentials for ``fleet`` and an unreachable base URL."""
    return load_scenario(path, fleet_env(load_fleet(fleet), "http://127.0.0.1:1")
                         | {"TRIALBENCH_SIM_URL": "http://127.0.0.1:1"})


def test_plan_prints_phases_split_and_worst_case() -> None:
    """The test burst's plan shows each phase with its order count, each supplier's
    share, and a worst case of every order at face value (540 × 10.00)."""
    scenario = _scenario(DATA / "burst-scenario.yaml", DATA / "burst-fleet.yaml")
    out = io.StringIO()
    print_burst_plan(scenario, out)
    text = out.getvalue()
    assert "540 orders × 1 over 6 s, peak 160/s" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    assert rows["low"][-1] == "40" and rows["ramp"][-1] == "180" and rows["peak"][-1] == "320"
    for name in ("healthy", "tiny", "slow", "oversell"):
        assert rows[name][1:4] == ["135", "25%", "1350.00"]
    assert "worst-case cost: 5400.00;" in text and "nothing was sent" in text


def test_worst_case_never_exceeds_the_cap(tmp_path: Path) -> None:
    """holiday-peak's schedule with a cap of 100,000 would cost more than its cap: the
    worst case is the cap, and the plan says what the schedule would have cost."""
    text = (ROOT / "scenarios" / "holiday-peak.yaml").read_text(encoding="utf-8")
    capped = tmp_path / "holiday-peak.yaml"
    capped.write_text(text.replace("spending_cap: 125000", "spending_cap: 100000"),
                      encoding="utf-8")
    scenario = _scenario(capped, ROOT / "scenarios" / "fleet-demo.yaml")
    assert scenario.burst is not None and scenario.burst.spending_cap == 100000
    worst, per_supplier = burst_worst_case_cost(scenario)
    assert worst == scenario.burst.spending_cap < sum(per_supplier.values(), Decimal(0))
    out = io.StringIO()
    print_burst_plan(scenario, out)
    assert f"worst-case cost: {scenario.burst.spending_cap} (the cap;" in out.getvalue()

