"""Burst capacity: orders/s held on schedule by trialbench workers and by plain Locust.

Against one simulator on 127.0.0.1 (``bench/fleet-bench.yaml``: one supplier, delivery
after ~50 ms, money and stock that never run out), each run holds a constant rate for
``--duration-s`` and is *held* when every scheduled order was sent and at most 1 % of
them started more than ``--late-ms`` (50) after their intended time. Runs:

- ``tb1`` / ``tb2``: ``trialbench burst`` (a master and 1 or 2 local workers), delivery by
  polling (``--delivery``), every code checked with the issuer, full event log;
  lateness from the log (``order_attempt`` of the first POST minus ``intended_at``);
- ``plain1`` / ``plain2``: plain Locust (``bench/burst_capacity_locustfile.py``): the same
  schedule and the same HTTP work per order (POST, GET after 0.2 s and on with 1.5×
  backoff until delivered, one issuer GET per code), a headless master and 1 or 2
  workers, no recording.

For each run the rate steps up ×``--factor`` from ``--start`` until a rate is not held
(or ``--max-rate``), then bisects ``--refine`` times between the last held and the first
missed. Printed per step: a JSON line (lateness p99, CPU of the load generator's workers
per order, the simulator's cores over the schedule). Then one JSON line with the highest
rate each run held and the ratios (tb1/plain1, tb2/tb1). ``--at RATE`` runs that one rate
only (profiling, smoke). Bounded: every child is stopped after its schedule + 60 s.

    .venv/bin/python bench/burst_capacity.py [--runs tb1,plain1,tb2] [--duration-s 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.demo import fleet_env  # noqa: E402
from harness.processes import stop_process  # noqa: E402
from harness.simulator.process import SimulatorProcess, start_simulator  # noqa: E402
from harness.simulator.profiles import load_fleet  # noqa: E402

FLEET = ROOT / "bench" / "fleet-bench.yaml"
LOCUSTFILE = ROOT / "bench" / "burst_capacity_locustfile.py"
HELD_SHARE = 0.99

SCENARIO = """\
# written by bench/burst_capacity.py
name: burst-capacity
seed: 1
issuer:
  base_url: ${{TRIALBENCH_SIM_URL}}/issuer
  api_key: ${{TRIALBENCH_DEMO_ISSUER_API_KEY}}
suppliers:
  - name: bench
    base_url: ${{TRIALBENCH_SIM_URL}}/suppliers/bench
    credentials:
      api_key: ${{TRIALBENCH_DEMO_BENCH_API_KEY}}
      secret: ${{TRIALBENCH_DEMO_BENCH_SECRET}}
    products:
      - {{sku: card-10, face_value: "10.00", sale_price: "10.00"}}
burst:
  phases:
    - {{name: hold, duration_s: {duration}, rate_per_s: {rate}}}
  deadline_s: 5
  follow_s: 6
  delivery: {delivery}
  request_timeout_s: 5
  spending_cap: 10000000
  expected_latency_ms: 50
  max_orders: 1000000
"""


def scheduled(rate: float, duration_s: float) -> int:
    """Arrivals of a constant-rate phase (arrival j is due when rate × t = j + ½)."""
    return math.floor(rate * duration_s + 0.5)


def slots(rate: float, workers: int) -> int:
    """trialbench's slot sizing (rate × 50 ms × headroom 3, + 1 per worker), for plain."""
    return math.ceil(rate * 0.05 * 3) + workers


class Sampler:
    """CPU seconds (user + system) of the load generator's workers and the simulator,
    sampled with their wall time, to charge each to the schedule's window."""

    def __init__(self, sim_pid: int, workers: Callable[[], list[int]]) -> None:
        self.sim = psutil.Process(sim_pid)
        self.workers = workers
        self.samples: list[tuple[float, float, float]] = []
        self._cpu: dict[int, float] = {}

    def sample(self) -> None:
        for pid in self.workers():
            try:
                times = psutil.Process(pid).cpu_times()
                self._cpu[pid] = float(times.user + times.system)
            except psutil.Error:
                pass  # ended: keep its last reading
        sim = self.sim.cpu_times()
        self.samples.append((time.time(), sum(self._cpu.values()),
                             float(sim.user + sim.system)))

    def window(self, start: float, end: float) -> tuple[float, float, float]:
        """Worker CPU s, simulator CPU s and wall s between the samples nearest
        ``start`` and ``end``."""
        inside = [s for s in self.samples if start - 0.3 <= s[0] <= end + 0.3]
        if len(inside) < 2:
            return math.nan, math.nan, math.nan
        first, last = inside[0], inside[-1]
        return last[1] - first[1], last[2] - first[2], last[0] - first[0]


def _watch(procs: list[subprocess.Popen[bytes]], sampler: Sampler, limit_s: float) -> None:
    start = time.monotonic()
    try:
        while procs[0].poll() is None and time.monotonic() - start < limit_s:
            sampler.sample()
            time.sleep(0.25)
        sampler.sample()
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    stop_process(proc)


def lateness_from_log(run_dir: Path) -> tuple[list[float], float, float]:
    """Each order's first POST minus its intended start (ms), and the first and last
    intended start."""
    intended: dict[str, float] = {}
    late: list[float] = []
    for shard in sorted(run_dir.glob("events*.jsonl")):
        with shard.open("rb") as fh:
            for line in fh:
                if b'"order_planned"' not in line and b'"order_attempt"' not in line:
                    continue
                event = orjson.loads(line)
                if event["type"] == "order_planned":
                    intended[event["client_order_id"]] = float(event["intended_at"])
                elif event["type"] == "order_attempt" and event.get("purpose") == "place" \
                        and event.get("attempt") == 1:
                    at = intended.get(event["client_order_id"])
                    if at is not None:
                        late.append((float(event["t"]) - at) * 1000)
    if not intended:
        return late, math.nan, math.nan
    return late, min(intended.values()), max(intended.values())


def run_trialbench(sim: SimulatorProcess, env: dict[str, str], rate: float, workers: int,
                   args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    scenario = tmp / f"cap-{rate:g}.yaml"
    scenario.write_text(SCENARIO.format(duration=args.duration_s, rate=rate,
                                        delivery=args.delivery))
    results = tmp / f"results-{workers}-{rate:g}"
    with (tmp / "burst.stderr").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "burst", str(scenario), "--results",
             str(results), "--no-live", "--workers", str(workers)],
            env={**env, "PYTHONPATH": str(args.tree)} if args.tree else env,
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
            cwd=args.tree or ROOT)

    def children() -> list[int]:
        try:
            return [c.pid for c in psutil.Process(proc.pid).children()]
        except psutil.Error:
            return []

    sampler = Sampler(sim.proc.pid, children)
    _watch([proc], sampler, args.duration_s + 60)
    runs = [p for p in results.iterdir() if p.is_dir()] if results.is_dir() else []
    if not runs:
        return {"error": f"no run folder (exit {proc.returncode})"}
    late, first, last = lateness_from_log(runs[0])
    due = scheduled(rate, args.duration_s)
    return _result(late, due, sampler, first, last, rate, exit_code=proc.returncode)


def run_plain(sim: SimulatorProcess, env: dict[str, str], rate: float, workers: int,
              args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    profile = load_fleet(FLEET).suppliers["bench"]
    out = tmp / f"plain-{workers}-{rate:g}"
    out.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.time() + args.startup_s
    due = scheduled(rate, args.duration_s)
    base_env = {**env, "TB_CAP_KEY": profile.api_key, "TB_CAP_SECRET": profile.secret,
                "TB_CAP_PATH": "/suppliers/bench", "TB_CAP_ISSUER": f"{sim.url}/issuer",
                "TB_CAP_ISSUER_KEY": env["TRIALBENCH_DEMO_ISSUER_API_KEY"],
                "TB_CAP_RATE": str(rate), "TB_CAP_DURATION_S": str(args.duration_s),
                "TB_CAP_TOTAL": str(due), "TB_CAP_T0": repr(t0),
                "TB_CAP_WORKERS": str(workers), "TB_CAP_OUT": str(out),
                "PYTHONPATH": str(ROOT)}
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    users = slots(rate, workers)
    run_s = math.ceil(args.startup_s + args.duration_s + 7)  # schedule, then the follow-ups
    with (tmp / "locust.stderr").open("ab") as err:
        master = subprocess.Popen(
            [*locust, "--headless", "--master", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(port), "--expect-workers", str(workers),
             "-u", str(users), "-r", str(users), "-t", f"{run_s}s", "--host", sim.url,
             "--only-summary", "--stop-timeout", "3"],
            env=base_env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
            cwd=ROOT)
        procs = [subprocess.Popen(
            [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
            env={**base_env, "TB_CAP_INDEX": str(i)}, stdout=subprocess.DEVNULL, stderr=err,
            stdin=subprocess.DEVNULL, cwd=ROOT) for i in range(workers)]
    sampler = Sampler(sim.proc.pid, lambda: [p.pid for p in procs])
    _watch([master, *procs], sampler, run_s + 60)
    parts = [json.loads(p.read_text()) for p in sorted(out.glob("plain-*.json"))]
    if len(parts) != workers:
        return {"error": f"{len(parts)} of {workers} workers reported"}
    sent = sum(p["sent"] for p in parts)
    late_n = sum(p["late"] for p in parts)
    first, last = t0 + 0.5 / rate, t0 + (due - 0.5) / rate
    result = _result([], due, sampler, first, last, rate, exit_code=master.returncode)
    result.update(sent=sent, late=late_n,
                  p99_late_ms=max((p["p99_late_ms"] or 0) for p in parts),
                  requests=sum(p["requests"] for p in parts),
                  failures=sum(p["failures"] for p in parts))
    result["held"] = sent == due and late_n <= (1 - HELD_SHARE) * due
    return result


def _result(late: list[float], due: int, sampler: Sampler, first: float, last: float,
            rate: float, *, exit_code: int | None) -> dict[str, Any]:
    late_sorted = sorted(late)
    late_n = sum(1 for x in late if x > LATE_MS[0])
    worker_cpu, sim_cpu, wall = sampler.window(first, last)
    sent = len(late)
    return {
        "due": due, "sent": sent, "late": late_n,
        "p99_late_ms": round(late_sorted[min(sent - 1, math.ceil(0.99 * sent) - 1)], 1)
        if sent else None,
        "held": sent == due and late_n <= (1 - HELD_SHARE) * due,
        "worker_cpu_ms_per_order": round(worker_cpu * 1000 / (rate * wall), 3)
        if wall and wall > 0 else None,
        "worker_cores": round(worker_cpu / wall, 2) if wall and wall > 0 else None,
        "sim_cores": round(sim_cpu / wall, 2) if wall and wall > 0 else None,
        "exit": exit_code,
    }


LATE_MS = [50.0]


def search(run: Callable[[float], dict[str, Any]], args: argparse.Namespace, name: str
           ) -> float | None:
    """Step up ×factor until a rate is missed, then bisect; the highest rate held."""
    held: float | None = None
    missed: float | None = None
    rate = args.start
    while rate <= args.max_rate:
        if _step(run, rate, name):
            held = rate
            rate = round(rate * args.factor)
        else:
            missed = rate
            break
    for _ in range(args.refine if held is not None and missed is not None else 0):
        assert held is not None and missed is not None
        mid = round((held + missed) / 2)
        if mid in (held, missed):
            break
        if _step(run, mid, name):
            held = mid
        else:
            missed = mid
    return held


def _step(run: Callable[[float], dict[str, Any]], rate: float, name: str) -> bool:
    result = run(rate)
    print(json.dumps({"run": name, "rate": rate, **result}), flush=True)
    return bool(result.get("held"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="tb1,plain1,tb2")
    parser.add_argument("--duration-s", type=float, default=8)
    parser.add_argument("--start", type=float, default=200)
    parser.add_argument("--factor", type=float, default=1.5)
    parser.add_argument("--max-rate", type=float, default=4000)
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--late-ms", type=float, default=50)
    parser.add_argument("--delivery", choices=("poll", "callback", "both"), default="poll")
    parser.add_argument("--startup-s", type=float, default=10,
                        help="plain Locust: time for the master and workers to start")
    parser.add_argument("--keep", default=None,
                        help="keep logs and run folders here (default: a temporary folder)")
    parser.add_argument("--tree", default=None,
                        help="run trialbench from this checkout (before/after, same venv)")
    parser.add_argument("--at", type=float, default=None, help="run this one rate only")
    args = parser.parse_args()
    LATE_MS[0] = args.late_ms
    fleet = load_fleet(FLEET)
    best: dict[str, float | None] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="burst-capacity-") as tmp_name, \
            start_simulator(FLEET) as sim:
        tmp = Path(args.keep or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **fleet_env(fleet, sim.url)}
        for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
            kind, workers = name.rstrip("0123456789"), int(name[len(name.rstrip("0123456789")):])
            runner = run_trialbench if kind == "tb" else run_plain

            def run(rate: float, runner: Any = runner, workers: int = workers) -> dict[str, Any]:
                sim.reset()
                return dict(runner(sim, env, rate, workers, args, tmp))

            if args.at is not None:
                best[name] = args.at if _step(run, args.at, name) else None
            else:
                best[name] = search(run, args, name)
    summary: dict[str, Any] = {"held": best, "late_ms": args.late_ms,
                               "duration_s": args.duration_s, "delivery": args.delivery,
                               "wall_s": round(time.monotonic() - started, 1),
                               "cpus": os.cpu_count()}
    if best.get("tb1") and best.get("plain1"):
        summary["tb1_over_plain1"] = round(best["tb1"] / best["plain1"], 2)  # type: ignore[operator]
    if best.get("tb2") and best.get("tb1"):
        summary["tb2_over_tb1"] = round(best["tb2"] / best["tb1"], 2)  # type: ignore[operator]
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
