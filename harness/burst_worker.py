"""A burst worker: Locust users that place the scheduled orders, and the order loop.

Imports Locust, which monkey-patches the process with gevent: only ``harness.burst`` and
the ``burst``/``worker`` commands import this module.

One :class:`BurstWorker` per worker process (or the only one, in a single-process burst)
holds this worker's share of the schedule, one queue per supplier. Each Locust user
(:class:`OrderUser`, a ``FastHttpUser``) is a *slot*: it is bound to one supplier, claims
that supplier's next arrival, sleeps until it is due, writes ``order_planned`` (with the
intended start) and sends the POST through Locust's gevent client. If no slot is free
when an arrival is due, it starts late: a ``schedule_slip`` event records by how much,
and every latency is still measured from the intended start (no coordinated omission).
The rest of the order (429 back-off, unknown outcomes asked by id through a not-found
window and never re-POSTed under a new id, following to delivery by polling and/or
callbacks) runs in its own greenlet, so a slot is held only while a POST is in flight.
The logic and the events mirror ``harness.trial``.

Events are JSON lines sent to the master in batches (``tb_events``, every 0.2 s), which
appends them to ``events-<worker>.jsonl`` in the run folder; live counters go as
``tb_stats`` every second. Nothing here raises for what a supplier does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import gevent
import gevent.event
import gevent.pool
from gevent.pywsgi import WSGIServer
from locust import FastHttpUser, task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment

from harness.budget import Budget
from harness.burst_schedule import Arrival, build_schedule
from harness.drivers.base import (
    Credentials,
    Failure,
    HttpRequest,
    HttpResponse,
    Order,
    OrderRequest,
    Product,
    supersedes,
)
from harness.drivers.reference import ReferenceDriver, build_driver
from harness.events import accepted_fields, final_fields, format_event
from harness.scenario import BurstPlan, ProductConfig, Scenario, SupplierConfig, load_scenario
from harness.transport import retry_delay_s

MAX_PLACE_ROUNDS = 3
"""POSTs of one client order id at most (as in trials); a repeat is always the same id."""

EVENT_FLUSH_S = 0.2
STATS_EVERY_S = 1.0
FOLLOW_POOL_CONNECTIONS = 200

Send = Callable[[str, dict[str, Any]], None]
logger = logging.getLogger("trialbench.burst")


def error_bucket(kind: str, status: int) -> str:
    """The live view's (and the timeline's) error column for a failed request."""
    if status == 429:
        return "429"
    if status == 503:
        return "503"
    if status >= 500:
        return "5xx"
    if status == 0:
        return "timeout" if kind == "timeout" else "connect"
    if "out_of_stock" in kind:
        return "out_of_stock"
    return "other"


class ShardLog:
    """The worker's event log: lines formatted as :class:`harness.events.EventLog` writes
    them, buffered until the next flush to the master."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def write(self, type_: str, /, **fields: Any) -> None:
        self._lines.append(format_event(type_, fields))

    def take(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines


@dataclass
class LiveCounts:
    """Counters for the live view, since the last ``tb_stats``."""

    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    final: int = 0
    slipped: int = 0
    post_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    acceptance_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)

    def add(self, counts: Mapping[str, Any]) -> None:
        """Add one ``tb_stats`` report (a :meth:`data` dict) to these counters."""
        self.sent += counts["sent"]
        self.accepted += counts["accepted"]
        self.delivered += counts["delivered"]
        self.final += counts["final"]
        self.slipped += counts["slipped"]
        self.post_errors += counts["post_errors"]
        self.errors.update(counts["errors"])
        self.acceptance_ms.extend(counts["acceptance_ms"])
        self.delivery_ms.extend(counts["delivery_ms"])

    def data(self) -> dict[str, Any]:
        return {"sent": self.sent, "accepted": self.accepted, "delivered": self.delivered,
                "final": self.final, "slipped": self.slipped, "post_errors": self.post_errors,
                "errors": dict(self.errors), "acceptance_ms": self.acceptance_ms,
                "delivery_ms": self.delivery_ms}


@dataclass
class BurstOrder:
    """What the worker knows about one order while placing and following it."""

    supplier: SupplierBurst
    arrival: Arrival
    client_order_id: str
    product: ProductConfig
    listed_price: Decimal
    intended_at: float
    deadline_at: float
    follow_until: float
    reserved: Decimal = Decimal(0)
    order: Order | None = None
    delivered_seen_at: float | None = None
    accepted: bool = False
    final_state: str = "unknown"
    finalized: bool = False
    changed: gevent.event.Event = field(default_factory=gevent.event.Event)

    def offer(self, order: Order) -> bool:
        """Take ``order`` if it is a newer view (see :func:`supersedes`)."""
        if not supersedes(order, self.order):
            return False
        self.order = order
        if order.state.delivered and self.delivered_seen_at is None:
            self.delivered_seen_at = time.time()
        self.changed.set()
        return True


class SupplierBurst:
    """One supplier as this worker sees it: driver, catalog prices, its queue of arrivals."""

    def __init__(self, worker: BurstWorker, config: SupplierConfig,
                 arrivals: Iterable[Arrival]) -> None:
        self.worker = worker
        self.config = config
        self.name = config.name
        self.driver: ReferenceDriver = build_driver(config.driver, config.base_url, Credentials(
            config.credentials.api_key.get_secret_value(),
            config.credentials.secret.get_secret_value()))
        self.queue: deque[Arrival] = deque(arrivals)
        self.total = len(self.queue)
        self.catalog: dict[str, Product] = {}
        self.slots = 0
        self.orders: dict[str, BurstOrder] = {}
        self.live = LiveCounts()


class BurstWorker:
    """This process's part of a burst; see the module docstring."""

    def __init__(self, environment: Environment, send: Send) -> None:
        self.environment = environment
        self.send = send
        self.id = "w0"
        self.ready = gevent.event.Event()
        self.stopping = False
        self.done_sent = False
        self.log = ShardLog()
        self.suppliers: dict[str, SupplierBurst] = {}
        self.orders = gevent.pool.Group()
        self.waiting = 0  # users that claimed an arrival and wait for it to be due
        self.posting = 0  # first POSTs in flight
        self.unissued: Counter[str] = Counter()
        self.t0 = 0.0
        self.plan: BurstPlan | None = None
        self.scenario: Scenario | None = None
        self.budget = Budget(Decimal(0))
        self.session: FastHttpSession | None = None
        self.receiver: WSGIServer | None = None
        self.callback_base = ""
        self._loops: list[gevent.Greenlet] = []

    # ------------------------------------------------------------------ setup

    def configure(self, data: Mapping[str, Any], scenario: Scenario | None = None) -> None:
        """Take the master's plan: scenario, this worker's index of N, t0, id prefix."""
        if scenario is None:
            scenario = _scenario_from_text(data["scenario_text"], data["scenario_name"])
        plan = scenario.burst
        if plan is None:
            raise ValueError("scenario has no burst: section")
        self.scenario, self.plan = scenario, plan
        index, count = int(data["index"]), int(data["count"])
        self.id = f"w{index}"
        self.t0 = float(data["t0"])
        self.prefix = str(data["order_prefix"])
        self.budget = Budget((plan.spending_cap / count).quantize(Decimal("0.01")))
        share = build_schedule(scenario).share(index, count)
        for config in scenario.suppliers:
            self.suppliers[config.name] = SupplierBurst(
                self, config, (a for a in share if a.supplier == config.name))
        OrderUser.network_timeout = plan.request_timeout_s
        OrderUser.connection_timeout = plan.request_timeout_s
        self.session = FastHttpSession(
            base_url=None, request_event=self.environment.events.request, user=None,
            network_timeout=plan.request_timeout_s, connection_timeout=plan.request_timeout_s,
            max_retries=0, concurrency=FOLLOW_POOL_CONNECTIONS)
        if plan.delivery in ("callback", "both"):
            self._start_receiver()
        self.log.write("burst_worker_started", worker=self.id, index=index, count=count,
                       pid=os.getpid(), host=socket.gethostname(), t0=self.t0,
                       arrivals=len(share), budget=self.budget.cap,
                       callback_url=self.callback_base or None)
        self._loops = [gevent.spawn(self._flush_loop), gevent.spawn(self._stats_loop)]
        gevent.spawn(self._read_catalogs)

    def _read_catalogs(self) -> None:
        assert self.session is not None
        for supplier in self.suppliers.values():
            if not supplier.total:
                continue
            response = send_request(self.session, supplier.driver.catalog(),
                                    f"{supplier.name} catalog")
            catalog = supplier.driver.parse_catalog(response)
            if isinstance(catalog, Failure):
                self.log.write("supplier_error", supplier=supplier.name, operation="catalog",
                               kind=catalog.kind, status=catalog.status, worker=self.id)
            else:
                supplier.catalog = {p.sku: p for p in catalog}
                self.log.write("catalog_read", supplier=supplier.name, worker=self.id,
                               products=[{"sku": p.sku, "price": p.price, "stock": p.stock,
                                          "face_value": p.face_value} for p in catalog])
        self.ready.set()

    def _start_receiver(self) -> None:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            path = environ.get("PATH_INFO", "")
            if environ.get("QUERY_STRING"):
                path += "?" + environ["QUERY_STRING"]
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            body = environ["wsgi.input"].read(length) if 0 < length <= 1 << 20 else b""
            headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items()
                       if k.startswith("HTTP_")}
            status = 405 if environ.get("REQUEST_METHOD") != "POST" else \
                self.on_callback(path, headers, body)
            start_response(f"{status} {'OK' if status == 200 else 'Error'}",
                           [("Content-Length", "0")])
            return [b""]

        quiet = logging.getLogger("trialbench.burst.receiver")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self.receiver = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=quiet)
        self.receiver.start()
        self.callback_base = f"http://127.0.0.1:{self.receiver.server_port}/callbacks"

    # ------------------------------------------------------------------ slots

    def assign_slot(self) -> SupplierBurst | None:
        """Bind a new user to the supplier with the fewest slots for its share of arrivals."""
        open_ = [s for s in self.suppliers.values() if s.total]
        if not open_:
            return None
        pick = min(open_, key=lambda s: (s.slots / s.total, -s.total))
        pick.slots += 1
        return pick

    def claim(self, supplier: SupplierBurst) -> Arrival | None:
        if self.stopping or not supplier.queue:
            return None
        self.waiting += 1
        return supplier.queue.popleft()

    @property
    def placing_done(self) -> bool:
        """Every arrival of this worker has been sent (or dropped by a stop)."""
        return self.ready.is_set() and self.waiting == 0 and self.posting == 0 and (
            self.stopping or not any(s.queue for s in self.suppliers.values()))

    # ------------------------------------------------------------------ one order

    def run_arrival(self, supplier: SupplierBurst, arrival: Arrival,
                    client: FastHttpSession) -> None:
        """In a user's greenlet: wait until due, plan, POST once, hand the rest off."""
        plan = self.plan
        assert plan is not None
        intended = self.t0 + arrival.at_s
        try:
            delay = intended - time.time()
            if delay > 0:
                gevent.sleep(delay)
            if self.stopping:
                self.unissued[supplier.name] += 1
                return
            self.posting += 1
        finally:
            self.waiting -= 1
        try:
            order = self._begin(supplier, arrival, intended)
            if order is None:
                return
            request = self._order_request(order)
            self.log.write("order_attempt", supplier=supplier.name,
                           client_order_id=order.client_order_id, attempt=1, method="POST")
            supplier.live.sent += 1
            response = send_request(client, supplier.driver.place_order(request),
                                    f"{supplier.name} POST /v1/orders")
        finally:
            self.posting -= 1
        self.orders.spawn(self._continue, order, response)

    def _begin(self, supplier: SupplierBurst, arrival: Arrival,
               intended: float) -> BurstOrder | None:
        plan = self.plan
        assert plan is not None
        started = time.time()
        product = supplier.config.product(arrival.sku)
        listed = supplier.catalog.get(product.sku)
        listed_price = listed.price if listed is not None else product.face_value
        cid = f"{self.prefix}-{supplier.name}-{arrival.index:07d}"[:64]
        order = BurstOrder(supplier, arrival, cid, product, listed_price, intended,
                           intended + plan.deadline_s, intended + plan.follow_for_s)
        supplier.orders[cid] = order
        self.log.write("order_planned", mode="burst", worker=self.id, supplier=supplier.name,
                       client_order_id=cid, sku=product.sku, quantity=plan.quantity,
                       intended_at=intended, started_at=started, phase=arrival.phase,
                       index=arrival.index, deadline_s=plan.deadline_s,
                       listed_price=listed_price, sale_price=product.sale_price,
                       face_value=product.face_value)
        slip_ms = (started - intended) * 1000
        if slip_ms > plan.slip_warning_ms:
            supplier.live.slipped += 1
            self.log.write("schedule_slip", worker=self.id, supplier=supplier.name,
                           client_order_id=cid, intended_at=intended, started_at=started,
                           slip_ms=round(slip_ms, 3))
        reserved = listed_price * plan.quantity
        if not self.budget.reserve(reserved):
            self.log.write("spend_blocked", supplier=supplier.name, client_order_id=cid,
                           needed=reserved, committed=self.budget.committed,
                           cap=self.budget.cap, worker=self.id)
            self._final(order, "skipped")
            return None
        order.reserved = reserved
        return order

    def _order_request(self, order: BurstOrder) -> OrderRequest:
        plan = self.plan
        assert plan is not None
        callback_url = None
        if self.callback_base:
            callback_url = f"{self.callback_base}/{order.supplier.name}"
        return OrderRequest(order.client_order_id, order.product.sku, plan.quantity,
                            order.product.account, callback_url)

    def _continue(self, order: BurstOrder, first: HttpResponse) -> None:
        """In the order's own greenlet: finish placing, follow, settle, write the final."""
        try:
            order.accepted = self._place(order, first)
            if order.accepted:
                self._follow(order)
            current = order.order
            state = "unknown"
            if current is not None and current.state.is_final:
                state = current.state.value
            elif not order.accepted and order.final_state == "failed":
                state = "failed"
            actual = current.amount if current is not None else Decimal(0)
            self.budget.settle(order.reserved, actual if state != "unknown" else order.reserved)
            self._final(order, state)
        finally:
            if not order.finalized:  # killed by a stop: what we know is recorded
                self._final(order, "unknown", interrupted=True)

    def _send(self, order: BurstOrder, request: HttpRequest, label: str) -> HttpResponse:
        assert self.session is not None
        return send_request(self.session, request, f"{order.supplier.name} {label}")

    def _place(self, order: BurstOrder, response: HttpResponse) -> bool:
        """The trial's placing loop, starting from the first POST's answer."""
        supplier = order.supplier
        driver = supplier.driver
        rounds = 0
        attempt = 1
        while True:
            result = driver.parse_order(response)
            if not isinstance(result, Failure):
                self._accepted(order, response.status, result, via="post")
                return True
            self.log.write("order_error", supplier=supplier.name,
                           client_order_id=order.client_order_id, kind=result.kind,
                           status=result.status, phase="place")
            self._count_error(supplier, result, post=attempt == 1)
            if result.status == 429:
                gevent.sleep(min(retry_delay_s(response, attempt) or 1.0,
                                 max(0.0, order.follow_until - time.time())))
            elif not result.outcome_unknown:
                order.final_state = "failed"  # refused: nothing was bought
                return False
            else:
                rounds += 1
                if self._resolve_unknown(order):
                    return True
            if rounds >= MAX_PLACE_ROUNDS or time.time() >= order.follow_until \
                    or self.stopping:
                return False
            attempt += 1
            self.log.write("order_attempt", supplier=supplier.name,
                           client_order_id=order.client_order_id, attempt=attempt,
                           method="POST")
            response = self._send(order, driver.place_order(self._order_request(order)),
                                  "POST /v1/orders (again)")

    def _resolve_unknown(self, order: BurstOrder) -> bool:
        """Ask by client order id, riding out a not-found window; True if it exists."""
        plan = self.plan
        assert plan is not None
        supplier = order.supplier
        window_end = min(order.follow_until, time.time() + plan.unknown_outcome_window_s)
        attempt = 0
        while time.time() < window_end:
            attempt += 1
            self.log.write("order_attempt", supplier=supplier.name,
                           client_order_id=order.client_order_id, attempt=attempt,
                           method="GET")
            response = self._send(order, supplier.driver.get_order(order.client_order_id),
                                  "GET order (resolve)")
            result = supplier.driver.parse_order(response)
            if not isinstance(result, Failure):
                self._accepted(order, response.status, result, via="get")
                return True
            self.log.write("order_error", supplier=supplier.name,
                           client_order_id=order.client_order_id, kind=result.kind,
                           status=result.status, phase="resolve")
            delay = retry_delay_s(response, attempt) or min(2.0, 0.25 * 2 ** (attempt - 1))
            gevent.sleep(min(delay, max(0.0, window_end - time.time())))
        return False

    def _follow(self, order: BurstOrder) -> None:
        """Poll with backoff and/or wait for callbacks until final or ``follow_until``."""
        plan = self.plan
        assert plan is not None
        supplier = order.supplier
        polling = plan.delivery in ("poll", "both")
        interval = plan.poll.initial_interval_s
        attempt = 0
        while not (order.order is not None and order.order.state.is_final):
            remaining = order.follow_until - time.time()
            if remaining <= 0:
                break
            order.changed.clear()
            if order.changed.wait(min(interval, remaining) if polling else remaining):
                continue  # a callback brought news
            if not polling:
                continue
            attempt += 1
            self.log.write("order_attempt", supplier=supplier.name,
                           client_order_id=order.client_order_id, attempt=attempt,
                           method="GET")
            response = self._send(order, supplier.driver.get_order(order.client_order_id),
                                  "GET order")
            result = supplier.driver.parse_order(response)
            if isinstance(result, Failure):
                self.log.write("order_error", supplier=supplier.name,
                               client_order_id=order.client_order_id, kind=result.kind,
                               status=result.status, phase="follow")
                self._count_error(supplier, result, post=False)
                delay = retry_delay_s(response, attempt)
                if delay is not None:
                    interval = max(interval, delay)
            else:
                self._observe(order, result, "poll")
            interval = min(plan.poll.max_interval_s, interval * plan.poll.backoff_factor)
        if not polling and not (order.order is not None and order.order.state.is_final):
            # callbacks only: one last look, so the recorded state is the real one
            response = self._send(order, supplier.driver.get_order(order.client_order_id),
                                  "GET order")
            result = supplier.driver.parse_order(response)
            if not isinstance(result, Failure):
                self._observe(order, result, "poll")

    def _accepted(self, order: BurstOrder, status: int, current: Order, *, via: str) -> None:
        """The supplier holds the order (learnt from the POST, or by asking after one)."""
        self.log.write("order_accepted", supplier=order.supplier.name,
                       client_order_id=order.client_order_id,
                       **accepted_fields(current, status, via))
        live = order.supplier.live
        live.accepted += 1
        live.acceptance_ms.append(round((time.time() - order.intended_at) * 1000, 3))
        self._observe(order, current, "post" if via == "post" else "poll")

    def _count_error(self, supplier: SupplierBurst, failure: Failure, *, post: bool) -> None:
        supplier.live.errors[error_bucket(failure.kind, failure.status)] += 1
        if post:
            supplier.live.post_errors += 1

    def _observe(self, order: BurstOrder, current: Order, source: str) -> None:
        was_delivered = order.delivered_seen_at is not None
        if order.offer(current):
            self.log.write("order_observed", supplier=order.supplier.name,
                           client_order_id=order.client_order_id, state=current.state.value,
                           updated_at=current.updated_at, source=source)
            if not was_delivered and order.delivered_seen_at is not None:
                order.supplier.live.delivered += 1
                order.supplier.live.delivery_ms.append(
                    round((order.delivered_seen_at - order.intended_at) * 1000, 3))

    def _final(self, order: BurstOrder, state: str, *, interrupted: bool = False) -> None:
        order.final_state = state
        order.finalized = True
        order.supplier.live.final += 1
        self.log.write("order_final", supplier=order.supplier.name,
                       client_order_id=order.client_order_id,
                       **final_fields(order.order, state, order.delivered_seen_at,
                                      order.deadline_at),
                       accepted=order.accepted, interrupted=interrupted or None)

    # ------------------------------------------------------------------ callbacks

    def on_callback(self, path: str, headers: dict[str, str], body: bytes) -> int:
        name = path.split("?", 1)[0].rsplit("/", 1)[-1]
        supplier = self.suppliers.get(name)
        if supplier is None or not path.startswith("/callbacks/"):
            self.log.write("callback_received", supplier="", client_order_id="",
                           verdict="unknown_supplier", path=path[:100], worker=self.id)
            return 404
        event = supplier.driver.verify_callback("POST", path, headers, body)
        if isinstance(event, Failure):
            verdict = "forged" if event.kind == "forged_callback" else "bad"
            self.log.write("callback_received", supplier=name, client_order_id="",
                           verdict=verdict, reason=event.message, worker=self.id)
            return 401 if verdict == "forged" else 400
        order = supplier.orders.get(event.order.client_order_id)
        if order is None:
            self.log.write("callback_received", supplier=name,
                           client_order_id=event.order.client_order_id,
                           verdict="unknown_order", event=event.event, worker=self.id)
            return 200
        was_delivered = order.delivered_seen_at is not None
        accepted = order.offer(event.order)
        self.log.write("callback_received", supplier=name,
                       client_order_id=order.client_order_id,
                       verdict="accepted" if accepted else "stale", event=event.event,
                       state=event.order.state.value, updated_at=event.order.updated_at)
        if accepted:
            self.log.write("order_observed", supplier=name,
                           client_order_id=order.client_order_id,
                           state=event.order.state.value, updated_at=event.order.updated_at,
                           source="callback")
            if not was_delivered and order.delivered_seen_at is not None:
                supplier.live.delivered += 1
                supplier.live.delivery_ms.append(
                    round((order.delivered_seen_at - order.intended_at) * 1000, 3))
        return 200

    # ------------------------------------------------------------------ reporting

    def _flush(self) -> None:
        lines = self.log.take()
        if lines:
            self.send("tb_events", {"worker": self.id, "lines": lines})

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(EVENT_FLUSH_S)
            self._flush()
            if not self.done_sent and self.placing_done and not len(self.orders):
                self._done()

    def _stats(self) -> None:
        suppliers = {}
        for supplier in self.suppliers.values():
            suppliers[supplier.name] = supplier.live.data()
            supplier.live = LiveCounts()
        self.send("tb_stats", {"worker": self.id, "suppliers": suppliers,
                               "committed": str(self.budget.committed),
                               "in_flight": len(self.orders), "waiting": self.waiting,
                               "placing_done": self.placing_done})

    def _stats_loop(self) -> None:
        while True:
            gevent.sleep(STATS_EVERY_S)
            self._stats()

    def _done(self) -> None:
        self.done_sent = True
        self._stats()
        self.log.write("burst_worker_finished", worker=self.id, unissued=dict(self.unissued),
                       committed=self.budget.committed, cap=self.budget.cap)
        self._flush()
        self.send("tb_done", {"worker": self.id})

    def stop(self, grace_s: float) -> None:
        """Issue nothing more; give orders in flight ``grace_s`` to finish, then end them
        (each still gets its ``order_final``, state unknown, interrupted)."""
        if not self.stopping:
            self.stopping = True
            for supplier in self.suppliers.values():
                self.unissued[supplier.name] += len(supplier.queue)
                supplier.queue.clear()
            self.log.write("burst_worker_stopping", worker=self.id, grace_s=grace_s,
                           in_flight=len(self.orders))

        def end() -> None:
            if grace_s > 0:
                self.orders.join(timeout=grace_s)
            self.orders.kill(block=True, timeout=5)

        gevent.spawn(end)

    def close(self) -> None:
        """Stop the loops and the receiver; flush what is left."""
        for loop in self._loops:
            loop.kill(block=False)
        if self.receiver is not None:
            self.receiver.stop(timeout=1)
        self._flush()


def send_request(session: FastHttpSession, request: HttpRequest, name: str) -> HttpResponse:
    """Send a driver's request through Locust's gevent client; never raises for the network."""
    start = time.perf_counter()
    try:
        with session.request(request.method, request.url, name=name,
                             data=cast(Any, request.body or None), headers=dict(request.headers),
                             catch_response=True) as reply:
            status = int(reply.status_code or 0)
            if status == 0:
                error = getattr(reply, "error", None)
                reply.failure(f"no answer: {type(error).__name__}")
                kind = "timeout" if isinstance(error, gevent.Timeout | TimeoutError) \
                    else f"connect_error:{type(error).__name__}"
                return HttpResponse(0, {}, b"", (time.perf_counter() - start) * 1000, kind)
            body = reply.content or b""
            headers = {str(k).lower(): str(v) for k, v in (reply.headers or {}).items()}
            if 200 <= status < 300:
                reply.success()
            else:
                reply.failure(f"HTTP {status}")
            return HttpResponse(status, headers, body, (time.perf_counter() - start) * 1000)
    except Exception as exc:  # a transport bug must be data, not a dead greenlet
        return HttpResponse(0, {}, b"", (time.perf_counter() - start) * 1000,
                            f"connect_error:{type(exc).__name__}")


class OrderUser(FastHttpUser):
    """One slot of concurrency, bound to one supplier: claim, wait until due, POST."""

    host = "http://127.0.0.1"
    max_retries = 0
    concurrency = 1

    def on_start(self) -> None:
        self.supplier: SupplierBurst | None = None

    @task
    def next_order(self) -> None:
        worker: BurstWorker | None = getattr(self.environment, "trialbench_worker", None)
        if worker is None or not worker.ready.wait(0.5):
            return
        if self.supplier is None:
            self.supplier = worker.assign_slot()
            if self.supplier is None:
                gevent.sleep(1)
                return
        arrival = worker.claim(self.supplier)
        if arrival is None:
            gevent.sleep(0.2)
            return
        worker.run_arrival(self.supplier, arrival, self.client)

    def wait_time(self) -> float:
        return 0.0


def _scenario_from_text(text: str, name: str) -> Scenario:
    """Validate the master's scenario with this machine's environment (credentials)."""
    with tempfile.TemporaryDirectory(prefix="trialbench-worker-") as tmp:
        path = Path(tmp) / Path(name).name
        path.write_text(text, encoding="utf-8")
        return load_scenario(path, dict(os.environ))


def run_worker(master_host: str, master_port: int, *, local_child: bool = False) -> int:
    """``trialbench worker``: join a master, run its share of the burst, exit on quit."""
    if local_child:  # the master handles Ctrl-C for the whole run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    environment = Environment(user_classes=[OrderUser], host=OrderUser.host)
    runner = environment.create_worker_runner(master_host, master_port)
    worker = BurstWorker(environment, lambda kind, data: runner.send_message(kind, data))
    environment.trialbench_worker = worker  # type: ignore[attr-defined]

    def on_plan(environment: Environment, msg: Any, **_: Any) -> None:
        try:
            worker.configure(msg.data)
        except Exception as exc:  # tell the master why, instead of dying silently
            runner.send_message("tb_failed", {"worker": f"w{msg.data.get('index')}",
                                              "error": f"{type(exc).__name__}: {exc}"})

    def on_stop(environment: Environment, msg: Any, **_: Any) -> None:
        worker.stop(float(msg.data.get("grace_s", 0)))

    runner.register_message("tb_plan", on_plan)
    runner.register_message("tb_stop", on_stop)
    environment.events.init.fire(  # type: ignore[no-untyped-call]
        environment=environment, runner=runner, web_ui=None)
    try:
        runner.greenlet.join()
    finally:
        worker.close()
    return 0


__all__ = ["BurstWorker", "OrderUser", "error_bucket", "run_worker", "send_request"]
