"""Burst slot sizing (``concurrency_at``): enough slots that a supplier stalling for
``stall_cover_s`` makes no order start late, and never more than the bounds allow.

The worker's slot model, replayed in-process on the real schedule: a slot takes the next
arrival, waits until it is due (or starts late if it was busy: a slip), and is held until
the first POST is answered. The supplier answers in ``latency_s``, except that nothing is
answered during the stall: an answer due then comes when the stall ends (and a request
that arrived during it is answered ``latency_s`` after). ``tests/test_bench_smoke.py``
checks the same against a real burst and a real frozen supplier.
"""

from __future__ import annotations

import heapq
from pathlib import Path

from harness.demo import fleet_env
from harness.run.schedule import Schedule, build_schedule, concurrency_at, stall_cover_s
from harness.scenario import BurstPlan, Scenario, load_scenario
from harness.simulator.profiles import load_fleet

DATA = Path(__file__).parent / "data"


def _scenario(**burst: object) -> Scenario:
    """tests/data/burst-stall.yaml (one supplier, 40/s for 5 s) with ``burst`` changed."""
    env = fleet_env(load_fleet(DATA / "burst-fleet.yaml"), "http://127.0.0.1:1") \
        | {"TRIALBENCH_SIM_URL": "http://127.0.0.1:1"}
    scenario = load_scenario(DATA / "burst-stall.yaml", env)
    assert scenario.burst is not None
    plan = BurstPlan.model_validate({**scenario.burst.model_dump(), "stall_cover_s": 2.0,
                                     **burst})
    return scenario.model_copy(update={"burst": plan})


def _slips(schedule: Schedule, plan: BurstPlan, *, stall_at_s: float, stall_s: float,
           latency_s: float) -> list[float]:
    """Each order's start minus its intended start, s, over the slip warning."""
    free: list[float] = []  # when each slot is next free
    slips = []
    for arrival in schedule.arrivals:
        while len(free) < concurrency_at(schedule, plan, arrival.at_s, 1):
            heapq.heappush(free, 0.0)  # the shape only ever adds slots
        start = max(arrival.at_s, heapq.heappop(free))
        answer = start + latency_s
        if stall_at_s <= start < stall_at_s + stall_s:
            answer = stall_at_s + stall_s + latency_s
        elif stall_at_s <= answer < stall_at_s + stall_s:
            answer = stall_at_s + stall_s
        heapq.heappush(free, answer)
        if start - arrival.at_s > plan.slip_warning_ms / 1000:
            slips.append(start - arrival.at_s)
    return slips


def test_a_stall_of_the_configured_length_slips_no_order() -> None:
    """With the default stall cover (2 s), a 2 s stall mid-burst makes no order start late;
    with no stall cover (the old sizing) most orders due in the stall slip."""
    covered = _scenario()
    assert covered.burst is not None and covered.burst.stall_cover_s == 2.0
    schedule = build_schedule(covered)
    assert _slips(schedule, covered.burst, stall_at_s=1.5, stall_s=2.0, latency_s=0.05) == []
    old = _scenario(stall_cover_s=0)
    assert old.burst is not None
    slipped = _slips(schedule, old.burst, stall_at_s=1.5, stall_s=2.0, latency_s=0.05)
    assert len(slipped) > 40 and max(slipped) > 1.0


def test_the_issue_13_defaults_cover_a_2s_stall_at_250ms() -> None:
    """At the default expected latency (250 ms) and headroom (3), a supplier answering in
    250 ms that stalls for 2 s slips no order; the pre-issue sizing slipped dozens."""
    scenario = _scenario(expected_latency_ms=250, headroom=3)
    assert scenario.burst is not None
    schedule = build_schedule(scenario)
    assert _slips(schedule, scenario.burst, stall_at_s=2.0, stall_s=2.0, latency_s=0.25) == []
    old = _scenario(expected_latency_ms=250, headroom=3, stall_cover_s=0)
    assert old.burst is not None
    assert len(_slips(schedule, old.burst, stall_at_s=2.0, stall_s=2.0, latency_s=0.25)) > 20


def test_stall_cover_is_bounded_by_the_request_timeout_and_max_concurrency() -> None:
    """A stall cover past the request timeout counts as the timeout (a POST holds its slot
    no longer), and no rate or cover sizes past max_concurrency."""
    long = _scenario(stall_cover_s=120, request_timeout_s=4)
    at_timeout = _scenario(stall_cover_s=4, request_timeout_s=4)
    assert long.burst is not None and at_timeout.burst is not None
    assert stall_cover_s(long.burst) == 4
    schedule = build_schedule(long)
    assert concurrency_at(schedule, long.burst, 0, 1) == \
        concurrency_at(schedule, at_timeout.burst, 0, 1) == 165  # 40/s * 4.1 s + 1
    capped = _scenario(stall_cover_s=120, request_timeout_s=120, max_concurrency=300)
    assert capped.burst is not None
    assert concurrency_at(build_schedule(capped), capped.burst, 0, 2) == 300
