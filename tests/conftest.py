"""Shared fixtures: the simulator served on 127.0.0.1:0 and signed clients for its suppliers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.protocol import FINAL_ORDER_STATES, signed_headers
from harness.simulator.process import SimulatorProcess, start_simulator
from harness.simulator.profiles import Fleet, load_fleet

DATA = Path(__file__).parent / "data"
TEST_FLEET = DATA / "fleet-test.yaml"


class SupplierClient:
    """Signed requests to one simulated supplier (test helper, loopback only)."""

    def __init__(self, sim: SimulatorProcess, fleet: Fleet, name: str) -> None:
        profile = fleet.suppliers[name]
        self.name = name
        self.base_path = f"/suppliers/{name}"
        self.api_key = profile.api_key
        self.secret = profile.secret
        self.http = httpx.Client(base_url=sim.url, timeout=10.0, trust_env=False)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                api_key: str | None = None, secret: str | None = None,
                timestamp_ms: int | None = None) -> httpx.Response:
        """Send a signed request; ``path`` is relative to the supplier's base path."""
        content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        full = self.base_path + path
        headers = signed_headers(api_key or self.api_key, secret or self.secret, method, full,
                                 content, timestamp_ms=timestamp_ms)
        return self.http.request(method, full, content=content, headers=headers)

    def order(self, coid: str, sku: str = "card-10", quantity: int = 1,
              account: str | None = None, callback_url: str | None = None) -> httpx.Response:
        """``POST /v1/orders``."""
        return self.request("POST", "/v1/orders", {
            "client_order_id": coid, "sku": sku, "quantity": quantity, "account": account,
            "callback_url": callback_url})

    def balance(self) -> str:
        """The balance string."""
        value: str = self.request("GET", "/v1/balance").json()["balance"]
        return value

    def wait_final(self, coid: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Poll the order until it is final; returns the Order object."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.request("GET", f"/v1/orders/{coid}")
            if response.status_code == 200:
                order: dict[str, Any] = response.json()["order"]
                if order["state"] in FINAL_ORDER_STATES:
                    return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {coid} not final after {timeout_s} s")
            time.sleep(0.02)


@pytest.fixture(scope="session")
def test_fleet() -> Fleet:
    """The validated test fleet."""
    return load_fleet(TEST_FLEET)


@pytest.fixture(scope="session")
def sim_process() -> Iterator[SimulatorProcess]:
    """One simulator subprocess for the session, serving tests/data/fleet-test.yaml."""
    with start_simulator(TEST_FLEET) as sim:
        yield sim


@pytest.fixture
def sim(sim_process: SimulatorProcess) -> SimulatorProcess:
    """The session simulator, reset to its initial state for this test."""
    sim_process.reset()
    return sim_process


@pytest.fixture
def client(sim: SimulatorProcess, test_fleet: Fleet) -> Iterator[Any]:
    """A factory of signed clients by supplier name, closed after the test."""
    made: list[SupplierClient] = []

    def make(name: str) -> SupplierClient:
        made.append(SupplierClient(sim, test_fleet, name))
        return made[-1]

    yield make
    for c in made:
        c.http.close()
