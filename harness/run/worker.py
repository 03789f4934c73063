"""A burst worker: Locust users that place the scheduled orders; the gevent executor.

Imports Locust, which monkey-patches the process with gevent: only
:mod:`harness.run.burst` and the ``burst``/``worker`` commands import this module.

One :class:`BurstWorker` per worker process (or the only one, in a single-process burst)
holds this worker's share of the schedule, one queue per supplier. Each Locust user
(:class:`OrderUser`, a Locust ``User``) is a *slot*: it is bound to one supplier, claims
that supplier's next arrival, sleeps until it is due, and takes the order's first step
(plan, reserve, the first POST) on its own connection (:class:`GeventTransport`). If no
slot is free when an arrival is due, it starts late: a ``schedule_slip`` event records by
how much, and every latency is still measured from the intended start (no coordinated
omission). The rest of the order runs in its own greenlet, so a slot is held only while
a first POST is in flight. Every rule of the order is in :mod:`harness.run.lifecycle`,
the same as in trials; this module only schedules and drives it.

Delivered codes are checked (pattern, duplicate, face value, issuer, expiry; never
redeemed) once this worker has sent all of its arrivals, so checking never steals the
schedule. Balances are read by the master, before and after the burst.

The worker owns its shard of the event log, ``events-<worker>.jsonl`` (:class:`ShardLog`):
every event is appended with one ``write`` the moment it happens, so an order's
``order_planned`` and ``order_attempt`` are in the OS's hands before its POST goes out,
and a ``kill -9`` of the master (or of the worker, after that ``write``) loses none of
them. A worker that can see the master's run folder (a local worker, or one on a shared
file system) writes straight into it; a remote worker writes under its own
``results/<run-id>/`` and also sends its lines to the master in batches (``tb_events``,
every 0.2 s), which appends them to the same shard name in the run folder. Live counters
go as ``tb_stats`` every second; latencies in them are one report's worth, never the run's.

The worker watches the master: its ``tb_ping`` (every 0.25 s), and for a local worker its
parent process. Silent for :data:`MASTER_SILENT_S`, or gone, and the worker stops placing
at once, gives orders in flight :data:`MASTER_LOST_GRACE_S`, ends the rest as unknown
(``interrupted``), writes ``burst_worker_master_lost`` and exits (code 3).

Memory stays flat: an order leaves its supplier's ``orders`` once final (a final state
never goes back, so no callback can matter), and its codes are checked while placing once
more than :data:`CHECK_BACKLOG` wait. Nothing here raises for what a supplier does.
"""

from __future__ import annotations

import gc
import json
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
from locust import User, task
from locust.env import Environment

from harness.codes import DuplicateIndex, load_code_key
from harness.drivers.base import Credentials
from harness.drivers.reference import ReferenceIssuer, build_driver
from harness.events import event_line
from harness.run.budget import Budget, Budgets, RetryBudget, fair_share
from harness.run.callbacks import GeventCallbackReceiver, RawCallback, acknowledged
from harness.run.duplicates import CompactDuplicateIndex
from harness.run.gevent_transport import GeventTransport, PreciseWaker, drive
from harness.run.lifecycle import OrderLife, Rules, Send, SupplierSide, callback_supplier
from harness.run.schedule import Arrival, build_schedule
from harness.runfolder import earlier_code_hashes
from harness.scenario import (
    BurstPlan,
    Scenario,
    SupplierConfig,
    load_scenario,
    with_callback_url,
)

EVENT_FLUSH_S = 0.2
STATS_EVERY_S = 1.0
FOLLOW_POOL_CONNECTIONS = 200
CODE_CHECKERS = 16
"""Code checks in flight at once, once placing is done."""
CODE_CHECKERS_WHILE_PLACING = 2
"""Code checks in flight at once while placing, and only past :data:`CHECK_BACKLOG`."""
CHECK_BACKLOG = 1024
"""Delivered orders whose codes may wait for the end of placing (bounds the memory)."""
MASTER_PING_S = 0.25
"""The master sends ``tb_ping`` this often."""
MASTER_SILENT_S = 1.5
"""No word from the master for this long: it is gone (stop placing within 2 s)."""
MASTER_LOST_GRACE_S = 1.0
"""Orders in flight get this long to finish once the master is gone."""
WATCH_EVERY_S = 0.1
EXIT_MASTER_LOST = 3

Emit = Callable[[str, dict[str, Any]], None]
"""How a worker sends a message (``tb_events``, ``tb_stats`` ...) to the master."""
FINAL_STATES = ("success", "partial", "failed", "refunded", "unknown", "skipped")


class ShardLog:
    """This worker's shard of the event log: lines as :class:`harness.events.EventLog`
    writes them, each appended to ``events-<worker>.jsonl`` with one unbuffered ``write``
    (in the OS's page cache when :meth:`write` returns: a process killed after it loses
    nothing; a power cut may). With ``forward``, lines are also kept for the next batch to
    the master (:meth:`take`). Events written before :meth:`open` wait for it."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._fd: int | None = None
        self._forward = False
        self._waiting: list[bytes] = []
        self._lines: list[str] = []

    def open(self, path: Path, *, forward: bool) -> None:
        """Append to ``path`` from now on (made if missing); ``forward``: remote worker."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.path, self._forward = path, forward
        waiting, self._waiting = self._waiting, []
        for line in waiting:
            self._append(line)

    def write(self, type_: str, /, **fields: Any) -> None:
        line = event_line(type_, fields)
        if self._fd is None:
            self._waiting.append(line)
        else:
            self._append(line)

    def _append(self, line: bytes) -> None:
        assert self._fd is not None
        data = memoryview(line)
        while data:  # a regular file takes it in one write; loop in case it does not
            data = data[os.write(self._fd, data):]
        if self._forward:
            self._lines.append(line[:-1].decode())

    def take(self) -> list[str]:
        """Lines not yet sent to the master (only a forwarding shard keeps any)."""
        lines, self._lines = self._lines, []
        return lines

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class LiveCounts:
    """Counters for the live view since the last ``tb_stats`` (one report's latencies,
    ms: bounded by the rate, never by the length of the run)."""

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


def supplier_sides(scenario: Scenario, plan: BurstPlan, *, log: Any, budget: Budget | Budgets,
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
        rules=rules, log=log,
        budget=budget.of(config.name) if isinstance(budget, Budgets) else budget,
        retry=RetryBudget(plan.retries.ratio, plan.retries.reserve),
        clock=time.time, mode="burst", worker=worker, issuer=issuer, code_key=code_key,
        duplicates=shared, rng=random.Random(f"{scenario.seed}:{config.name}:{worker}"))
        for config in scenario.suppliers}


class BurstWorker:
    """This process's part of a burst; see the module docstring."""

    def __init__(self, environment: Environment, send: Emit, *,
                 local_root: Path = Path("results")) -> None:
        self.environment = environment
        self._send_to_master = send
        self.local_root = local_root
        """Where a remote worker keeps its shard (``<local_root>/<run-id>/``)."""
        self.id = "w0"
        self.ready = gevent.event.Event()
        self.configured = False
        self.stopping = False
        self.ended = False
        """Orders in flight were ended by a stop: an answer arriving now is recorded only."""
        self.done_sent = False
        self.master_lost: str | None = None
        self.last_heard = 0.0
        """``time.monotonic()`` of the master's last message (0: no plan yet)."""
        self.exit_code = 0
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
        self.budget: Budget | Budgets = Budget(Decimal(0))
        self.session: GeventTransport | None = None
        """The follow-up transport: every request of an order after its first POST."""
        self.request_event: Any = environment.events.request
        """Locust's ``events.request`` where its statistics are kept, else None."""
        self.receiver: GeventCallbackReceiver | None = None
        self._loops: list[gevent.Greenlet] = []
        self._waker: PreciseWaker | None = None

    # ------------------------------------------------------------------ setup

    def configure(self, data: Mapping[str, Any], scenario: Scenario | None = None) -> None:
        """Take the master's plan: scenario, this worker's index of N, t0, id prefix."""
        if scenario is None:
            scenario = _scenario_from_text(data["scenario_text"], data["scenario_name"])
            if data.get("callback_url"):  # the master's --callback-url
                scenario = with_callback_url(scenario, str(data["callback_url"]))
        plan = scenario.burst
        if plan is None:
            raise ValueError("scenario has no burst: section")
        self.scenario, self.plan = scenario, plan
        index, count = int(data["index"]), int(data["count"])
        self.id = f"w{index}"
        self.t0 = float(data["t0"])
        self.prefix = str(data["order_prefix"])
        run_dir, run_id = Path(str(data["run_dir"])), str(data["run_id"])
        direct = _is_run_folder(run_dir, run_id)
        self.log.open((run_dir if direct else self.local_root / run_id)
                      / f"events-{self.id}.jsonl", forward=not direct)
        share = build_schedule(scenario).share(index, count)
        names = [s.name for s in scenario.suppliers]
        weights = {name: Decimal(0) for name in names}
        for arrival in share:  # each supplier's part: what this worker will place there
            weights[arrival.supplier] += \
                scenario.supplier(arrival.supplier).product(arrival.sku).face_value
        self.budget = Budgets(fair_share(plan.spending_cap, count), names, weights)
        root = Path(data["results_root"]) if data.get("results_root") else None
        code_key = load_code_key(root) if root is not None and root.is_dir() else \
            os.environ.get("TRIALBENCH_CODE_KEY", "").encode() or os.urandom(32)
        duplicates = CompactDuplicateIndex(earlier_code_hashes(root) if root is not None
                                           else (), expected=len(share) * plan.quantity)
        sides = supplier_sides(scenario, plan, log=self.log, budget=self.budget,
                               worker=self.id, code_key=code_key, duplicates=duplicates)
        for config in scenario.suppliers:
            burst = SupplierBurst(sides[config.name], config,
                                  (a for a in share if a.supplier == config.name))
            burst.side.tally = burst.tally
            self.suppliers[config.name] = burst
        # Locust's own request statistics only where its web UI shows them (trialbench
        # keeps its own: the event log, tb_stats); off, the requests skip Locust's stats.
        self.request_event = self.environment.events.request \
            if data.get("locust_stats", True) else None
        self.session = self.transport(FOLLOW_POOL_CONNECTIONS)
        if plan.delivery in ("callback", "both"):
            self.receiver = GeventCallbackReceiver(self.on_callback, plan.callback.bind,
                                                   on_reject=self._rejected)
            base = self.receiver.start()
            if plan.callback.public_url:  # a tunnel or reverse proxy: one path per worker
                public = plan.callback.public_url.rstrip("/")
                base = public if count == 1 else f"{public}/{self.id}"
            for burst in self.suppliers.values():
                burst.side.callback_url = f"{base}/callbacks/{burst.name}"
        self.log.write("burst_worker_started", worker=self.id, index=index, count=count,
                       pid=os.getpid(), host=socket.gethostname(), t0=self.t0,
                       arrivals=len(share), budget=self.budget.cap,
                       callback_url=self.receiver.url if self.receiver else None,
                       shard=str(self.log.path), direct=direct)
        self.configured = True
        # Everything alive now (Locust, pandas/scipy pulled in by the scenario's imports,
        # the plan) lives as long as the process: out of the cyclic GC's sight, so a full
        # collection while placing takes microseconds, not the ~160 ms of ~150k objects
        # (a pause that made orders start more than 50 ms late).
        gc.freeze()
        self._loops = [gevent.spawn(self._flush_loop), gevent.spawn(self._stats_loop)]
        gevent.spawn(self._read_catalogs)

    def transport(self, connections: int) -> GeventTransport:
        """A transport with this plan's deadline and body cap, for ``connections`` at once
        per supplier (a slot's own: 1)."""
        plan = self.plan
        assert plan is not None
        return GeventTransport(plan.request_timeout_s, connections,
                               max_body_bytes=plan.max_body_bytes,
                               request_event=self.request_event)

    def _read_catalogs(self) -> None:
        """Every supplier's catalog at once (a silent one does not delay the others); the
        orders start when all have answered or given up, whatever happened."""
        session = self.session
        assert session is not None
        try:
            gevent.joinall([gevent.spawn(drive, session, burst.side.read_catalog(),
                                         label=burst.name)
                            for burst in self.suppliers.values() if burst.total])
        finally:
            self.ready.set()

    def on_callback(self, raw: RawCallback) -> int | tuple[int, bytes]:
        name = callback_supplier(raw.path)
        burst = self.suppliers.get(name) if name is not None else None
        if burst is None:
            self.log.write("callback_received", supplier="", client_order_id="",
                           verdict="unknown_supplier", path=raw.path[:100], worker=self.id)
            return 404
        side = burst.side
        return acknowledged(side, side.on_callback(raw.method, raw.path, raw.headers, raw.body))

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
                    client: GeventTransport) -> None:
        """In a user's greenlet: wait until due, take the order's first step (plan, reserve,
        first POST) with this slot's client, hand the rest to the order's own greenlet."""
        plan = self.plan
        assert plan is not None
        intended = self.t0 + arrival.at_s
        try:
            if intended > time.time():
                if self._waker is None:
                    self._waker = PreciseWaker()
                self._waker.sleep_until(intended)
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
                _forget(life)
                return  # the cap did not allow it: final "skipped" is written
            assert isinstance(first, Send)
            try:  # order_planned and order_attempt are in the shard (the OS) by now
                response = client.send(first.request, f"{supplier.name} {first.purpose}")
            except gevent.GreenletExit:  # the worker is ending: the POST's fate is unknown
                life.finish("unknown", interrupted=True)
                _forget(life)
                raise
        finally:
            self.posting -= 1
        self.orders.spawn(self._continue, supplier, life, steps, response)

    def _continue(self, supplier: SupplierBurst, life: OrderLife, steps: Any,
                  first: Any) -> None:
        """In the order's own greenlet: the rest of the lifecycle, then queue its codes.
        Once final, the order leaves its side's ``orders`` (a final state never goes back:
        no callback can matter), so nothing is kept per order after its codes are checked."""
        assert self.session is not None
        news = gevent.event.Event()
        life.wake = news.set
        try:
            if self.ended:  # a stop ended orders in flight: record this answer, go no further
                _record_answer(steps, first)
            else:
                drive(self.session, steps, label=supplier.name, news=news, first=first)
        finally:
            life.finish("unknown", interrupted=True)  # a no-op unless killed by a stop
            life.wake = _nothing
            _forget(life)
        if life.order is not None and life.order.state.delivered:
            self.to_check.append(life)

    def _check_codes(self) -> None:
        """Check queued codes: CODE_CHECKERS at once after placing; while placing, only
        what is past CHECK_BACKLOG, CODE_CHECKERS_WHILE_PLACING at once (bounded memory,
        and checking takes little from the schedule)."""
        limit = CODE_CHECKERS if self.placing_done else CODE_CHECKERS_WHILE_PLACING
        while len(self.checkers) < limit and self._check_due():
            self.checkers.spawn(self._checker)

    def _check_due(self) -> bool:
        return bool(self.to_check) and (self.placing_done
                                        or len(self.to_check) > CHECK_BACKLOG)

    def _checker(self) -> None:
        """One checker: the queue's next order's codes, for as long as checks are due."""
        assert self.session is not None
        while self._check_due():
            life = self.to_check.popleft()
            drive(self.session, life.check_codes(), label=life.side.name)

    # ------------------------------------------------------------------ reporting

    def send(self, kind: str, data: dict[str, Any]) -> None:
        """Send a message to the master; never raises (the master may be gone)."""
        if self.master_lost is not None:
            return
        try:
            self._send_to_master(kind, data)
        except Exception as exc:  # a dead master must not end this worker
            self.log.write("burst_worker_send_failed", worker=self.id, kind=kind,
                           error=f"{type(exc).__name__}: {exc}"[:200])

    def _flush(self) -> None:
        lines = self.log.take()
        if lines:
            self.send("tb_events", {"worker": self.id, "lines": lines})

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(EVENT_FLUSH_S)
            self._check_codes()
            self._flush()
            if not self.done_sent and self.master_lost is None and self.placing_done \
                    and not len(self.orders) and not self.to_check and not len(self.checkers):
                self._done()

    def _stats(self) -> None:
        suppliers = {}
        for supplier in self.suppliers.values():
            suppliers[supplier.name] = supplier.live.data()
            supplier.live = LiveCounts()
        self.send("tb_stats", {"worker": self.id, "suppliers": suppliers,
                               "committed": str(self.budget.committed),
                               "in_flight": len(self.orders), "waiting": self.waiting,
                               "placing_done": self.placing_done, "pid": os.getpid(),
                               "host": socket.gethostname()})

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

    def stop(self, grace_s: float, then: Callable[[], None] | None = None) -> gevent.Greenlet:
        """Issue nothing more; give orders in flight ``grace_s`` to finish, then end them
        (each still gets its ``order_final``, state unknown, interrupted), then ``then()``.
        Codes already delivered are still checked."""
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
            self.ended = True
            self.orders.kill(block=True, timeout=5)
            if then is not None:
                then()

        return gevent.spawn(end)

    def heard_from_master(self) -> None:
        """The master spoke (a ``tb_ping``, its plan, a stop)."""
        self.last_heard = time.monotonic()

    def master_silence(self, parent_pid: int | None) -> str | None:
        """Why the master is gone, or None: our parent process (a local worker) is not
        the master any more, or it has said nothing for :data:`MASTER_SILENT_S`."""
        if parent_pid is not None and os.getppid() != parent_pid:
            return "the master process is gone"
        if self.last_heard:
            silent = time.monotonic() - self.last_heard
            if silent > MASTER_SILENT_S:
                return f"no word from the master for {silent:.1f} s"
        return None

    def lose_master(self, reason: str, quit_: Callable[[], None]) -> None:
        """The master is gone: stop placing now, give orders in flight a short grace, end
        the rest as interrupted, write ``burst_worker_master_lost``, then ``quit_()``."""
        if self.master_lost is not None:
            return
        self.master_lost = reason
        self.exit_code = 0 if self.done_sent else EXIT_MASTER_LOST
        if not self.configured:
            quit_()
            return
        self.log.write("burst_worker_master_lost", worker=self.id, reason=reason,
                       in_flight=len(self.orders), posting=self.posting,
                       done=self.done_sent)

        def finished() -> None:
            quit_()  # ends the users: a first POST still out is finished as interrupted
            if not self.done_sent:
                self.log.write("burst_worker_finished", worker=self.id,
                               unissued=dict(self.unissued), committed=self.budget.committed,
                               cap=self.budget.cap, master_lost=reason)

        self.stop(MASTER_LOST_GRACE_S, then=finished)

    def close(self) -> None:
        """Stop the loops and the receiver; send what is left; close the shard."""
        for loop in self._loops:
            loop.kill(block=False)
        if self._waker is not None:
            self._waker.close()
        if self.receiver is not None:
            self.receiver.stop(timeout=1)
        self._flush()
        self.log.close()


def _nothing() -> None:
    """A finished order's ``wake``: late callbacks have nobody to wake."""


def _forget(life: OrderLife) -> None:
    """The order is final: its side need not hold it any more."""
    life.side.orders.pop(life.client_order_id, None)


def _record_answer(steps: Any, first: Any) -> None:
    """Feed an order's first answer to its lifecycle (so the answer is logged) and go no
    further: its next step, a wait or a request, is never taken."""
    try:
        steps.send(first)
    except StopIteration:
        pass
    finally:
        steps.close()


def _is_run_folder(run_dir: Path, run_id: str) -> bool:
    """This machine sees the master's run folder (same host, or a shared file system)."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("run_id") == run_id


class OrderUser(User):
    """One slot of concurrency, bound to one supplier: claim, wait until due, POST on the
    slot's own keep-alive connection."""

    def on_start(self) -> None:
        self.supplier: SupplierBurst | None = None
        self.transport: GeventTransport | None = None

    @task
    def next_order(self) -> None:
        worker: BurstWorker | None = getattr(self.environment, "trialbench_worker", None)
        if worker is None or not worker.ready.wait(0.5):
            return
        if self.transport is None:
            self.transport = worker.transport(1)
        if self.supplier is None:
            self.supplier = worker.assign_slot()
            if self.supplier is None:
                gevent.sleep(1)
                return
        arrival = worker.claim(self.supplier)
        if arrival is None:
            gevent.sleep(0.2)
            return
        worker.run_arrival(self.supplier, arrival, self.transport)

    def wait_time(self) -> float:
        return 0.0


def _scenario_from_text(text: str, name: str) -> Scenario:
    """Validate the master's scenario with this machine's environment (credentials)."""
    with tempfile.TemporaryDirectory(prefix="trialbench-worker-") as tmp:
        path = Path(tmp) / Path(name).name
        path.write_text(text, encoding="utf-8")
        return load_scenario(path, dict(os.environ))


def run_worker(master_host: str, master_port: int, *, local_child: bool = False,
               results_root: Path = Path("results")) -> int:
    """``trialbench worker``: join a master, run its share of the burst, exit on quit.

    Exit code 0, or 3 when the master was lost before this worker was done. A remote
    worker keeps its shard under ``results_root/<run-id>/``."""
    parent_pid = os.getppid() if local_child else None
    if local_child:  # the master handles Ctrl-C for the whole run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    environment = Environment(user_classes=[OrderUser], host=OrderUser.host)
    runner = environment.create_worker_runner(master_host, master_port)
    worker = BurstWorker(environment, lambda kind, data: runner.send_message(kind, data),
                         local_root=results_root)
    environment.trialbench_worker = worker  # type: ignore[attr-defined]

    def on_plan(environment: Environment, msg: Any, **_: Any) -> None:
        worker.heard_from_master()
        try:
            worker.configure(msg.data)
        except Exception as exc:  # tell the master why, instead of dying silently
            runner.send_message("tb_failed", {"worker": f"w{msg.data.get('index')}",
                                              "error": f"{type(exc).__name__}: {exc}"})

    def on_stop(environment: Environment, msg: Any, **_: Any) -> None:
        worker.heard_from_master()
        worker.stop(float(msg.data.get("grace_s", 0)))

    def on_ping(environment: Environment, msg: Any, **_: Any) -> None:
        worker.heard_from_master()

    def watch() -> None:
        while worker.master_lost is None:
            gevent.sleep(WATCH_EVERY_S)
            reason = worker.master_silence(parent_pid)
            if reason is not None:
                worker.lose_master(reason, runner.quit)

    runner.register_message("tb_plan", on_plan)
    runner.register_message("tb_stop", on_stop)
    runner.register_message("tb_ping", on_ping)
    runner.send_message("tb_ready", {})  # only now can a plan be taken (see burst.py)
    environment.events.init.fire(  # type: ignore[no-untyped-call]
        environment=environment, runner=runner, web_ui=None)
    watcher = gevent.spawn(watch)
    try:
        runner.greenlet.join()
    finally:
        watcher.kill(block=False)
        worker.close()
    return worker.exit_code


__all__ = ["BurstWorker", "LiveCounts", "OrderUser", "ShardLog", "run_worker",
           "supplier_sides"]
