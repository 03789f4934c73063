"""Planted faults appear at their stated rates for a fixed seed, and seeds fix fates."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from harness.protocol import parse_time
from harness.simulator.process import SimulatorProcess

N_ORDERS = 500


def within(count: int, n: int, p: float) -> bool:
    """True when ``count`` of ``n`` lies within 4 binomial sigmas of ``n * p``."""
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


def settle(sim: SimulatorProcess, name: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Wait until the supplier has no order in flight; return its truth."""
    deadline = time.monotonic() + timeout_s
    while True:
        truth: dict[str, Any] = sim.truth()["suppliers"][name]
        if truth["in_flight"] == 0 or time.monotonic() > deadline:
            return truth
        time.sleep(0.05)


def test_fault_rates(client: Any, sim: SimulatorProcess) -> None:
    """Each planted order, code, refund and callback fault appears at its profile's rate."""
    faulty = client("faulty")
    status: dict[int, int] = {}
    sync_finals = created = not_found = 0
    for i in range(N_ORDERS):
        r = faulty.order(f"fr-{i}", quantity=2)
        status[r.status_code] = status.get(r.status_code, 0) + 1
        if r.status_code == 201:
            created += 1
            sync_finals += r.json()["order"]["state"] != "submitted"
        if faulty.request("GET", f"/v1/orders/fr-{i}").status_code == 404:
            not_found += 1
    assert set(status) == {201, 500}
    assert within(status[500], N_ORDERS, 0.1)           # unknown outcome, order exists
    assert within(sync_finals, created, 0.3)            # final in the 201
    assert within(not_found, N_ORDERS, 0.2)             # not-found window
    truth = settle(sim, "faulty")
    assert truth["orders_created"] == N_ORDERS          # the 500s were taken too
    assert truth["unknown_outcomes"] == status[500]
    assert truth["not_found_orders"] == not_found
    states = truth["orders_by_state"]
    assert within(states.get("failed", 0), N_ORDERS, 0.1)
    assert within(states.get("partial", 0), N_ORDERS, 0.1)
    assert truth["hidden_fees_taken"] == f"{0.25 * N_ORDERS:.2f}"

    # codes: classify what was delivered as a merchant would, compare with truth and rates
    time.sleep(0.35)  # past every not-found window
    observed = dict.fromkeys(truth["codes_issued"], 0)
    pattern = re.compile(r"^FLT-[0-9]{4}-[0-9]{4}-[0-9]{4}$")
    refundable = []
    now = datetime.now(UTC)
    with httpx.Client(base_url=sim.issuer_url, trust_env=False,
                      headers={"X-Api-Key": "test-issuer-key"}) as issuer:
        for i in range(N_ORDERS):
            order = faulty.request("GET", f"/v1/orders/fr-{i}").json()["order"]
            if order["state"] in ("success", "partial"):
                refundable.append(order["client_order_id"])
            for code in order["codes"]:
                check = issuer.get(f"/v1/codes/{code['serial']}", params={"pin": code["pin"]})
                if not pattern.match(code["serial"]):
                    kind = "bad_pattern"
                elif check.status_code == 404:
                    kind = "not_minted"
                elif check.json()["status"] == "redeemed":
                    kind = "resold"
                elif code["face_value"] != "10.00":
                    assert check.json()["face_value"] == code["face_value"] == "5.00"
                    kind = "wrong_face_value"
                elif (parse_time(code["expires_at"]) - now).total_seconds() < 700:
                    kind = "expiring"
                else:
                    kind = "valid"
                observed[kind] += 1
    assert observed == truth["codes_issued"]
    total = sum(observed.values())
    for kind, share in (("bad_pattern", 0.05), ("not_minted", 0.1), ("resold", 0.1),
                        ("wrong_face_value", 0.1), ("expiring", 0.1), ("valid", 0.55)):
        assert within(observed[kind], total, share), (kind, observed[kind], total)

    # refunds: one whole-order refund per delivered order
    refused = 0
    for coid in refundable:
        r = faulty.request("POST", f"/v1/orders/{coid}/refund",
                           {"reason": "unused", "serials": None, "note": None})
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "refund_not_allowed"
            refused += 1
        else:
            assert r.status_code == 202
    time.sleep(0.4)  # past the slow refunds
    refunds = sim.truth()["suppliers"]["faulty"]["refunds"]
    n = len(refundable)
    assert refunds["requested"] == n and refunds["refused"] == refused
    assert within(refused, n, 0.2)
    assert within(refunds["rejected"], n, 0.2)
    assert within(refunds["phantom"], n, 0.2)
    assert within(refunds["credited"], n, 0.3)          # instant 0.2 + slow 0.1
    stuck = n - refused - refunds["rejected"] - refunds["completed"]
    assert within(stuck, n, 0.1)


def test_callback_fault_rates(client: Any, sim: SimulatorProcess) -> None:
    """Missing, duplicated and out-of-order callbacks occur at their profile's rates."""
    faulty = client("faulty")
    for i in range(300):
        faulty.order(f"cf-{i}", callback_url="http://127.0.0.1:9/unreachable")
    cb = settle(sim, "faulty")["callbacks"]
    events = cb["events"]
    assert events > 400  # asynchronous orders call back twice
    assert within(cb["suppressed"], events, 0.2)
    assert within(cb["duplicated"], events - cb["suppressed"], 0.2)
    assert cb["out_of_order"] > 0


def test_same_seed_same_fates(client: Any, sim: SimulatorProcess) -> None:
    """Fates depend on (seed, supplier, client_order_id), not on arrival order."""
    faulty = client("faulty")
    ids = [f"sd-{i}" for i in range(120)]

    def run(order_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        for coid in order_ids:
            faulty.order(coid, quantity=2)
        settle(sim, "faulty")
        time.sleep(0.35)
        fates = {}
        for coid in ids:
            o = faulty.request("GET", f"/v1/orders/{coid}").json()["order"]
            fates[coid] = (o["state"], o["amount"], tuple(c["serial"] for c in o["codes"]),
                           tuple(c["face_value"] for c in o["codes"]))
        return fates

    sim.reset(seed=7)
    forward = run(ids)
    sim.reset(seed=7)
    backward = run(list(reversed(ids)))
    assert forward == backward
    sim.reset(seed=8)
    assert run(ids) != forward


def test_slow_mode_share_and_latency(client: Any, sim: SimulatorProcess) -> None:
    """The slow channel takes its stated share of orders, at its own median delivery time."""
    sluggish = client("sluggish")
    n = 300
    for i in range(n):
        assert sluggish.order(f"sl-{i}").status_code == 201
    settle(sim, "sluggish")
    delays_ms = []
    for i in range(n):
        order = sluggish.request("GET", f"/v1/orders/sl-{i}").json()["order"]
        delivered = parse_time(order["delivered_at"]) - parse_time(order["created_at"])
        delays_ms.append(delivered.total_seconds() * 1000)
    slow = sorted(d for d in delays_ms if d > 120)
    fast = sorted(d for d in delays_ms if d <= 120)
    assert within(len(slow), n, 0.3)
    assert 200 < slow[len(slow) // 2] < 450      # slow median about 300 ms
    assert fast[len(fast) // 2] < 60             # fast median about 20 ms
