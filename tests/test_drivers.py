"""The reference driver, the trial transport and the callback path, against real servers."""

from __future__ import annotations

import asyncio
import json
import random
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from harness import protocol
from harness.drivers.base import Credentials, Failure, HttpResponse, OrderRequest, OrderState
from harness.drivers.reference import ReferenceDriver, failure_from
from harness.events import read_events
from harness.progress import TrialProgress
from harness.run.async_transport import AsyncTransport, drive
from harness.run.callbacks import CallbackReceiver
from harness.run.lifecycle import read_steps, retry_after_s
from harness.run.trial import TrialRun
from harness.runfolder import RunFolder
from harness.scenario import load_scenario
from harness.simulator.process import SimulatorProcess

SECRET = "s3cret"


def _driver(base_url: str = "http://127.0.0.1:9/suppliers/acme",
            key: str = "key", secret: str = SECRET) -> ReferenceDriver:
    return ReferenceDriver(base_url, Credentials(key, secret))


def test_requests_are_signed_over_the_full_path_and_body() -> None:
    """A built request's signature verifies over its base path, query and exact body."""
    driver = _driver()
    request = driver.place_order(OrderRequest("o-1", "steam-100", 2, None, None))
    assert request.method == "POST" and not request.read_only
    assert json.loads(request.body) == {"client_order_id": "o-1", "sku": "steam-100",
                                        "quantity": 2, "account": None, "callback_url": None}
    headers = request.headers
    assert protocol.verify(SECRET, "POST", "/suppliers/acme/v1/orders", headers["X-Timestamp"],
                           request.body, headers["X-Signature"])
    assert not protocol.verify("other", "POST", "/suppliers/acme/v1/orders",
                               headers["X-Timestamp"], request.body, headers["X-Signature"])
    get = driver.get_order("o 1")
    assert get.url.endswith("/v1/orders/o%201") and get.read_only and get.body == b""


def test_failures_carry_kind_status_and_retry_after() -> None:
    """Error answers become Failure data with a stable kind; no answer is outcome-unknown."""
    body = json.dumps(protocol.error_body("out_of_stock", "gone")).encode()
    failure = failure_from(HttpResponse(409, {}, body))
    assert failure.kind == "http_409_out_of_stock" and not failure.outcome_unknown
    limited = failure_from(HttpResponse(429, {"retry-after": "2"}, b""))
    assert limited.retry_after_s == 2.0 and limited.retryable
    silent = failure_from(HttpResponse(0, {}, b"", transport_error="timeout"))
    assert silent.kind == "timeout" and silent.outcome_unknown
    assert isinstance(_driver().parse_order(HttpResponse(200, {}, b"not json")), Failure)
    assert retry_after_s(HttpResponse(429, {"retry-after": "3"}, b""), 0.0) == 3.0
    assert retry_after_s(HttpResponse(404, {}, b""), 0.0) is None


def test_callback_signatures_verified_and_forgeries_refused() -> None:
    """A correctly signed callback parses; a wrong secret or a stale timestamp is refused."""
    driver = _driver()
    now = "2026-11-25T03:10:11.123Z"
    order = {"client_order_id": "o-1", "order_id": "S1", "sku": "steam-100", "quantity": 1,
             "account": None, "unit_price": "97.00", "amount": "97.00", "state": "success",
             "created_at": now, "updated_at": now, "delivered_at": now, "codes": [],
             "failure_reason": None, "refund": None}
    body = json.dumps({"event": "order.updated", "order": order}).encode()
    path = "/callbacks/acme?x=1"
    good = protocol.signed_headers("ignored", SECRET, "POST", path, body)
    event = driver.verify_callback("POST", path, good, body)
    assert not isinstance(event, Failure) and event.order.state is OrderState.SUCCESS
    forged = protocol.signed_headers("ignored", "wrong", "POST", path, body)
    assert isinstance(driver.verify_callback("POST", path, forged, body), Failure)
    stale = protocol.signed_headers("ignored", SECRET, "POST", path, body,
                                    timestamp_ms=protocol.now_ms() - 301_000)
    assert isinstance(driver.verify_callback("POST", path, stale, body), Failure)


def test_reads_retry_on_429_honouring_retry_after(sim: SimulatorProcess) -> None:
    """Against a 5-per-second token bucket, every read gets through by waiting as told."""
    driver = _driver(sim.supplier_url("limited"), "limited-key", "limited-secret")
    statuses: list[int] = []

    async def main() -> list[int]:
        transport = AsyncTransport(5.0)
        try:
            finals = []
            def parse(response: HttpResponse) -> object:
                statuses.append(response.status)
                return driver.parse_balance(response)

            for _ in range(12):
                result = await drive(transport, read_steps(
                    driver.balance, parse, purpose="balance", clock=time.time,
                    rng=random.Random(1), attempts=10, for_s=20))
                finals.append(200 if not isinstance(result, Failure) else result.status)
            return finals
        finally:
            await transport.aclose()

    assert asyncio.run(main()) == [200] * 12
    assert 429 in statuses


def test_receiver_rejects_and_logs_forged_callbacks(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial's receiver answers 401 to a forged callback and records it as forged."""
    scenario_path = tmp_path / "s.yaml"
    scenario_path.write_text(
        "name: t\nsuppliers:\n  - name: acme\n    base_url: http://127.0.0.1:9/suppliers/acme\n"
        "    credentials: {api_key: '${K}', secret: '${S}'}\n"
        "    products: [{sku: a, face_value: '1.00', sale_price: '1.00'}]\n"
        "trial: {deadline_s: 1, spending_cap: 10}\n")
    scenario = load_scenario(scenario_path, {"K": "key", "S": SECRET})
    folder = RunFolder.create(tmp_path / "results", scenario, scenario_path, mode="trial")

    async def main() -> tuple[int, int]:
        transport = AsyncTransport(1.0)
        run = TrialRun(scenario, folder, transport, TrialProgress(["acme"], 1, enabled=False))
        try:
            async with CallbackReceiver(run.on_callback) as receiver:
                body = b'{"event": "order.updated", "order": {}}'
                headers = protocol.signed_headers("x", "not-the-secret", "POST",
                                                  "/callbacks/acme", body)
                async with httpx.AsyncClient(trust_env=False) as client:
                    forged = await client.post(f"{receiver.url}/callbacks/acme", content=body,
                                               headers=headers)
                    unknown = await client.post(f"{receiver.url}/callbacks/nobody",
                                                content=body)
                return forged.status_code, unknown.status_code
        finally:
            await transport.aclose()

    assert asyncio.run(main()) == (401, 404)
    folder.close()
    verdicts = [e["verdict"] for e in read_events(folder.path) if e["type"] == "callback_received"]
    assert verdicts == ["forged", "unknown_supplier"]


def test_newer_view_decided_by_updated_at_and_final_never_goes_back() -> None:
    """A repeated or older callback is ignored, and a final state is never replaced by an
    open one, whatever its timestamp."""
    from datetime import UTC, datetime, timedelta

    from harness.drivers.base import Order, supersedes

    t0 = datetime(2026, 11, 25, tzinfo=UTC)

    def order(state: OrderState, seconds: float) -> Order:
        return Order("o-1", "S1", "sku", 1, state, Decimal(1), Decimal(1), t0,
                     t0 + timedelta(seconds=seconds), None)

    processing, success = order(OrderState.PROCESSING, 1), order(OrderState.SUCCESS, 2)
    assert supersedes(processing, None)
    assert supersedes(success, processing)
    assert not supersedes(processing, success)          # out of order
    assert not supersedes(success, success)             # repeated
    assert not supersedes(order(OrderState.PROCESSING, 3), success)  # final stays final
    assert supersedes(order(OrderState.REFUNDED, 3), success)


@pytest.mark.parametrize("text", ["0.00", "98.50", "9.5", "1000000000000.00"])
def test_money_accepted_as_plain_decimal_strings(text: str) -> None:
    """Money is a plain decimal string between 0 and 10^12."""
    assert protocol.parse_money(text) == Decimal(text)


@pytest.mark.parametrize("value", [9.5, 10, True, None, ["9.50"], {"v": 1}, "NaN", "Infinity",
                                   "1e3", "1e999", "-5.00", "-0.01", "1" + "0" * 13,
                                   " 9.50", "9,50", "0x10", "9_000.00", ""])
def test_money_that_is_not_plain_finite_and_sane_is_refused(value: object) -> None:
    """Numbers, lists, NaN, infinity, exponents, negatives, absurd amounts and odd
    spellings are protocol errors (ValueError), never a Decimal."""
    with pytest.raises(ValueError, match="money"):
        protocol.parse_money(value)


@pytest.mark.parametrize("value", [1764000000, 1.5, None, ["2026-01-01T00:00:00Z"],
                                   "2026-01-01T00:00:00", "x" * 100, "yesterday",
                                   "0001-01-01T00:00:00+01:00"])
def test_times_must_be_zoned_rfc3339_strings(value: object) -> None:
    """A time as a number, a list, without a zone, out of range or not a time at all is a
    ValueError."""
    with pytest.raises(ValueError):
        protocol.parse_time(value)


@pytest.mark.parametrize(("pattern", "ok"), [
    ("^GOOD-[0-9]{4}-[0-9]{4}-[0-9]{4}$", True), ("(?:[A-Z]{4}-){3}[0-9]{4}", True),
    ("(a+)+$", False), ("(a|aa)*", False), ("(x*){9}", False), ("((a+))+", False),
    ("(", False), ("a" * 600, False)])
def test_catalog_code_patterns_that_could_hang_or_fail_are_refused(pattern: str,
                                                                   ok: bool) -> None:
    """A catalog whose code_pattern does not compile, is huge, or repeats a repetition
    (catastrophic backtracking) is a bad_response, not a pattern the harness runs."""
    product = {"sku": "c", "name": "C", "kind": "card", "face_value": "10.00",
               "currency": "CNY", "price": "9.50", "stock": None, "code_pattern": pattern}
    body = json.dumps({"products": [product]}).encode()
    result = _driver().parse_catalog(HttpResponse(200, {}, body))
    assert isinstance(result, Failure) != ok, result
