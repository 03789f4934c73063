"""The shipped ``scenarios/dialects.yaml`` trial, one supplier per dialect, against a
simulated fleet with the same faults planted in each, checked against the ground truth.

The fleet (tests/data/fleet-dialects-test.yaml) is scenarios/fleet-dialects.yaml at higher
fault rates and without the slow channel, so every order settles and the harness's
findings can be compared with what the simulator really did, supplier by supplier.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.demo import fleet_env
from harness.drivers.dialect import fit_request_id, load_dialect, shipped_dialects
from harness.simulator.process import start_simulator
from harness.simulator.profiles import load_fleet

pytestmark = pytest.mark.serial  # trials against delivery deadlines: run alone

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "dialects.yaml"
FLEET = Path(__file__).parent / "data" / "fleet-dialects-test.yaml"
DIALECT_OF = {"reference": "reference", "gateway": "gateway", "concat": "concat_md5",
              "trade": "sync_trade"}
BAD_KINDS = ("not_minted", "resold", "wrong_face_value", "expiring")


@pytest.fixture(scope="module")
def dialect_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the dialects trial once through the CLI; keep its events, summary and truth."""
    results = tmp_path_factory.mktemp("dialect-results")
    fleet = load_fleet(FLEET)
    with start_simulator(FLEET) as sim:
        env = {**os.environ, **fleet_env(fleet, sim.url)}
        done = subprocess.run([sys.executable, "-m", "harness", "trial", str(SCENARIO),
                               "--results", str(results), "--no-progress"], env=env,
                              capture_output=True, text=True, timeout=240)
        truth = sim.truth()["suppliers"]
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = [p for p in results.iterdir() if (p / "manifest.json").is_file()]
    events = [json.loads(line) for shard in sorted(run_dir.glob("events*.jsonl"))
              for line in shard.read_text().splitlines()]
    with (run_dir / "summary.csv").open() as file:
        summary = {row["supplier"]: row for row in csv.DictReader(file)}
    return {"events": events, "summary": summary, "truth": truth, "stdout": done.stdout}


@pytest.mark.slow
def test_the_same_planted_faults_are_found_through_each_dialect(
        dialect_run: dict[str, Any]) -> None:
    """Every bad code the simulator delivered is found with its verdict, every failure and
    the hidden fee are found, whichever dialect carried them; the lost synchronous trades
    (and only those) are the codes the trade dialect cannot recover."""
    events, summary, truth = dialect_run["events"], dialect_run["summary"], dialect_run["truth"]
    verdicts = Counter((e["supplier"], e["verdict"]) for e in events
                       if e["type"] == "code_checked")
    finals = Counter((e["supplier"], e["state"], e.get("resolution")) for e in events
                     if e["type"] == "order_final")
    for supplier in DIALECT_OF:
        real = truth[supplier]
        unobtainable = finals[(supplier, "unknown", "charged_codes_unobtainable")]
        assert sum(real["codes_issued"][kind] for kind in BAD_KINDS) > 0, supplier
        for kind in BAD_KINDS:
            found = verdicts[(supplier, kind)]
            assert real["codes_issued"][kind] - unobtainable <= found \
                <= real["codes_issued"][kind], (supplier, kind)
        failed = sum(v for (s, state, _), v in finals.items() if s == supplier
                     and state == "failed")
        assert real["orders_by_state"].get("failed", 0) - unobtainable <= failed \
            <= real["orders_by_state"].get("failed", 0), supplier
        assert float(summary[supplier]["hidden_fee_per_order"]) > 0, supplier
        if supplier != "trade":
            assert unobtainable == 0
    for kind in BAD_KINDS:  # every planted kind was delivered somewhere (not a vacuous test)
        assert sum(truth[supplier]["codes_issued"][kind] for supplier in DIALECT_OF) > 0, kind
    # the trade dialect loses exactly the answers the simulator withheld (HTML with 200)
    assert finals[("trade", "unknown", "charged_codes_unobtainable")] == \
        truth["trade"]["unknown_outcomes"] > 0
    # the other dialects resolve every unknown outcome by asking
    for supplier in ("reference", "gateway", "concat"):
        assert not any(s == supplier and state == "unknown" for (s, state, _) in finals)


@pytest.mark.slow
def test_no_order_is_bought_twice_in_any_dialect(dialect_run: dict[str, Any]) -> None:
    """Each supplier holds exactly one order per planned client order id (as the dialect
    fits the id), never one under a new id, whatever the unknown outcomes were."""
    events, truth = dialect_run["events"], dialect_run["truth"]
    dialects = {name: load_dialect(path) for name, path in shipped_dialects().items()}
    for supplier, dialect in DIALECT_OF.items():
        planned = [e["client_order_id"] for e in events if e["type"] == "order_planned"
                   and e["supplier"] == supplier]
        expected = set(planned) if dialect == "reference" else {
            fit_request_id(cid, dialects[dialect].request_id) for cid in planned}
        held = truth[supplier]["client_order_ids"]
        assert len(held) == len(set(held)) == truth[supplier]["orders_created"]
        assert set(held) == expected, supplier


@pytest.mark.slow
def test_callbacks_arrive_only_where_the_dialect_has_them(dialect_run: dict[str, Any]) -> None:
    """The Juhe-style form callbacks verify and are taken as news; none is forged; the
    dialects without callbacks get none."""
    callbacks = Counter((e["supplier"], e["verdict"]) for e in dialect_run["events"]
                        if e["type"] == "callback_received")
    assert callbacks[("concat", "accepted")] > 0 and callbacks[("reference", "accepted")] > 0
    assert not any(verdict in ("forged", "bad") for _, verdict in callbacks)
    assert not any(supplier in ("gateway", "trade") for supplier, _ in callbacks)
    truth = dialect_run["truth"]
    assert truth["gateway"]["callbacks"]["sent"] == truth["trade"]["callbacks"]["sent"] == 0
    for name in DIALECT_OF:  # every request was signed as its dialect wants
        assert truth[name]["unauthorized_401"] == 0


@pytest.mark.slow
def test_a_dialect_trial_killed_then_resumed_buys_nothing_twice(tmp_path: Path) -> None:
    """SIGKILL mid-run, then `trialbench resume` in a new process (the drivers remember
    nothing): every planned order ends with one final state, and each supplier holds at
    most one order per planned id, in every dialect."""
    import signal
    import time

    fleet = load_fleet(FLEET)
    results = tmp_path / "results"
    scenario = tmp_path / "dialects-small.yaml"
    scenario.write_text(SCENARIO.read_text().replace("orders_per_supplier: 40",
                                                     "orders_per_supplier: 12"))
    with start_simulator(FLEET) as sim:
        env = {**os.environ, **fleet_env(fleet, sim.url)}
        proc = subprocess.Popen([sys.executable, "-m", "harness", "trial", str(scenario),
                                 "--results", str(results), "--no-progress"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                logs = list(results.glob("*/events*.jsonl"))
                if sum(p.read_text().count('"type":"order_final"') for p in logs) >= 16:
                    break
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        (run_dir,) = [p for p in results.iterdir() if (p / "manifest.json").is_file()]
        done = subprocess.run([sys.executable, "-m", "harness", "resume", str(run_dir),
                               "--no-progress"], env=env, capture_output=True, text=True,
                              timeout=240, check=False)
        truth = sim.truth()["suppliers"]
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for shard in sorted(run_dir.glob("events*.jsonl"))
              for line in shard.read_text().splitlines()]
    dialects = {name: load_dialect(path) for name, path in shipped_dialects().items()}
    for supplier, dialect in DIALECT_OF.items():
        planned = {e["client_order_id"] for e in events if e["type"] == "order_planned"
                   and e["supplier"] == supplier}
        settled = {e["client_order_id"] for e in events if e["type"] == "order_final"
                   and e["supplier"] == supplier and not e.get("interrupted")}
        assert planned == settled, supplier
        expected = planned if dialect == "reference" else {
            fit_request_id(cid, dialects[dialect].request_id) for cid in planned}
        held = truth[supplier]["client_order_ids"]
        assert len(held) == len(set(held)) and set(held) <= expected, supplier


def test_gateway_top_ups_go_to_their_own_method() -> None:
    """A direct top-up (an order with an account) is sent to fulu.order.direct.add with
    the account, served, and delivered with no codes; a card product there is refused."""
    import time

    import httpx

    from harness.drivers.base import Credentials, Failure, HttpResponse, OrderRequest
    from harness.drivers.reference import build_driver

    profile = load_fleet(FLEET).suppliers["gateway"]
    with start_simulator(FLEET) as sim, httpx.Client(timeout=10, trust_env=False) as http:
        driver = build_driver("gateway", sim.supplier_url("gateway"),
                              Credentials(profile.api_key, profile.secret))

        def send(request: Any) -> HttpResponse:
            answer = http.request(request.method, request.url, headers=dict(request.headers),
                                  content=request.body)
            return HttpResponse(answer.status_code, dict(answer.headers), answer.content)

        placed = driver.place_order(OrderRequest("top-1", "mobile-30", 1, "13800000000"))
        assert json.loads(placed.body)["method"] == "fulu.order.direct.add"
        first = send(placed)
        if first.status == 500:  # a planted lost answer: ask, as the lifecycle would
            time.sleep(0.4)
        deadline = time.monotonic() + 5
        while True:
            order = driver.parse_order_for("top-1", send(driver.get_order("top-1")))
            if not isinstance(order, Failure) and order.state.is_final:
                break
            assert time.monotonic() < deadline, order
            time.sleep(0.05)
        assert order.codes == () and order.state.value in ("success", "failed")
        wrong = driver.parse_order_for("card-1", send(driver.place_order(
            OrderRequest("card-1", "mobile-30", 1))))
        assert isinstance(wrong, Failure) and wrong.kind == "invalid_request"
