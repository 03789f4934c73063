"""Peak-load bursts on Locust, driven as a library: the master side and the live view.

Imports Locust (which monkey-patches the process with gevent): only the ``burst`` and
``worker`` commands import it, never the analysis.

How a burst runs (``run_burst``):

1. The scenario's ``burst:`` plan becomes a deterministic schedule
   (:mod:`harness.run.schedule`); the run folder is created and the master writes
   ``burst_started`` (t0, the phases, and the scheduled orders per supplier per second)
   to ``events.jsonl``.
2. One process (``workers`` = 1, a Locust ``LocalRunner``), or a Locust master with N
   local worker processes (``python -m harness worker``) plus any remote workers that
   join (``trialbench worker --master HOST:PORT``). Each worker gets ``tb_plan``: the
   scenario text (credentials are resolved from the *worker's* environment, never
   sent), its index i of N, the shared start time t0 and the order-id prefix; it takes
   arrivals ``k % N == i``.
3. A ``LoadTestShape`` sizes the Locust users (slots) from the rate due in the next
   5 s (rate × expected latency × headroom, never shrinking during the run) and stops
   them once every worker has sent all of its arrivals. Orders are followed to
   delivery after that (up to ``follow_s`` after their intended start).
4. Each worker appends its own shard, ``events-<worker>.jsonl``, as it goes (see
   :mod:`harness.run.worker`): local workers straight into the run folder (the plan
   names it), remote ones on their machine and in batches to the master (``tb_events``),
   which appends them to the same shard name here. Live counters (``tb_stats``, every
   second) feed the live view and the abort conditions; the view keeps bounded
   summaries (counters and DDSketch latency sketches, 1 % relative accuracy), never a
   value per order. Ctrl-C (or an abort) sends ``tb_stop``: no new orders, orders in
   flight get a short grace, everything so far is kept.
5. The master pings its workers (``tb_ping``, every 0.25 s); a worker that hears
   nothing for 1.5 s stops placing and exits. A worker that dies (a local process
   exits), falls silent for :data:`WORKER_SILENT_S`, leaves, or fails to start fails
   the burst: ``worker_lost`` (or ``burst_worker_failed``) is written, the others are
   stopped, and the manifest and ``burst_finished`` get ``failed: "worker lost: <id>"``
   (the run is then incomplete: that worker's orders may have no final state until
   ``trialbench resume`` asks about them).
6. The master writes ``burst_finished``, closes the folder (building every table,
   ``timeline`` included) and prints achieved vs scheduled rate and the p95s.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import gevent
from ddsketch import DDSketch
from locust import LoadTestShape
from locust.env import Environment
from locust.runners import MasterRunner, Runner
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.codes import load_code_key
from harness.errors import HarnessError, SafetyError, ScenarioError
from harness.events import format_error_counts
from harness.processes import stop_process
from harness.results import burst_error_text
from harness.run.budget import Budget
from harness.run.gevent_transport import GeventTransport, drive
from harness.run.lifecycle import order_prefix
from harness.run.scan_ahead import ScanAhead
from harness.run.schedule import (
    Schedule,
    build_schedule,
    burst_worst_case_cost,
    concurrency_at,
    print_burst_plan,
)
from harness.run.worker import MASTER_PING_S, BurstWorker, OrderUser, supplier_sides
from harness.runfolder import RunFolder
from harness.scenario import BurstPlan, Scenario, load_scenario, with_callback_url

LEAD_S = 2.0
"""t0 is this long after every worker has its plan (catalog reads, user spawning)."""
WORKER_CONNECT_S = 30.0
STOP_GRACE_S = 3.0
LIVE_WINDOW_S = 5.0
SPAWN_RATE = 100
"""Users started per second (Locust warns above 100); the 5 s look-ahead covers ramps."""
WORKER_SILENT_S = 5.0
"""A worker that sends nothing (``tb_stats`` comes every second) for this long is lost."""
SKETCH_ACCURACY = 0.01
"""Relative accuracy of the live view's latency sketches (DDSketch)."""


class BurstShape(LoadTestShape):
    """Users (slots) sized from the rate due soon; never fewer during the run; ``None``
    (stop the users) once every worker has sent its share or a stop was asked."""

    def __init__(self, schedule: Schedule, plan: BurstPlan, workers: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.schedule = schedule
        self.plan = plan
        self.workers = workers
        self.t0 = math.inf
        self.users = 0
        self.finished = False

    def tick(self) -> tuple[int, float] | None:
        if self.finished:
            return None
        t = max(0.0, time.time() - self.t0)
        self.users = max(self.users, concurrency_at(self.schedule, self.plan, t, self.workers))
        return self.users, float(min(SPAWN_RATE, self.users))


def _sketch() -> DDSketch:
    return DDSketch(SKETCH_ACCURACY)


@dataclass
class SupplierLive:
    """The master's view of one supplier: every worker's ``tb_stats`` added up, in bounded
    memory (counters, and latency sketches instead of the latencies; the raw latencies
    are in the event log)."""

    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    final: int = 0
    slipped: int = 0
    post_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    acceptance: DDSketch = field(default_factory=_sketch)
    """Acceptance latency from the intended start, ms, over the whole run."""
    delivery: DDSketch = field(default_factory=_sketch)
    """Delivery latency from the intended start, ms, over the whole run."""
    window: deque[tuple[float, int, int, DDSketch]] = field(default_factory=deque)
    """(time, sent, post_errors, acceptance sketch) per report, for the sliding window."""

    def add(self, counts: Mapping[str, Any], now: float, keep_s: float) -> None:
        """Add one worker's report (:meth:`harness.run.worker.LiveCounts.data`); keep
        ``keep_s`` of reports for the window."""
        self.sent += counts["sent"]
        self.accepted += counts["accepted"]
        self.delivered += counts["delivered"]
        self.final += counts["final"]
        self.slipped += counts["slipped"]
        self.post_errors += counts["post_errors"]
        self.errors.update(counts["errors"])
        report = _sketch()
        for value in counts["acceptance_ms"]:
            report.add(max(0.0, float(value)))
        for value in counts["delivery_ms"]:
            self.delivery.add(max(0.0, float(value)))
        self.acceptance.merge(report)
        self.window.append((now, counts["sent"], counts["post_errors"], report))
        while self.window and self.window[0][0] < now - keep_s:
            self.window.popleft()


def percentile(sketch: DDSketch, q: float) -> float:
    """Percentile ``q`` (0–100) of a sketch, within its relative accuracy; NaN if empty."""
    if not sketch.count:
        return math.nan
    value = sketch.get_quantile_value(q / 100)
    return math.nan if value is None else float(value)


class Hub:
    """The master's end of the workers' messages: shards, live counters, done flags."""

    def __init__(self, folder: RunFolder, schedule: Schedule, plan: BurstPlan) -> None:
        self.folder = folder
        self.schedule = schedule
        self.plan = plan
        self.shards: dict[str, TextIO] = {}
        self.live = {name: SupplierLive() for name in schedule.suppliers}
        self.committed: dict[str, Decimal] = {}
        self.in_flight: dict[str, int] = {}
        self.placing_done: dict[str, bool] = {}
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.lost: dict[str, str] = {}
        """Workers lost mid-run: id -> why."""
        self.last_seen: dict[str, float] = {}
        """``time.monotonic()`` of each worker's last message."""
        self.pids: dict[str, int] = {}
        self.t0 = math.inf

    def on_events(self, data: Mapping[str, Any]) -> None:
        """A remote worker's lines: appended to its shard here as they come."""
        worker = str(data["worker"])
        self.heard(worker)
        shard = self.shards.get(worker)
        if shard is None:
            shard = (self.folder.path / f"events-{worker}.jsonl").open(
                "a", encoding="utf-8", buffering=1)
            self.shards[worker] = shard
        shard.write("".join(line + "\n" for line in data["lines"]))
        shard.flush()

    def heard(self, worker: str) -> None:
        self.last_seen[worker] = time.monotonic()

    def on_stats(self, data: Mapping[str, Any]) -> None:
        now = time.time()
        worker = str(data["worker"])
        self.heard(worker)
        if "pid" in data:
            self.pids[worker] = int(data["pid"])
        self.committed[worker] = Decimal(str(data["committed"]))
        self.in_flight[worker] = int(data["in_flight"]) + int(data.get("waiting", 0))
        self.placing_done[worker] = bool(data["placing_done"])
        for name, counts in data["suppliers"].items():
            live = self.live.get(name)
            if live is None:
                continue
            live.add(counts, now, max(self.plan.abort.window_s, LIVE_WINDOW_S))

    def on_done(self, data: Mapping[str, Any]) -> None:
        self.heard(str(data["worker"]))
        self.done.add(str(data["worker"]))

    def on_failed(self, data: Mapping[str, Any]) -> None:
        self.failed[str(data["worker"])] = str(data["error"])
        self.done.add(str(data["worker"]))

    def lose(self, worker: str, reason: str) -> bool:
        """Record a lost worker (once); True if it is news."""
        if worker in self.lost or worker in self.done:
            return False
        self.lost[worker] = reason
        self.folder.log.write("worker_lost", worker=worker, reason=reason,
                              pid=self.pids.get(worker))
        return True

    @property
    def failure(self) -> str | None:
        """Why the burst failed (the manifest's ``failed``), or None."""
        parts = []
        if self.lost:
            parts.append("worker lost: " + ", ".join(sorted(self.lost)))
        if self.failed:
            parts.append("worker failed to start: " + ", ".join(sorted(self.failed)))
        return "; ".join(parts) or None

    def close(self) -> None:
        for shard in self.shards.values():
            shard.close()

    # ------------------------------------------------------------ judging and drawing

    def _window(self, live: SupplierLive, seconds: float,
                into: DDSketch | None = None) -> tuple[int, int, DDSketch]:
        since = time.time() - seconds
        sent = errors = 0
        latencies = into if into is not None else _sketch()
        for at, s, e, sketch in live.window:
            if at >= since:
                sent, errors = sent + s, errors + e
                latencies.merge(sketch)
        return sent, errors, latencies

    def abort_reason(self) -> str | None:
        """Why the burst must stop now, or None."""
        abort = self.plan.abort
        if abort.spend is not None:
            spent = sum(self.committed.values(), Decimal(0))
            if spent >= abort.spend:
                return f"spend {spent} reached abort.spend {abort.spend}"
        if abort.error_rate is None and abort.latency_ms is None:
            return None
        sent = errors = 0
        latencies = _sketch()
        for live in self.live.values():
            s, e, _ = self._window(live, abort.window_s, into=latencies)
            sent, errors = sent + s, errors + e
        if sent < abort.min_orders:
            return None
        if abort.error_rate is not None and errors / sent >= abort.error_rate:
            return (f"error rate {errors / sent:.1%} over the last {abort.window_s:g} s "
                    f"reached abort.error_rate {abort.error_rate:.1%}")
        if abort.latency_ms is not None and latencies.count:
            value = percentile(latencies, abort.latency_percentile)
            if value > abort.latency_ms:
                return (f"p{abort.latency_percentile:g} acceptance latency {value:.0f} ms "
                        f"over the last {abort.window_s:g} s exceeded abort.latency_ms "
                        f"{abort.latency_ms:g}")
        return None

    def table(self, status: str) -> Group:
        elapsed = time.time() - self.t0
        due = self.schedule.due_by(elapsed) if elapsed > 0 else Counter[str]()
        window = min(LIVE_WINDOW_S, max(elapsed, 1e-9))
        due_before = self.schedule.due_by(elapsed - window) if elapsed > window else \
            Counter[str]()
        table = Table(title=f"burst: {status}", expand=False, padding=(0, 1))
        for title in ("supplier", "sent/due", "rate/s", "accepted", "delivered", "slipped",
                      "errors", "p95 acc ms", "p95 dlv ms"):
            table.add_column(title, justify="left" if title in ("supplier", "errors")
                             else "right")
        for name, live in self.live.items():
            sent_w, _, lat_w = self._window(live, window)
            p95 = percentile(lat_w if lat_w.count else live.acceptance, 95)
            p95d = percentile(live.delivery, 95)
            errors = format_error_counts(live.errors)
            table.add_row(
                name, f"{live.sent}/{due[name]}",
                f"{sent_w / window:.0f}/{(due[name] - due_before[name]) / window:.0f}",
                str(live.accepted), str(live.delivered), str(live.slipped), errors,
                "-" if math.isnan(p95) else f"{p95:.0f}",
                "-" if math.isnan(p95d) else f"{p95d:.0f}")
        spent = sum(self.committed.values(), Decimal(0))
        phase = self.schedule.phase_at(elapsed) or ("following" if elapsed > 0 else "starting")
        footer = Text(f"rate/s: achieved/scheduled over the last {window:.0f} s; p95 acc: "
                      "acceptance from intended start\n"
                      f"t = {elapsed:5.1f} s of {self.schedule.duration_s:g} s   phase: "
                      f"{phase}   in flight: {sum(self.in_flight.values())}   committed: "
                      f"{spent} of {self.plan.spending_cap}   workers done: "
                      f"{len(self.done)}")
        return Group(table, footer)


class BalanceReader:
    """The master reads every supplier's balance before the first order and after the
    last is final, so hidden fees are measured under load (workers share the balance)."""

    def __init__(self, scenario: Scenario, plan: BurstPlan, folder: RunFolder,
                 schedule: Schedule) -> None:
        self.sides = supplier_sides(scenario, plan, log=folder.log, budget=Budget(Decimal(0)),
                                    worker="master")
        self.active = {a.supplier for a in schedule.arrivals}
        self.session = GeventTransport(plan.request_timeout_s, len(self.sides),
                                       max_body_bytes=plan.max_body_bytes)

    def read(self, phase: str) -> None:
        jobs = [gevent.spawn(drive, self.session, side.read_balance(phase), label=name)
                for name, side in self.sides.items() if name in self.active]
        gevent.joinall(jobs)


def terminal() -> Console:
    """The console bursts print to: stderr, wide enough for every column off a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 180  # logs and CI: wide enough for every column
    return console


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ScenarioError(f"{value!r} is not HOST:PORT; write e.g. 127.0.0.1:5557")
    return host, int(port)


def run_burst(scenario_path: Path, *, results_root: Path = Path("results"),
              env: Mapping[str, str] | None = None, workers: int | None = None,
              remote_workers: int = 0, master_bind: str | None = None,
              web_ui: str | None = None, live: bool = True,
              console: Console | None = None, callback_url: str | None = None) -> Path:
    """Run the scenario's burst; return the run folder (tables built, also on Ctrl-C)."""
    environ = dict(os.environ if env is None else env)
    scenario = load_scenario(scenario_path, environ)
    if callback_url is not None:  # --callback-url: what suppliers are given
        scenario = with_callback_url(scenario, callback_url)
    plan = scenario.burst
    if plan is None:
        raise ScenarioError("no burst: section; add one (see scenarios/holiday-peak.yaml)",
                            path=str(scenario_path))
    console = console or terminal()
    local_workers = workers if workers is not None else plan.workers
    distributed = workers is not None or plan.workers > 1 or remote_workers > 0
    expected = (local_workers if distributed else 1) + remote_workers
    if distributed and expected < 1:
        raise ScenarioError("a burst needs at least one worker; give --workers 1 or more")
    schedule = build_schedule(scenario)
    shape = BurstShape(schedule, plan, expected)
    # stop_timeout (one process only): when Locust stops the users (the shape's end, or STOP
    # in the web UI), a user whose first POST is out finishes it (its order is then followed
    # in its own greenlet) instead of being killed mid-request. Not with workers: Locust
    # hands the master's stop_timeout to them, and a worker then sleeps that long in its
    # message loop after "stop", deaf to the master's pings, and leaves as if it were gone.
    environment = Environment(user_classes=[OrderUser], shape_class=shape,
                              host=OrderUser.host,
                              stop_timeout=None if distributed else STOP_GRACE_S)
    folder = RunFolder.create(results_root, scenario, scenario_path, mode="burst")
    hub = Hub(folder, schedule, plan)
    children: list[subprocess.Popen[bytes]] = []
    scan_ahead: ScanAhead | None = None
    interrupted = False
    runner: Runner
    try:
        ready: set[str] = set()  # Locust client ids of workers ready for their plan
        if distributed:
            bind_host, bind_port = _parse_hostport(master_bind) if master_bind else \
                ("127.0.0.1", _free_port())
            runner = environment.create_master_runner(bind_host, bind_port)
            # a worker says tb_ready once its handlers are registered: a plan sent before
            # that (it connects first) was dropped as an unknown message, and the worker
            # then sat silent until the master called it lost
            runner.register_message("tb_ready",
                                    lambda msg, **_: ready.add(str(msg.node_id)))
            worker_env = {**os.environ, **environ}
            connect_host = "127.0.0.1" if bind_host in ("0.0.0.0", "*", "") else bind_host
            for _ in range(local_workers):
                children.append(subprocess.Popen(
                    [sys.executable, "-m", "harness", "worker", "--master",
                     f"{connect_host}:{bind_port}", "--local-child"],
                    env=worker_env, stdin=subprocess.DEVNULL))
            console.print(f"master on {bind_host}:{bind_port}; waiting for {expected} "
                          f"worker(s) ({local_workers} local, {remote_workers} remote)")
        else:
            runner = environment.create_local_runner()
        local: BurstWorker | None = None
        if distributed:
            runner.register_message("tb_events", lambda msg, **_: hub.on_events(msg.data))
            runner.register_message("tb_stats", lambda msg, **_: hub.on_stats(msg.data))
            runner.register_message("tb_done", lambda msg, **_: hub.on_done(msg.data))
            runner.register_message("tb_failed", lambda msg, **_: hub.on_failed(msg.data))
        else:
            handlers = {"tb_events": hub.on_events, "tb_stats": hub.on_stats,
                        "tb_done": hub.on_done, "tb_failed": hub.on_failed}
            local = BurstWorker(environment, lambda kind, data: handlers[kind](data))
            environment.trialbench_worker = local  # type: ignore[attr-defined]
            worker = local
            runner.register_message("tb_stop",
                                    lambda msg, **_: worker.stop(float(msg.data["grace_s"])))
        web = None
        if web_ui is not None:
            web_host, web_port = _parse_hostport(web_ui)
            if web_host not in ("127.0.0.1", "localhost", "::1"):
                raise SafetyError(f"--web-ui binds {web_host}; only loopback is allowed "
                                  "(127.0.0.1:PORT)")
            # Locust's page re-parses sys.argv as a locust command line on every load and
            # exits on our options: it sees only the program name (the manifest has argv).
            sys.argv = sys.argv[:1]
            web = environment.create_web_ui(web_host, web_port)
            install_web_notice(web, hub)
            console.print(f"Locust web UI: http://{web_host}:{web_port} (its latencies are "
                          "Locust's, from the actual send; the trialbench tab and this view "
                          "measure from the intended start)")
        environment.events.init.fire(  # type: ignore[no-untyped-call]
            environment=environment, runner=runner, web_ui=web)

        stop_state: dict[str, Any] = {"requests": 0, "by": None}

        def on_signal() -> None:
            stop_state["requests"] += 1
            stop_state["by"] = stop_state["by"] or "Ctrl-C"

        def on_runner_stopping(**_: Any) -> None:
            # STOP in the web UI stops Locust's runner (its users) behind our back: treat it
            # as a stop request, so placing ends and orders in flight get their grace. The
            # shape's own end (shape.finished already set) is not one.
            if not shape.finished:
                stop_state["requests"] += 1
                stop_state["by"] = stop_state["by"] or "web UI STOP"
                if local is not None:  # at once, before Locust stops the users: no new
                    local.stop(STOP_GRACE_S)  # order, and a POST out finishes (stop_timeout)

        gevent.signal_handler(signal.SIGINT, on_signal)
        gevent.signal_handler(signal.SIGTERM, on_signal)
        environment.events.test_stopping.add_listener(  # type: ignore[no-untyped-call]
            on_runner_stopping)

        # workers: connect, get their plan
        prefix = order_prefix(folder.path.name, "burst")
        plan_data: dict[str, Any] = {
            "scenario_text": scenario_path.read_text(encoding="utf-8"),
            "scenario_name": scenario_path.name, "order_prefix": prefix,
            "run_id": folder.path.name, "count": expected,
            "run_dir": str(folder.path.resolve()),
            "results_root": str(results_root.resolve()), "callback_url": callback_url,
            "locust_stats": web_ui is not None}  # Locust's own statistics only for its web UI
        load_code_key(results_root)  # made once here, before workers race to make it
        balances = BalanceReader(scenario, plan, folder, schedule)
        balances.read("before")
        clients: dict[str, str] = {}  # Locust client id -> worker id
        if isinstance(runner, MasterRunner):
            deadline = time.monotonic() + WORKER_CONNECT_S + (3600 if remote_workers else 0)
            while runner.worker_count < expected or len(ready & set(runner.clients)) < expected:
                if time.monotonic() > deadline or stop_state["requests"]:
                    raise HarnessError(f"only {runner.worker_count} of {expected} workers "
                                       "connected; see their output above")
                if any(c.poll() is not None for c in children):
                    raise HarnessError("a local worker process exited before connecting")
                gevent.sleep(0.1)
            t0 = time.time() + LEAD_S
            pinger = gevent.spawn(_ping, runner)  # from now on, silence means "master gone"
            for index, client_id in enumerate(sorted(runner.clients)):
                clients[client_id] = f"w{index}"
                hub.heard(f"w{index}")
                runner.send_message("tb_plan", {**plan_data, "index": index, "t0": t0},
                                    client_id=client_id)
        else:
            t0 = time.time() + LEAD_S
            assert local is not None
            local.configure({**plan_data, "index": 0, "t0": t0}, scenario)
        shape.t0 = hub.t0 = t0
        folder.log.write("burst_started", t0=t0, workers=expected, order_prefix=prefix,
                         duration_s=schedule.duration_s, arrivals=len(schedule.arrivals),
                         phases=[{"name": s.name, "kind": s.kind, "start_s": s.start_s,
                                  "duration_s": s.duration_s, "start_rate": s.start_rate,
                                  "end_rate": s.end_rate} for s in schedule.segments],
                         scheduled_per_second=schedule.per_second(),
                         spending_cap=plan.spending_cap, distributed=distributed)
        runner.start_shape()
        scan_ahead = ScanAhead(folder.path)  # so the build at the end reads little JSON

        watch = WorkerWatch(runner, hub, children, clients) if distributed else None
        reason, interrupted = _supervise(runner, hub, shape, schedule, plan, stop_state,
                                         console, live, expected, watch)
        _end_scan_ahead(scan_ahead, console)
        scan_ahead = None
        folder.manifest["burst_aborted"] = reason
        if reason is not None:
            folder.log.write("burst_aborted", reason=reason)
            console.print(f"[bold red]burst stopped:[/] {reason}")
        if hub.failed:
            for name, error in hub.failed.items():
                folder.log.write("burst_worker_failed", worker=name, error=error)
                console.print(f"[red]worker {name} failed:[/] {error}")
        for name, why in hub.lost.items():
            console.print(f"[bold red]worker {name} lost:[/] {why}")
        failure = hub.failure
        folder.manifest["failed"] = failure  # the run is incomplete: burst_finished says so
        stopped = None
        if interrupted:  # a stop request: complete if every order sent reached a final state
            unsettled = unsettled_orders(folder.path)
            stopped = {"by": stop_state["by"], "at_s": round(time.time() - hub.t0, 1),
                       "unsettled_orders": unsettled}
            folder.manifest["stopped"] = stopped
            interrupted = unsettled > 0
            console.print(
                f"stopped by {stop_state['by']}: "
                + (f"{unsettled} orders were ended before a final state (marked interrupted; "
                   "`trialbench resume RUN` asks the suppliers about them)" if unsettled else
                   "every order sent reached a final state; the run is complete up to the "
                   "stop"))
        balances.read("after_orders")
        folder.log.write("burst_finished", interrupted=interrupted, aborted=reason,
                         failed=failure, stopped=stopped, workers_done=sorted(hub.done),
                         workers_lost=hub.lost or None,
                         committed=sum(hub.committed.values(), Decimal(0)))
        if local is not None:
            local.close()
        if isinstance(runner, MasterRunner):
            pinger.kill(block=False)
        runner.quit()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _reap(children)
        if scan_ahead is not None:
            _end_scan_ahead(scan_ahead, console)
        hub.close()
        folder.close(interrupted=interrupted)
    print_summary(folder.path, console)
    return folder.path


def unsettled_orders(run_dir: Path) -> int:
    """Orders of the run's shards ended without a final state: ``order_final`` marked
    interrupted, or none at all. Reads only those two kinds of line."""
    planned = finals = interrupted = 0
    for shard in run_dir.glob("events*.jsonl"):
        with shard.open(encoding="utf-8") as handle:
            for line in handle:
                if '"type":"order_planned"' in line:
                    planned += 1
                elif '"type":"order_final"' in line:
                    finals += 1
                    interrupted += '"interrupted":true' in line
    return interrupted + max(0, planned - finals)


WEB_NOTICE = (
    "trialbench: this page shows Locust's own statistics. Its response times are measured "
    "from the moment each request was actually sent, so a supplier that stalls the queue "
    "looks fast here (coordinated omission). trialbench measures every order from its "
    "intended start (open model): see the TRIALBENCH tab, the terminal's live view, and "
    "the burst summary and timeline.parquet in the run folder. \u201cUsers\u201d are "
    "concurrency slots trialbench sizes for the schedule, not simulated customers: orders "
    "arrive on schedule whatever their number. STOP ends the burst: no new orders, orders "
    "in flight get a short grace, every table is still built.")


def install_web_notice(web: Any, hub: Hub) -> None:
    """Extend Locust's web page: a notice above it (whose latencies these are, what Users
    means) and a TRIALBENCH tab with the live figures measured from the intended start."""
    import html
    import json

    from flask import request

    banner = ('<div id="trialbench-notice" style="font-family:sans-serif;padding:8px 16px;'
              'background:#fff4ce;color:#222;border-bottom:1px solid #c9a400">'
              f"{html.escape(WEB_NOTICE)}</div>")
    columns = [("supplier", "Supplier"), ("sent_due", "Sent / due"),
               ("accepted", "Accepted"), ("delivered", "Delivered"),
               ("p95_acc_ms", "p95 acceptance ms (from intended start)"),
               ("p95_dlv_ms", "p95 delivery ms (from intended start)"),
               ("errors", "Errors by class")]
    web.template_args["extended_tabs"] = [{"title": "trialbench", "key": "trialbench"}]
    web.template_args["extended_tables"] = [
        {"key": "trialbench", "structure": [{"key": k, "title": t} for k, t in columns]}]

    def rows() -> list[dict[str, str]]:
        elapsed = time.time() - hub.t0
        due = hub.schedule.due_by(elapsed) if elapsed > 0 else Counter[str]()
        out = []
        for name, live in hub.live.items():
            p95, p95d = percentile(live.acceptance, 95), percentile(live.delivery, 95)
            out.append({"supplier": name, "sent_due": f"{live.sent}/{due[name]}",
                        "accepted": str(live.accepted), "delivered": str(live.delivered),
                        "p95_acc_ms": "-" if math.isnan(p95) else f"{p95:.0f}",
                        "p95_dlv_ms": "-" if math.isnan(p95d) else f"{p95d:.0f}",
                        "errors": format_error_counts(live.errors)})
        return out

    @web.app.after_request  # type: ignore[untyped-decorator]
    def extend(response: Any) -> Any:
        if request.path == "/" and response.status_code == 200:
            page = response.get_data(as_text=True)
            response.set_data(page.replace('<div id="root"></div>',
                                           banner + '<div id="root"></div>', 1))
        elif request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": "trialbench", "data": rows()}]
            response.set_data(json.dumps(data))
        return response


def _ping(runner: Runner) -> None:
    """Tell every worker, every MASTER_PING_S, that the master is alive."""
    while True:
        with contextlib.suppress(Exception):  # a broken socket must not end the pings
            runner.send_message("tb_ping", None)
        gevent.sleep(MASTER_PING_S)


class WorkerWatch:
    """The master's watch on its workers: a local worker process that exits, a worker
    that says nothing for :data:`WORKER_SILENT_S`, or one Locust says has quit, before
    it reported done, is lost (a silent local one is killed, so it cannot place again)."""

    def __init__(self, runner: Runner, hub: Hub, children: list[subprocess.Popen[bytes]],
                 clients: Mapping[str, str]) -> None:
        self.runner = runner
        self.hub = hub
        self.children = children
        self.clients = clients

    def check(self) -> list[str]:
        """Workers newly lost (each recorded on the hub with a ``worker_lost`` event)."""
        hub = self.hub
        news: list[str] = []
        by_pid = {pid: worker for worker, pid in hub.pids.items()}
        for child in self.children:
            code = child.poll()
            if code is not None:
                worker = by_pid.get(child.pid)  # not reported yet: silence will tell
                if worker is not None and hub.lose(
                        worker, f"worker process {child.pid} exited with code {code}"):
                    news.append(worker)
        now = time.monotonic()
        present = getattr(self.runner, "clients", {})
        for client_id, worker in self.clients.items():
            if worker in hub.done or worker in hub.lost:
                continue
            silent = now - hub.last_seen.get(worker, now)
            if client_id not in present:
                reason = "the worker left (Locust quit)"
            elif silent > WORKER_SILENT_S:
                reason = f"no word from the worker for {silent:.1f} s"
            else:
                continue
            if hub.lose(worker, reason):
                news.append(worker)
                self._end_local(worker)
        return news

    def _end_local(self, worker: str) -> None:
        """A lost local worker that still runs (stalled) must not place again: kill it.
        Its shard is on disk up to its last event. A remote one gets the ``tb_stop``."""
        for child in self.children:
            if child.pid == self.hub.pids.get(worker) and child.poll() is None:
                child.kill()


def _supervise(runner: Runner, hub: Hub, shape: BurstShape, schedule: Schedule,
               plan: BurstPlan, stop_state: dict[str, Any], console: Console, live: bool,
               expected: int, watch: WorkerWatch | None = None) -> tuple[str | None, bool]:
    """Draw the live view, judge aborts and lost workers, handle Ctrl-C; return (abort
    reason, interrupted)."""
    stop_sent = 0
    reason: str | None = None
    interrupted = False
    give_up = hub.t0 + schedule.duration_s + plan.follow_for_s + plan.request_timeout_s \
        * 2 + 60
    view = Live(hub.table("starting"), console=console, auto_refresh=False,
                transient=False) if live else None
    if view is not None:
        view.start()
    try:
        while True:
            gevent.sleep(0.5)
            if len(hub.done | set(hub.lost)) >= expected:
                break
            lost = watch.check() if watch is not None else []
            if (lost or hub.failed) and not stop_sent:
                stop_sent = 1  # a lost worker fails the burst: stop the others
                _send_stop(runner, hub, STOP_GRACE_S)
                console.print("[bold red]stopping:[/] " + (hub.failure or ""))
                if len(hub.done | set(hub.lost)) >= expected:
                    break
            if stop_state["requests"] > stop_sent:
                interrupted = True
                grace = STOP_GRACE_S if stop_state["requests"] == 1 else 0.0
                stop_sent = stop_state["requests"]
                _send_stop(runner, hub, grace)
                console.print("stopping: no new orders; "
                              + (f"orders in flight get {grace:g} s (Ctrl-C again to end "
                                 "them now)" if grace else "ending orders in flight now"))
                if stop_state["requests"] >= 3:
                    break
            elif reason is None and not stop_sent:
                reason = hub.abort_reason()
                if reason is not None:
                    stop_sent = 1
                    _send_stop(runner, hub, STOP_GRACE_S)
            if not shape.finished and (stop_sent or (
                    len(hub.placing_done) >= expected and all(hub.placing_done.values()))):
                shape.finished = True
            if time.time() > give_up + (30 if stop_sent else 0):
                console.print("[red]workers did not report done in time; closing[/]")
                break
            if view is not None:
                status = "stopping" if stop_sent else "running"
                view.update(hub.table(status), refresh=True)
    finally:
        if view is not None:
            view.update(hub.table("finished"), refresh=True)
            view.stop()
    return reason, interrupted


def _end_scan_ahead(scan_ahead: ScanAhead, console: Console) -> None:
    """Stop scanning the log ahead (once); say so if it had stopped on an error."""
    said = scan_ahead.close()
    if said.strip():
        console.print(f"[yellow]{said.strip()}[/] (the tables are built from the log "
                      "all the same)")


def _send_stop(runner: Runner, hub: Hub, grace_s: float) -> None:
    runner.send_message("tb_stop", {"grace_s": grace_s})


def _reap(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(child)


SUMMARY_COLUMNS = ("supplier", "sent", "per_s", "slip", "acc", "dlv", "errors",
                   "latency_acc", "latency_dlv", "req_per_order", "bad_codes", "fee")
"""The summary's columns, by catalogue key (``burst.col.<key>`` in harness/i18n)."""


def _summary_rows(frame: Any) -> list[list[str]]:
    rows = []
    for row in frame.to_dict("records"):
        rows.append([
            str(row["supplier"]), f"{row['sent']}/{row['scheduled']}",
            f"{row['sent/s']:.1f}/{row['sched/s']:.1f}", str(row["slipped"]),
            str(row["accepted"]), str(row["delivered"]), burst_error_text(row),
            "/".join(_ms(row[f"accept p{q} ms"]) for q in (50, 95, 99)),
            _ms(row["deliver p95 ms"]), f"{row['writes+resolves/order']:.2f}",
            _bad_codes(row["bad codes"], row["codes checked"]),
            "-" if math.isnan(row["hidden fee/order"]) else f"{row['hidden fee/order']:.2f}"])
    return rows


def print_summary(run_dir: Path, console: Console, lang: str | None = None) -> None:
    """Achieved vs scheduled rate and latency percentiles per supplier, from the tables;
    also written to the run folder as ``report.md`` and ``summary.csv``, as a trial's are
    (``lang``: default :func:`harness.i18n.resolve_lang`)."""
    from harness.i18n import resolve_lang, text
    from harness.results import burst_summary

    lang = resolve_lang(lang)
    frame = burst_summary(run_dir)
    rows = _summary_rows(frame)
    write_burst_summary(run_dir, frame, rows, lang)
    console.print()
    table = Table(title=text("burst.title", lang, run=run_dir.name), padding=(0, 1))
    for key in SUMMARY_COLUMNS:
        table.add_column(text(f"burst.col.{key}", lang),
                         justify="left" if key in ("supplier", "errors") else "right")
    for cells in rows:
        table.add_row(*cells)
    console.print(table)
    console.print(text("burst.note", lang))
    console.print(text("burst.run_folder", lang, path=run_dir))
    console.print(text("burst.summary_path", lang, path=run_dir / "report.md"))


def write_burst_summary(run_dir: Path, frame: Any, rows: list[list[str]],
                        lang: str = "en") -> None:
    """``summary.csv`` (one row per supplier, every column of
    :func:`harness.results.burst_summary`; latencies in ms from the intended start) and
    ``report.md`` (the printed table, in ``lang``) in the run folder."""
    import json

    from harness.i18n import text

    flat = frame.copy()
    if "bad codes" in flat:
        flat["bad codes"] = flat["bad codes"].map(
            lambda counts: " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-")
    flat.to_csv(run_dir / "summary.csv", index=False)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    state = (text("burst.state.interrupted", lang) if manifest.get("interrupted") else
             text("burst.state.failed", lang, why=manifest["failed"])
             if manifest.get("failed") else
             text("burst.state.aborted", lang, why=manifest["burst_aborted"])
             if manifest.get("burst_aborted") else text("burst.state.finished", lang))
    headers = [text(f"burst.col.{key}", lang) for key in SUMMARY_COLUMNS]
    lines = [text("burst.md_title", lang, run=run_dir.name), "",
             text("burst.md_intro", lang, state=state), "",
             "| " + " | ".join(headers) + " |",
             "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
              for cells in rows]
    lines += ["", text("burst.note", lang) + ("。" if lang == "zh" else "."), "",
              text("burst.md_tables", lang), ""]
    (run_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")


def _bad_codes(bad: dict[str, int], checked: int) -> str:
    from harness.summary import SHORT_VERDICT

    if not checked:
        return "-"
    found = ", ".join(f"{SHORT_VERDICT.get(k, k)} {v}" for k, v in sorted(bad.items()))
    return f"{found or 'none'} of {checked}"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


__all__ = ["BurstShape", "Hub", "SupplierLive", "WorkerWatch", "burst_worst_case_cost",
           "percentile", "print_burst_plan", "print_summary", "run_burst", "terminal",
           "write_burst_summary"]
