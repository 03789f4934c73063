"""Hostile answers are data: the hostile supplier (``tests/hostile_server.py``) against
both transports, the reference driver, and whole trials and bursts beside a healthy
simulated supplier. Everything binds 127.0.0.1; every request has a short deadline.

The gevent transport runs in a subprocess (``python -c``), as bursts do, so gevent never
patches the pytest process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hostile_server import BODY_MODES, FIELD_MODES, MODES, REDIRECT_MODES, HostileServer
from test_lifecycle import answer, placed, run_order

from harness.demo import fleet_env
from harness.drivers.base import Credentials, Failure, HttpResponse
from harness.drivers.reference import ReferenceDriver
from harness.events import read_events
from harness.run.async_transport import AsyncTransport
from harness.run.trial import run_trial
from harness.simulator.process import SimulatorProcess
from harness.simulator.profiles import load_fleet

ROOT = Path(__file__).parent.parent
TEST_FLEET = Path(__file__).parent / "data" / "fleet-test.yaml"
HOSTILE_ENV = {"HOSTILE_KEY": "hostile-key", "HOSTILE_SECRET": "hostile-secret"}
E2E_MODES = [m for m in MODES if m not in ("ok", "silent")]
"""Every malformed mode but ``silent`` (no answer at all: an ordinary timeout, checked
directly below; in a whole run it would only add retried timeouts)."""


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    """The hostile supplier and its redirect trap, for this module."""
    with HostileServer() as server:
        yield server


# ---------------------------------------------------------------------------- transports

DIRECT = r'''
import json, resource, sys, time
kind, base = sys.argv[1], sys.argv[2]
from harness.drivers.base import HttpRequest
CASES = [("ok", "GET", "/v1/balance", None), ("trickle", "GET", "/v1/balance", None),
         ("silent", "GET", "/v1/balance", None), ("oversized", "GET", "/v1/products", None),
         ("oversized_chunked", "POST", "/v1/orders", None),
         ("cut_off", "POST", "/v1/orders", None), ("redirect", "POST", "/v1/orders", None),
         ("redirect302", "GET", "/v1/balance", None), ("ok", "GET", "/v1/products", 100),
         ("gzip_bomb", "GET", "/v1/balance", None), ("huge_headers", "GET", "/v1/balance", None)]

def request(mode, method, path):
    body = b'{"client_order_id": "c1", "sku": "card-10"}' if method == "POST" else b""
    return HttpRequest(method, f"{base}/suppliers/{mode}{path}",
                       {"Content-Type": "application/json"}, body, method == "GET")

def rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

results = []
def record(mode, cap, answer, start):
    results.append({"mode": mode, "cap": cap, "status": answer.status,
                    "error": answer.transport_error, "body": len(answer.body),
                    "elapsed_s": time.perf_counter() - start})

if kind == "async":
    import asyncio
    from harness.run.async_transport import AsyncTransport
    async def main():
        before = rss_kb()
        default, small = AsyncTransport(1.5), AsyncTransport(1.5, max_body_bytes=100)
        for mode, method, path, cap in CASES:
            start = time.perf_counter()
            record(mode, cap, await (small if cap else default).send(
                request(mode, method, path)), start)
        await default.aclose()
        await small.aclose()
        return before
    before = asyncio.run(main())
else:
    from harness.run.gevent_transport import GeventTransport
    transport = GeventTransport(1.5)
    before = rss_kb()
    for mode, method, path, cap in CASES:
        start = time.perf_counter()
        record(mode, cap, transport.send(request(mode, method, path), mode,
                                         max_body_bytes=cap), start)
print(json.dumps({"results": results, "rss_growth_kb": rss_kb() - before}))
'''


@pytest.mark.serial  # times the transport's deadline to a second: run alone
@pytest.mark.parametrize("transport", ["async", "gevent"])
def test_transport_deadline_cap_and_no_redirects(hostile: HostileServer, transport: str) -> None:
    """Each transport ends a trickled or silent answer at its 1.5 s total deadline, refuses
    50 MB bodies (with or without a length), a gzip bomb and 50 MB of headers without
    growing, keeps the status of an answer whose body did not come whole, honours a
    smaller cap, and never follows a 307 or 302 to the second loopback server."""
    before = len(hostile.trap.requests)
    done = subprocess.run([sys.executable, "-c", DIRECT, transport, hostile.url],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    seen = {(r["mode"], r["cap"]): r for r in report["results"]}
    assert seen[("ok", None)]["status"] == 200 and seen[("ok", None)]["error"] is None
    for mode, status in (("trickle", 200), ("silent", 0)):
        row = seen[(mode, None)]
        assert (row["status"], row["error"]) == (status, "timeout"), row
        assert 1.4 <= row["elapsed_s"] <= 2.5, row  # the trickle alone would take 200 s
    for mode, status in (("oversized", 200), ("oversized_chunked", 201)):
        row = seen[(mode, None)]
        assert (row["status"], row["error"], row["body"]) == (status, "body_too_large", 0)
        assert row["elapsed_s"] < 1.0, row
    assert report["rss_growth_kb"] < 20_000  # 50 MB bodies, twice: never held
    cut = seen[("cut_off", None)]
    assert cut["status"] == 201 and cut["error"].startswith("body_error:"), cut
    assert seen[("redirect", None)]["status"] == 307
    assert seen[("redirect302", None)]["status"] == 302
    assert seen[("ok", 100)]["error"] == "body_too_large"
    bomb = seen[("gzip_bomb", None)]  # 100 KB inflating to 100 MB: bounded while inflated
    assert (bomb["status"], bomb["error"]) == (200, "body_too_large"), bomb
    headers = seen[("huge_headers", None)]  # 50 MB of headers
    assert headers["status"] == 0 and headers["error"].startswith("connect_error:"), headers
    assert len(hostile.trap.requests) == before


def test_transport_refuses_a_bad_cap() -> None:
    """A body cap that is not positive is refused when the transport is made."""
    with pytest.raises(ValueError, match="max_body_bytes"):
        AsyncTransport(1.0, max_body_bytes=0)


# ---------------------------------------------------------------------------- the driver

OPERATIONS = ("catalog", "balance", "place", "get_order", "refund", "get_refund")
FINE = {"time_number": {"catalog", "balance"},  # no time in them
        "bad_regex": {"balance", "place", "get_order", "refund", "get_refund"},
        "surrogate": {"refund", "get_refund"}}
"""Operations whose answer a field mode leaves well-formed."""


def _driver_results(url: str, modes: list[str]) -> dict[tuple[str, str], Any]:
    async def main() -> dict[tuple[str, str], Any]:
        transport = AsyncTransport(1.0)
        results: dict[tuple[str, str], Any] = {}
        try:
            for mode in modes:
                driver = ReferenceDriver(f"{url}/suppliers/{mode}", Credentials("k", "s"))
                calls = {
                    "catalog": (driver.catalog(), driver.parse_catalog),
                    "balance": (driver.balance(), driver.parse_balance),
                    "place": (driver.place_order(_order("h-1")), driver.parse_order),
                    "get_order": (driver.get_order("h-1"), driver.parse_order),
                    "refund": (driver.request_refund("h-1", "unused"), driver.parse_refund),
                    "get_refund": (driver.get_refund("h-1"), driver.parse_refund),
                }
                for name, (request, parse) in calls.items():
                    response = await transport.send(request)
                    results[(mode, name)] = parse(response)  # unguarded: must not raise
        finally:
            await transport.aclose()
        return results

    return asyncio.run(main())


def _order(cid: str) -> Any:
    from harness.drivers.base import OrderRequest
    return OrderRequest(cid, "card-10")


@pytest.mark.serial  # a gzip bomb must be refused for size before the deadline: run alone
def test_driver_turns_every_hostile_answer_into_a_failure(hostile: HostileServer) -> None:
    """The reference driver parses every hostile answer to every operation (wrong types,
    1e999, NaN, 1e30, negative money, a ReDoS pattern, 100,000 levels of JSON, empty,
    HTML, truncated, cut off, 50 MB, a gzip bomb, 50 MB of headers, redirects) into a
    Failure without raising, and the well-formed answers around them into values."""
    modes = [m for m in MODES if m not in ("silent", "trickle")]  # timeouts: above
    results = _driver_results(hostile.url, modes)
    for (mode, operation), result in results.items():
        should_fail = mode != "ok" and operation not in FINE.get(mode, set())
        assert isinstance(result, Failure) == should_fail, (mode, operation, result)
    kinds = {mode: {r.kind for (m, _), r in results.items() if m == mode
                    and isinstance(r, Failure)} for mode in modes}
    assert kinds["oversized"] == kinds["gzip_bomb"] == {"body_too_large"}
    assert kinds["redirect"] == {"http_307"}
    for mode in (*FIELD_MODES, "deep", "empty", "html", "truncated"):
        assert kinds[mode] == {"bad_response"}, (mode, kinds[mode])
    assert all(k.startswith("body_error:") for k in kinds["cut_off"])


@pytest.mark.parametrize("error", ["body_too_large", "timeout", "body_error:ReadError"])
def test_2xx_whose_body_did_not_come_whole_is_unknown(error: str) -> None:
    """A 201 whose body the transport could not take whole (over the cap, past the
    deadline, cut off) keeps the order's reservation and is asked about by id."""
    cut = HttpResponse(201, {}, b"", transport_error=error)
    state, life, _, log = run_order([("place", cut), ("resolve", placed(status=200))])
    assert state == "success" and life.resolution == "unknown_outcome"
    assert log.of("order_error")[0]["kind"] == error
    unread = HttpResponse(201, {}, b"", transport_error=error)
    state, life, _, _ = run_order([("place", unread)] + [("resolve", answer(500))] * 3)
    assert state == "unknown" and life.side.budget.committed == Decimal("10.00")


# ---------------------------------------------------------------------------- whole runs

def _scenario(hostile_url: str, modes: list[str], section: str) -> str:
    lines = ["name: hostile", "seed: 7", "issuer:",
             "  base_url: ${TRIALBENCH_SIM_URL}/issuer",
             "  api_key: ${TRIALBENCH_DEMO_ISSUER_API_KEY}", "suppliers:",
             "  - name: good", "    base_url: ${TRIALBENCH_SIM_URL}/suppliers/good",
             "    credentials: {api_key: \"${TRIALBENCH_DEMO_GOOD_API_KEY}\", "
             "secret: \"${TRIALBENCH_DEMO_GOOD_SECRET}\"}",
             "    products: [{sku: card-10, face_value: \"10.00\", sale_price: \"10.00\"}]"]
    for mode in modes:
        lines += [f"  - name: h_{mode}", f"    base_url: {hostile_url}/suppliers/{mode}",
                  "    credentials: {api_key: \"${HOSTILE_KEY}\", "
                  "secret: \"${HOSTILE_SECRET}\"}",
                  "    products: [{sku: card-10, face_value: \"10.00\", "
                  "sale_price: \"10.00\"}]"]
    return "\n".join(lines) + "\n" + section


TRIAL = """\
trial:
  orders_per_supplier: 2
  concurrency: 2
  deadline_s: 1
  request_timeout_s: 1
  unknown_outcome_window_s: 0.5
  delivery: both
  poll: {initial_interval_s: 0.1, max_interval_s: 0.3, backoff_factor: 1.5}
  spending_cap: 5000
  redeem_sample: 0
  after_sales: {refund_follow_s: 2}
"""

BURST = """\
burst:
  phases:
    - {duration_s: 2, rate_per_s: 25}
  deadline_s: 1
  follow_s: 1.5
  delivery: both
  request_timeout_s: 1
  unknown_outcome_window_s: 0.3
  spending_cap: 5000
"""


def _env(sim: SimulatorProcess) -> dict[str, str]:
    return {**fleet_env(load_fleet(TEST_FLEET), sim.url), **HOSTILE_ENV}


def _check_run(events: list[dict[str, Any]], hostile: HostileServer, modes: list[str],
               trap_before: int) -> None:
    """The healthy supplier's work is whole; every hostile one's trouble is recorded."""
    good = [e for e in events if e.get("supplier") == "good"]
    finals = [e for e in good if e["type"] == "order_final"]
    assert finals and {e["state"] for e in finals} == {"success"}
    assert not [e for e in good if e["type"] in ("order_error", "supplier_error")]
    assert [e for e in good if e["type"] == "balance_read"]
    for mode in modes:
        mine = [e for e in events if e.get("supplier") == f"h_{mode}"]
        trouble = [e for e in mine if e["type"] in ("order_error", "supplier_error")]
        assert trouble, mode
        assert not [e for e in mine if e["type"] == "order_final"
                    and e["state"] == "success" and mode != "bad_regex"], mode
    assert len(hostile.trap.requests) == trap_before  # no redirect was followed


def test_trial_with_every_hostile_supplier_completes(hostile: HostileServer,
                                                     sim: SimulatorProcess,
                                                     tmp_path: Path) -> None:
    """A trial of one healthy simulated supplier beside one hostile supplier per malformed
    mode finishes; the healthy one gets its orders, balance reads and refund, and each
    hostile one's answers are recorded errors, none a crash."""
    scenario = tmp_path / "hostile.yaml"
    scenario.write_text(_scenario(hostile.url, E2E_MODES, TRIAL))
    trap_before = len(hostile.trap.requests)
    run_dir = run_trial(scenario, results_root=tmp_path / "results", env=_env(sim),
                        show_progress=False)
    events = list(read_events(run_dir))
    assert events[-1]["type"] == "trial_finished" or any(
        e["type"] == "trial_finished" for e in events)
    _check_run(events, hostile, E2E_MODES, trap_before)
    good = [e for e in events if e.get("supplier") == "good"]
    phases = {e["phase"] for e in good if e["type"] == "balance_read"}
    assert {"before", "after_orders", "after_refunds"} <= phases
    assert [e for e in good if e["type"] == "refund_requested" and e["state"] != "error"]
    unknown = [e for e in events if e["type"] == "order_final" and e["state"] == "unknown"]
    assert unknown  # 2xx answers that could not be read kept their reservations


def test_burst_with_every_hostile_supplier_completes(hostile: HostileServer,
                                                     sim: SimulatorProcess,
                                                     tmp_path: Path) -> None:
    """A short burst of one healthy simulated supplier beside one hostile supplier per
    malformed mode exits 0 having placed the healthy supplier's orders, read its balance,
    and recorded each hostile supplier's answers as errors."""
    scenario = tmp_path / "hostile.yaml"
    scenario.write_text(_scenario(hostile.url, E2E_MODES, BURST))
    trap_before = len(hostile.trap.requests)
    done = subprocess.run(
        [sys.executable, "-m", "harness", "burst", str(scenario), "--results",
         str(tmp_path / "results"), "--no-live"], capture_output=True, text=True,
        env={**os.environ, **_env(sim)}, timeout=90, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    events = list(read_events(run_dir))
    _check_run(events, hostile, E2E_MODES, trap_before)
    placed_by = Counter(e["supplier"] for e in events if e["type"] == "order_planned")
    assert placed_by["good"] >= 2 and len(placed_by) == len(E2E_MODES) + 1


def test_modes_are_all_exercised() -> None:
    """The end-to-end runs cover every malformed mode but the silent one."""
    assert set(E2E_MODES) == set(FIELD_MODES) | (set(BODY_MODES) - {"silent"}) \
        | set(REDIRECT_MODES)


@pytest.mark.parametrize("status", [302, 303, 307])
def test_redirect_to_a_write_is_unknown_not_refused(status: int) -> None:
    """A redirect answering an order's POST is never followed, and the order may exist
    (a 303 after a POST can mean it was done): its reservation is kept and it is asked
    about by id, never counted as refused."""
    moved = answer(status, b"", {"location": "http://127.0.0.1:9/elsewhere"})
    state, life, _, _ = run_order([("place", moved)] + [("resolve", moved)] * 3)
    assert state == "unknown" and life.side.budget.committed == Decimal("10.00")
