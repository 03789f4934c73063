"""A burst worker: Locust users that place the scheduled orders; the gevent executor.

Imports Locust, which monkey-patches the process with gevent: only
:mod:`harness.run.burst` and the ``burst``/``worker`` commands import this module.

One :class:`BurstWorker` per worker process (or the only one, in a single-process burst)
holds this worker's share of the schedule, one queue per supplier. Each Locust user
(:class:`OrderUser`, a ``FastHttpUser``) is a *slot*: it is bound to one supplier, claims
that supplier's next arrival, sleeps until it is due, and takes the order's first step
(plan, reserve, the first POST) through Locust's gevent client. If no slot is free when
an arrival is due, it starts late: a ``schedule_slip`` event records by how much, and
every latency is still measured from the intended start (no coordinated omission). The
rest of the order runs in its own greenlet, so a slot is held only while a first POST
is in flight. Every rule of the order is in :mod:`harness.run.lifecycle`, the same as in
trials; this module only schedules and drives it.

Delivered codes are checked (pattern, duplicate, face value, issuer, expiry; never
redeemed) once this worker has sent all of its arrivals, so checking never steals the
schedule. Balances are read by the master, before and after the burst.

Events are JSON lines sent to the master in batches (``tb_events``, every 0.2 s), which
appends them to ``events-<worker>.jsonl`` in the run folder; live counters go as
``tb_stats`` every second. Nothing here raises for what a supplier does.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool
from locust import FastHttpUser, task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment

from harness.codes import DuplicateIndex, load_code_key
from harness.drivers.base import Credentials
from harness.drivers.reference import ReferenceIssuer, build_driver
from harness.events import format_event
from harness.run.budget import Budget, RetryBudget
from harness.run.callbacks import GeventCallbackReceiver, RawCallback
from harness.run.gevent_transport import drive, quick_ack, send_request
from harness.run.lifecycle import OrderLife, Rules, Send, SupplierSide, callback_supplier
from harness.run.schedule import Arrival, build_schedule
from harness.runfolder import earlier_code_hashes
from harness.scenario import BurstPlan, Scenario, SupplierConfig, load_scenario

EVENT_FLUSH_S = 0.2
STATS_EVERY_S = 1.0
FOLLOW_POOL_CONNECTIONS = 200
CODE_CHECKERS = 16
"""Code checks in flight at once, once placing is done."""

Emit = Callable[[str, dict[str, Any]], None]
"""How a worker sends a message (``tb_events``, ``tb_stats`` ...) to the master."""
FINAL_STATES = ("success", "partial", "failed", "refunded", "unknown", "skipped")


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

    def tally(self, key: str, value: float | None) -> None:
        """Count one lifecycle tally (see :data:`harness.run.lifecycle.TALLY_KEYS`)."""
        if key == "sent":
            self.sent += 1
        elif key == "accepted":
            self.accepted += 1
            if value is not None:
                self.acceptance_ms.append(round(value, 3))
        elif key == "delivered":
            self.delivered += 1
            if value is not None:
                self.delivery_ms.append(round(value, 3))
        elif key == "post_error":
            self.post_errors += 1
        elif key.startswith("error:"):
            self.errors[key[6:]] += 1
        elif key in FINAL_STATES:
            self.final += 1

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


class SupplierBurst:
    """One supplier as this worker sees it: its lifecycle side and its queue of arrivals."""

    def __init__(self, side: SupplierSide, config: SupplierConfig,
                 arrivals: Iterable[Arrival]) -> None:
        self.side = side
        self.config = config
        self.name = config.name
        self.queue: deque[Arrival] = deque(arrivals)
        self.total = len(self.queue)
        self.slots = 0
        self.live = LiveCounts()

    def tally(self, _supplier: str, key: str, value: float | None) -> None:
        """The lifecycle's live counters go to this worker's next ``tb_stats``."""
        self.live.tally(key, value)


def supplier_sides(scenario: Scenario, plan: BurstPlan, *, log: Any, budget: Budget,
                   worker: str, code_key: bytes = b"",
                   duplicates: DuplicateIndex | None = None) -> dict[str, SupplierSide]:
    """A lifecycle side per supplier of a burst (workers for orders, the master for
    balances)."""
    rules = Rules.of(plan, follow_s=plan.follow_for_s)
    issuer = None
    if scenario.issuer is not None:
        issuer = ReferenceIssuer(scenario.issuer.base_url,
                                 scenario.issuer.api_key.get_secret_value())
    shared = duplicates if duplicates is not None else DuplicateIndex()
    return {config.name: SupplierSide(
        name=config.name, driver=build_driver(config.driver, config.base_url, Credentials(
            config.credentials.api_key.get_secret_value(),
            config.credentials.secret.get_secret_value())),
        rules=rules, log=log, budget=budget,
        retry=RetryBudget(plan.retries.ratio, plan.retries.reserve),
        clock=time.time, mode="burst", worker=worker, issuer=issuer, code_key=code_key,
        duplicates=shared, rng=random.Random(f"{scenario.seed}:{config.name}:{worker}"))
        for config in scenario.suppliers}


class BurstWorker:
    """This process's part of a burst; see the module docstring."""

    def __init__(self, environment: Environment, send: Emit) -> None:
        self.environment = environment
        self.send = send
        self.id = "w0"
        self.ready = gevent.event.Event()
        self.stopping = False
        self.done_sent = False
        self.log = ShardLog()
        self.suppliers: dict[str, SupplierBurst] = {}
        self.orders = gevent.pool.Group()
        self.checkers = gevent.pool.Pool(CODE_CHECKERS)
        self.to_check: deque[OrderLife] = deque()
        self.waiting = 0  # users that claimed an arrival and wait for it to be due
        self.posting = 0  # first POSTs in flight
        self.unissued: Counter[str] = Counter()
        self.t0 = 0.0
        self.plan: BurstPlan | None = None
        self.scenario: Scenario | None = None
        self.budget = Budget(Decimal(0))
        self.session: FastHttpSession | None = None
        self.receiver: GeventCallbackReceiver | None = None
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
        root = Path(data["results_root"]) if data.get("results_root") else None
        code_key = load_code_key(root) if root is not None and root.is_dir() else \
            os.environ.get("TRIALBENCH_CODE_KEY", "").encode() or os.urandom(32)
        duplicates = DuplicateIndex(earlier_code_hashes(root) if root is not None else ())
        sides = supplier_sides(scenario, plan, log=self.log, budget=self.budget,
                               worker=self.id, code_key=code_key, duplicates=duplicates)
        share = build_schedule(scenario).share(index, count)
        for config in scenario.suppliers:
            burst = SupplierBurst(sides[config.name], config,
                                  (a for a in share if a.supplier == config.name))
            burst.side.tally = burst.tally
            self.suppliers[config.name] = burst
        OrderUser.network_timeout = plan.request_timeout_s
        OrderUser.connection_timeout = plan.request_timeout_s
        self.session = quick_ack(FastHttpSession(
            base_url=None, request_event=self.environment.events.request, user=None,
            network_timeout=plan.request_timeout_s, connection_timeout=plan.request_timeout_s,
            max_retries=0, concurrency=FOLLOW_POOL_CONNECTIONS))
        if plan.delivery in ("callback", "both"):
            self.receiver = GeventCallbackReceiver(self.on_callback, on_reject=self._rejected)
            base = self.receiver.start()
            for burst in self.suppliers.values():
                burst.side.callback_url = f"{base}/callbacks/{burst.name}"
        self.log.write("burst_worker_started", worker=self.id, index=index, count=count,
                       pid=os.getpid(), host=socket.gethostname(), t0=self.t0,
                       arrivals=len(share), budget=self.budget.cap,
                       callback_url=self.receiver.url if self.receiver else None)
        self._loops = [gevent.spawn(self._flush_loop), gevent.spawn(self._stats_loop)]
        gevent.spawn(self._read_catalogs)

    def _read_catalogs(self) -> None:
        assert self.session is not None
        for burst in self.suppliers.values():
            if burst.total:
                drive(self.session, burst.side.read_catalog(), label=burst.name)
        self.ready.set()

    def on_callback(self, raw: RawCallback) -> int:
        name = callback_supplier(raw.path)
        burst = self.suppliers.get(name) if name is not None else None
        if burst is None:
            self.log.write("callback_received", supplier="", client_order_id="",
                           verdict="unknown_supplier", path=raw.path[:100], worker=self.id)
            return 404
        return burst.side.on_callback(raw.method, raw.path, raw.headers, raw.body)

    def _rejected(self, reason: str, path: str) -> None:
        self.log.write("callback_received", supplier="", client_order_id="",
                       verdict=f"rejected_{reason}", path=path[:100], worker=self.id)

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
        """In a user's greenlet: wait until due, take the order's first step (plan, reserve,
        first POST) with this slot's client, hand the rest to the order's own greenlet."""
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
            started = time.time()
            product = supplier.config.product(arrival.sku)
            cid = f"{self.prefix}-{supplier.name}-{arrival.index:07d}"[:64]
            life = supplier.side.new_order(cid, product, intended, started_at=started,
                                           phase=arrival.phase, index=arrival.index)
            slip_ms = (started - intended) * 1000
            if slip_ms > plan.slip_warning_ms:
                supplier.live.slipped += 1
                self.log.write("schedule_slip", worker=self.id, supplier=supplier.name,
                               client_order_id=cid, intended_at=intended, started_at=started,
                               slip_ms=round(slip_ms, 3))
            steps = life.steps(check_codes=False)
            try:
                first = next(steps)
            except StopIteration:
                return  # the cap did not allow it: final "skipped" is written
            assert isinstance(first, Send)
            response = send_request(client, first.request, f"{supplier.name} place")
        finally:
            self.posting -= 1
        self.orders.spawn(self._continue, supplier, life, steps, response)

    def _continue(self, supplier: SupplierBurst, life: OrderLife, steps: Any,
                  first: Any) -> None:
        """In the order's own greenlet: the rest of the lifecycle, then queue its codes."""
        assert self.session is not None
        news = gevent.event.Event()
        life.wake = news.set
        try:
            drive(self.session, steps, label=supplier.name, news=news, first=first)
        finally:
            life.finish("unknown", interrupted=True)  # a no-op unless killed by a stop
            life.wake = _nothing
        if life.order is not None and life.order.state.delivered:
            self.to_check.append(life)

    def _check_codes(self) -> None:
        """Check queued codes, at most CODE_CHECKERS at once (after placing is done)."""
        assert self.session is not None
        session = self.session
        while self.to_check and self.checkers.free_count():
            life = self.to_check.popleft()
            self.checkers.spawn(drive, session, life.check_codes(),
                                label=f"{life.side.name}")

    # ------------------------------------------------------------------ reporting

    def _flush(self) -> None:
        lines = self.log.take()
        if lines:
            self.send("tb_events", {"worker": self.id, "lines": lines})

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(EVENT_FLUSH_S)
            if self.placing_done:
                self._check_codes()
            self._flush()
            if not self.done_sent and self.placing_done and not len(self.orders) \
                    and not self.to_check and not len(self.checkers):
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
        retries = {b.name: {"first": b.side.retry.first, "extra": b.side.retry.extra,
                            "denied": b.side.retry.denied} for b in self.suppliers.values()}
        self.log.write("burst_worker_finished", worker=self.id, unissued=dict(self.unissued),
                       committed=self.budget.committed, cap=self.budget.cap, retries=retries)
        self._flush()
        self.send("tb_done", {"worker": self.id})

    def stop(self, grace_s: float) -> None:
        """Issue nothing more; give orders in flight ``grace_s`` to finish, then end them
        (each still gets its ``order_final``, state unknown, interrupted). Codes already
        delivered are still checked."""
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


def _nothing() -> None:
    """A finished order's ``wake``: late callbacks have nobody to wake."""


class OrderUser(FastHttpUser):
    """One slot of concurrency, bound to one supplier: claim, wait until due, POST."""

    host = "http://127.0.0.1"
    max_retries = 0
    concurrency = 1

    def on_start(self) -> None:
        self.supplier: SupplierBurst | None = None
        quick_ack(self.client)

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


__all__ = ["BurstWorker", "LiveCounts", "OrderUser", "run_worker", "supplier_sides"]
