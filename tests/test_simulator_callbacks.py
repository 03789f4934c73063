"""Signed callbacks from the simulator to a real receiver on 127.0.0.1:0."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from harness.protocol import verify
from harness.simulator.process import SimulatorProcess


@dataclass
class Received:
    """One callback as the receiver saw it."""

    path: str
    timestamp: str | None
    signature: str | None
    body: bytes
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON body."""
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """A callback receiver that records everything and fails the first ``fail_next`` posts."""

    url: str
    records: list[Received] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Received]:
        """Wait until ``count`` callbacks arrived; return them all."""
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            return list(self.records)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1:0 in a thread, recording callbacks."""
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            rec = state[0]
            with rec.lock:
                status = 500 if rec.fail_next > 0 else 200
                rec.fail_next = max(0, rec.fail_next - 1)
                rec.records.append(Received(self.path, self.headers.get("x-timestamp"),
                                            self.headers.get("x-signature"), body, status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    state.append(Receiver(url=f"http://127.0.0.1:{port}/hooks/trialbench?tag=t1"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_callbacks_signed_on_every_change(client: Any, receiver: Receiver) -> None:
    """Each state change is POSTed, signed over POST + the callback path with query."""
    good = client("good")
    for i in range(6):  # half are synchronous; find an asynchronous order
        order = good.order(f"cb-{i}", callback_url=receiver.url).json()["order"]
        if order["state"] == "submitted":
            break
    coid = order["client_order_id"]
    good.wait_final(coid)
    good.request("POST", f"/v1/orders/{coid}/refund",
                 {"reason": "unused", "serials": None, "note": None})
    time.sleep(0.3)
    mine = [r for r in receiver.records if r.payload["order"]["client_order_id"] == coid]
    events = [(r.payload["event"], r.payload["order"]["state"]) for r in mine]
    assert events[:2] == [("order.updated", "processing"), ("order.updated", "success")]
    # the refund's two callbacks leave together, so they may arrive in either order
    assert sorted(events[2:]) == [("order.updated", "refunded"), ("refund.updated", "refunded")]
    for r in mine:
        assert r.path == "/hooks/trialbench?tag=t1"
        assert verify("good-secret", "POST", r.path, r.timestamp, r.body, r.signature)
        assert not verify("wrong", "POST", r.path, r.timestamp, r.body, r.signature)
    (refund_cb,) = [r for r in mine if r.payload["event"] == "refund.updated"]
    assert refund_cb.payload["order"]["refund"]["state"] == "completed"


def test_callbacks_retried_after_non_2xx(client: Any, receiver: Receiver,
                                         sim: SimulatorProcess) -> None:
    """A callback answered 500 is retried on the schedule until acknowledged."""
    hooks = client("hooks")
    receiver.fail_next = 2
    order = hooks.order("rt-1", callback_url=receiver.url).json()["order"]
    assert order["state"] == "success"
    records = receiver.wait_for(3, timeout_s=3)
    time.sleep(0.2)  # nothing more may arrive after the acknowledgement
    assert [r.status for r in receiver.records] == [500, 500, 200]
    assert len({r.body for r in records}) == 1
    assert records[0].payload["order"] == order
    gaps = [float(b.timestamp or 0) - float(a.timestamp or 0)
            for a, b in itertools.pairwise(records)]
    assert gaps[0] >= 90 and gaps[1] >= 190  # schedule 0.1 s, 0.2 s (timestamps in ms)
    cb = sim.truth()["suppliers"]["hooks"]["callbacks"]
    assert (cb["events"], cb["sent"], cb["failed"], cb["acked"]) == (1, 3, 2, 1)


def test_callbacks_given_up_when_unreachable(client: Any, sim: SimulatorProcess) -> None:
    """A callback URL that never answers is tried 1 + len(schedule) times, then given up."""
    hooks = client("hooks")
    hooks.order("gu-1", callback_url="http://127.0.0.1:9/none")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        cb = sim.truth()["suppliers"]["hooks"]["callbacks"]
        if cb["given_up"]:
            break
        time.sleep(0.05)
    assert (cb["events"], cb["sent"], cb["acked"], cb["given_up"]) == (1, 4, 0, 1)
