"""The burst's arrival schedule: pure arithmetic on the scenario, no I/O, no Locust.

Every worker computes the same full schedule from the scenario and takes its own share
(the ``j``-th arrival of each supplier belongs to worker ``j % N``, so every worker
sends to every supplier), and N workers together issue exactly the schedule, with no
coordination beyond a shared start time ``t0``.

- Arrival times: the rate ``r(t)`` is piecewise linear over the phases; its integral
  ``Λ(t)`` counts the orders due by ``t``; arrival ``j`` is due when ``Λ(t) = j + ½``.
  So a constant 10/s phase puts orders at 0.05 s, 0.15 s, ... and a ramp spaces them
  ever closer, evenly in expectation (the Artillery/k6 ``arrival-rate`` behaviour,
  minus the randomness).
- Supplier of each arrival: smooth weighted round robin over the plan's weights, so
  every supplier's share is exact at any instant, interleaved evenly.
- Product: drawn from the plan's product mix with ``random.Random(f"{seed}:burst:{name}")``.

A notebook or a test can import this module freely (it never imports Locust).
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import TextIO

from harness.scenario import BurstPlan, Scenario

CONCURRENCY_LOOKAHEAD_S = 5.0
"""Concurrency is sized for the highest rate due within this many seconds."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One phase on the clock: rate goes linearly from ``start_rate`` to ``end_rate``."""

    name: str
    kind: str
    start_s: float
    duration_s: float
    start_rate: float
    end_rate: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def rate_at(self, t: float) -> float:
        """The rate at ``t`` seconds after ``t0`` (inside this segment), per second."""
        frac = min(1.0, max(0.0, (t - self.start_s) / self.duration_s))
        return self.start_rate + (self.end_rate - self.start_rate) * frac

    @property
    def orders(self) -> float:
        """Expected arrivals in this segment (the integral of the rate)."""
        return (self.start_rate + self.end_rate) / 2 * self.duration_s


@dataclass(frozen=True, slots=True)
class Arrival:
    """One scheduled order: due ``at_s`` seconds after ``t0``."""

    index: int
    at_s: float
    supplier: str
    sku: str
    phase: str
    seq: int
    """The arrival's number among its supplier's arrivals (0, 1, ...)."""


@dataclass(frozen=True)
class Schedule:
    """The whole burst: its segments and every arrival, in time order."""

    segments: tuple[Segment, ...]
    arrivals: tuple[Arrival, ...]
    suppliers: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return self.segments[-1].end_s if self.segments else 0.0

    def share(self, index: int, count: int) -> list[Arrival]:
        """Worker ``index`` of ``count``: each supplier's arrivals ``j`` with
        ``j % count == index``."""
        if not 0 <= index < count:
            raise ValueError(f"worker index {index} is not in 0..{count - 1}")
        return [a for a in self.arrivals if a.seq % count == index]

    def rate_at(self, t: float) -> float:
        """Total scheduled arrival rate at ``t`` seconds after ``t0``, per second."""
        for segment in self.segments:
            if segment.start_s <= t < segment.end_s:
                return segment.rate_at(t)
        return 0.0

    def phase_at(self, t: float) -> str:
        """Name of the phase running ``t`` seconds after ``t0`` ("" outside)."""
        for segment in self.segments:
            if segment.start_s <= t < segment.end_s:
                return segment.name
        return ""

    def peak_rate(self, start_s: float, end_s: float) -> float:
        """Highest scheduled rate between ``start_s`` and ``end_s``, per second."""
        best = 0.0
        for segment in self.segments:
            if segment.end_s <= start_s or segment.start_s >= end_s:
                continue
            lo, hi = max(start_s, segment.start_s), min(end_s, segment.end_s)
            best = max(best, segment.rate_at(lo), segment.rate_at(hi - 1e-9))
        return best

    def due_by(self, t: float) -> Counter[str]:
        """Arrivals due by ``t`` seconds after ``t0``, per supplier."""
        counts: Counter[str] = Counter()
        for arrival in self.arrivals:
            if arrival.at_s > t:
                break
            counts[arrival.supplier] += 1
        return counts

    def per_second(self) -> dict[str, list[int]]:
        """Scheduled arrivals per supplier per whole second after ``t0``."""
        seconds = max(1, math.ceil(self.duration_s))
        table = {name: [0] * seconds for name in self.suppliers}
        for arrival in self.arrivals:
            table[arrival.supplier][min(seconds - 1, int(arrival.at_s))] += 1
        return table


def segments_of(plan: BurstPlan) -> tuple[Segment, ...]:
    """The plan's phases laid out on the clock, with their start and end rates."""
    out: list[Segment] = []
    clock = 0.0
    rate = 0.0
    for index, phase in enumerate(plan.phases):
        kind = phase.resolved_kind
        if kind == "hold":
            start = end = rate
        elif kind == "ramp":
            start = phase.from_rate_per_s if phase.from_rate_per_s is not None else rate
            end = phase.to_rate_per_s if phase.to_rate_per_s is not None else rate
        else:
            start = end = phase.rate_per_s if phase.rate_per_s is not None else rate
        out.append(Segment(phase.name or f"{kind}-{index + 1}", kind, clock, phase.duration_s,
                           start, end))
        clock += phase.duration_s
        rate = end
    return tuple(out)


def _arrival_times(segments: tuple[Segment, ...]) -> list[tuple[float, str]]:
    """Times ``t_j`` with ``Λ(t_j) = j + ½``, and the phase of each."""
    times: list[tuple[float, str]] = []
    done = 0.0  # Λ at the start of the current segment
    j = 0
    for segment in segments:
        a, b, d = segment.start_rate, segment.end_rate, segment.duration_s
        k = (b - a) / (2 * d)
        while True:
            y = j + 0.5 - done
            if y > segment.orders + 1e-9:
                break
            # solve k τ² + a τ = y, stably (also when k = 0 or k < 0)
            disc = max(0.0, a * a + 4 * k * y)
            denom = a + math.sqrt(disc)
            tau = 2 * y / denom if denom > 0 else d
            times.append((segment.start_s + min(tau, d), segment.name))
            j += 1
        done += segment.orders
    return times


def _smooth_round_robin(weights: dict[str, float], count: int) -> list[str]:
    """nginx's smooth weighted round robin: exact shares, evenly interleaved."""
    live = {name: w for name, w in weights.items() if w > 0}
    total = sum(live.values())
    current = dict.fromkeys(live, 0.0)
    out: list[str] = []
    for _ in range(count):
        for name, weight in live.items():
            current[name] += weight
        pick = max(current, key=lambda name: current[name])
        current[pick] -= total
        out.append(pick)
    return out


def build_schedule(scenario: Scenario) -> Schedule:
    """The full arrival schedule of the scenario's burst (deterministic)."""
    plan = scenario.burst
    if plan is None:
        raise ValueError("scenario has no burst: section")
    segments = segments_of(plan)
    times = _arrival_times(segments)
    names = [s.name for s in scenario.suppliers]
    weights = {n: 1.0 for n in names} if plan.weights is None else \
        {n: float(plan.weights.get(n, 0.0)) for n in names}
    picks = _smooth_round_robin(weights, len(times))
    rngs = {n: random.Random(f"{scenario.seed}:burst:{n}") for n in names}
    mixes = {s.name: plan.weights_for(s) for s in scenario.suppliers}
    arrivals = []
    seqs: Counter[str] = Counter()
    for index, ((at_s, phase), supplier) in enumerate(zip(times, picks, strict=True)):
        mix = mixes[supplier]
        sku = rngs[supplier].choices(list(mix), list(mix.values()))[0]
        arrivals.append(Arrival(index, at_s, supplier, sku, phase, seqs[supplier]))
        seqs[supplier] += 1
    used = tuple(n for n in names if weights[n] > 0)
    return Schedule(segments, tuple(arrivals), used)


def stall_cover_s(plan: BurstPlan) -> float:
    """The stall the slots cover, seconds: ``stall_cover_s``, but never more than
    ``request_timeout_s`` (a first POST holds its slot no longer than that)."""
    return min(plan.stall_cover_s, plan.request_timeout_s)


def concurrency_at(schedule: Schedule, plan: BurstPlan, t: float, workers: int) -> int:
    """Orders that may be placed at once across all workers at ``t`` seconds after ``t0``.

    ``peak rate in [t, t + 5 s] × (expected_latency × headroom + stall cover)``, plus one
    per supplier and worker (so each supplier always has a slot on each worker), capped by
    ``max_concurrency`` (but never below one slot per supplier and worker).

    A slot is held while an order's first POST is in flight. When a supplier stops
    answering for ``S`` seconds, the orders due meanwhile all hold slots until it answers
    again: ``rate × S`` more than usual. Without them those orders start late (a
    ``schedule_slip``; issue 13 measured ~60 slipped orders and p95 90–120 ms high in a
    2 s stall with ``rate × 250 ms × 3`` slots). :func:`stall_cover_s` bounds ``S`` by the
    request timeout, and ``max_concurrency`` bounds the total, so it cannot explode.
    """
    floor = len(schedule.suppliers) * workers
    rate = schedule.peak_rate(t, t + CONCURRENCY_LOOKAHEAD_S)
    busy_s = plan.expected_latency_ms / 1000 * plan.headroom + stall_cover_s(plan)
    needed = math.ceil(rate * busy_s) + floor
    return max(floor, min(needed, plan.max_concurrency))


def burst_worst_case_cost(scenario: Scenario, schedule: Schedule | None = None
                          ) -> tuple[Decimal, dict[str, Decimal]]:
    """The most the burst could spend, and each supplier's part before the cap: every
    scheduled order at its product's face value × quantity (a price above face value is
    not expected; the cap stops one that is), the total never more than the spending cap.
    """
    plan = scenario.burst
    if plan is None:
        raise ValueError("scenario has no burst: section")
    schedule = schedule if schedule is not None else build_schedule(scenario)
    configs = {s.name: s for s in scenario.suppliers}
    per_supplier = {name: Decimal(0) for name in schedule.suppliers}
    for arrival in schedule.arrivals:
        product = configs[arrival.supplier].product(arrival.sku)
        per_supplier[arrival.supplier] += product.face_value * plan.quantity
    return min(sum(per_supplier.values(), Decimal(0)), plan.spending_cap), per_supplier


def print_burst_plan(scenario: Scenario, out: TextIO | None = None) -> None:
    """``burst --dry-run``: the schedule (phases, orders in all and per supplier) and its
    worst-case cost. Pure arithmetic on the scenario: sends nothing, imports no Locust."""
    out = out if out is not None else sys.stdout
    plan = scenario.burst
    if plan is None:
        raise ValueError("scenario has no burst: section")
    schedule = build_schedule(scenario)
    worst, per_supplier = burst_worst_case_cost(scenario, schedule)
    total = len(schedule.arrivals)

    def say(text: str = "") -> None:
        out.write(text + "\n")

    say(f"burst plan of {scenario.name!r}: {total} orders × {plan.quantity} over "
        f"{schedule.duration_s:g} s, peak {schedule.peak_rate(0, schedule.duration_s):g}/s, "
        f"deadline {plan.deadline_s:g} s, delivery by {plan.delivery}, "
        f"{plan.workers} worker(s)")
    say(f"  {'phase':<12} {'kind':<8} {'start s':>8} {'for s':>7} {'rate/s':>13} "
        f"{'orders':>7}")
    by_phase = Counter(a.phase for a in schedule.arrivals)
    for segment in schedule.segments:
        rate = f"{segment.start_rate:g}" if segment.start_rate == segment.end_rate else \
            f"{segment.start_rate:g} → {segment.end_rate:g}"
        say(f"  {segment.name:<12} {segment.kind:<8} {segment.start_s:>8g} "
            f"{segment.duration_s:>7g} {rate:>13} {by_phase[segment.name]:>7}")
    say(f"  {'supplier':<12} {'orders':>7} {'share':>6} {'worst case':>11}  products")
    counts = Counter(a.supplier for a in schedule.arrivals)
    skus: dict[str, Counter[str]] = {name: Counter() for name in schedule.suppliers}
    for arrival in schedule.arrivals:
        skus[arrival.supplier][arrival.sku] += 1
    for name in schedule.suppliers:
        mix = ", ".join(f"{sku} {n}" for sku, n in sorted(skus[name].items()))
        share = counts[name] / total if total else 0.0
        say(f"  {name:<12} {counts[name]:>7} {share:>6.0%} {per_supplier[name]:>11}  [{mix}]")
    peak_slots = max((concurrency_at(schedule, plan, t, plan.workers)
                      for seg in schedule.segments
                      for t in (seg.start_s, max(seg.start_s, seg.end_s - 1))), default=0)
    limit = " (max_concurrency)" if peak_slots >= plan.max_concurrency else ""
    say(f"slots: up to {peak_slots}{limit}, for the expected latency × headroom and a stall "
        f"of {stall_cover_s(plan):g} s (stall_cover_s) at the peak rate")
    capped = " (the cap; the schedule alone would cost " \
        f"{sum(per_supplier.values(), Decimal(0))})" if worst < sum(per_supplier.values(),
                                                                     Decimal(0)) else ""
    say(f"worst-case cost: {worst}{capped}; spending cap {plan.spending_cap}, each of N "
        "workers may commit cap / N; nothing was sent")


__all__ = ["Arrival", "Schedule", "Segment", "build_schedule", "burst_worst_case_cost",
           "concurrency_at", "print_burst_plan", "segments_of", "stall_cover_s"]
