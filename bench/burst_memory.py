"""Burst memory over time: does RSS grow with the orders placed? Compared with plain Locust.

Two runs of the same shape, one after the other, against one simulator on 127.0.0.1
(``bench/fleet-bench.yaml``: one supplier, delivery by callback after ~50 ms, money and
stock that never run out):

1. ``trialbench burst`` with a Locust master and ``--workers`` local worker processes,
   holding ``--rate`` orders/s for ``--duration-s`` (delivery by callback and polling,
   every code checked with the issuer);
2. plain Locust (``bench/burst_memory_locustfile.py``: POST an order, GET it once), a
   headless master and the same number of workers, the same rate and duration.

Every ``--sample-s`` it records the RSS of the master and of each worker (psutil) and the
orders the simulator has created so far (its ground truth); trialbench's scan-ahead child
(``harness.run.scan_ahead``) apart, its first and peak RSS (its CPU counts with the rest).
It prints one JSON line per run with, per role (``master``, ``workers`` = their sum), the
RSS at the start and end of the steady part and the growth in KB per 1,000 orders over its
first and second half (least squares of RSS on orders; the first ``--warmup-s`` are
skipped). Flat memory is a growth near 0 in the second half, as plain Locust's. Bounded:
both runs stop by themselves; everything stays on loopback. Usage::

    .venv/bin/python bench/burst_memory.py [--rate 40] [--duration-s 180] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.demo import fleet_env  # noqa: E402
from harness.processes import stop_process  # noqa: E402
from harness.simulator.process import SimulatorProcess, start_simulator  # noqa: E402
from harness.simulator.profiles import load_fleet  # noqa: E402

FLEET = ROOT / "bench" / "fleet-bench.yaml"
LOCUSTFILE = ROOT / "bench" / "burst_memory_locustfile.py"
PLAIN_USERS = 20

SCENARIO = """\
# written by bench/burst_memory.py
name: burst-memory
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
  delivery: both
  request_timeout_s: 5
  spending_cap: 10000000
  expected_latency_ms: 50
  max_orders: 1000000
"""


def _log(path: Path) -> Any:
    """A file for a child's stderr (left open for the child; closed at exit)."""
    return path.open("wb")  # the child writes to it after we return


def _rss_kb(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 1024
    except psutil.Error:
        return None


def _cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return 0.0


def _orders(sim: SimulatorProcess) -> int:
    return int(sim.truth()["suppliers"]["bench"]["orders_created"])


def _scan_ahead(pid: int) -> bool:
    """Whether ``pid`` is trialbench's scan-ahead child (harness.run.scan_ahead), not a
    worker: its memory is the same at any length of run, and is reported apart."""
    try:
        return "harness.run.scan_ahead" in psutil.Process(pid).cmdline()
    except psutil.Error:
        return False


def _sample(sim: SimulatorProcess, master: int, children: list[int], start: float
            ) -> dict[str, Any]:
    helpers = [pid for pid in children if _scan_ahead(pid)]
    rss = [_rss_kb(pid) for pid in children if pid not in helpers]
    helper_rss = [r for r in map(_rss_kb, helpers) if r is not None]
    return {"t_s": round(time.monotonic() - start, 2), "orders": _orders(sim),
            "master_kb": _rss_kb(master),
            "workers_kb": sum(r for r in rss if r is not None) if rss else None,
            "workers": len([r for r in rss if r is not None]),
            "scan_ahead_kb": sum(helper_rss) if helper_rss else None,
            "cpu_s": _cpu_s(master) + sum(_cpu_s(pid) for pid in children)}


def _slope(points: list[tuple[float, float]]) -> float:
    """KB per 1,000 orders by least squares (NaN with fewer than 3 points)."""
    if len(points) < 3:
        return float("nan")
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 1000


def summarise(name: str, samples: list[dict[str, Any]], warmup_s: float,
              end_s: float) -> dict[str, Any]:
    """Growth per 1,000 orders over the first and second half of the steady part."""
    steady = [s for s in samples if warmup_s <= s["t_s"] <= end_s and s["workers_kb"]]
    half = len(steady) // 2
    out: dict[str, Any] = {"run": name, "samples": len(steady),
                           "orders": [steady[0]["orders"], steady[-1]["orders"]]
                           if steady else None}
    if len(steady) >= 2 and steady[-1]["orders"] > steady[0]["orders"]:
        # CPU of the master and workers (user + system) per order over the steady part
        out["cpu_ms_per_order"] = round((steady[-1]["cpu_s"] - steady[0]["cpu_s"]) * 1000
                                        / (steady[-1]["orders"] - steady[0]["orders"]), 3)
    scan = [s["scan_ahead_kb"] for s in samples if s.get("scan_ahead_kb")]
    if scan:  # the scan-ahead child over the whole run (it reads the log in stretches)
        out["scan_ahead_rss_mb_first_peak"] = [round(scan[0] / 1024, 1),
                                               round(max(scan) / 1024, 1)]
    for role in ("master", "workers"):
        key = f"{role}_kb"
        pts = [(float(s["orders"]), float(s[key])) for s in steady if s[key] is not None]
        out[role] = {
            "rss_mb_start_end": [round(pts[0][1] / 1024, 1), round(pts[-1][1] / 1024, 1)]
            if pts else None,
            "kb_per_1000_orders_first_half": round(_slope(pts[:half]), 1),
            "kb_per_1000_orders_second_half": round(_slope(pts[half:]), 1),
            "kb_per_1000_orders_whole": round(_slope(pts), 1),
        }
    return out


def run_trialbench(sim: SimulatorProcess, env: dict[str, str], args: argparse.Namespace,
                   tmp: Path) -> list[dict[str, Any]]:
    scenario = tmp / "burst-memory.yaml"
    scenario.write_text(SCENARIO.format(duration=args.duration_s, rate=args.rate))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "burst", str(scenario), "--results",
         str(tmp / "results"), "--no-live", "--workers", str(args.workers)],
        env={**env, "PYTHONPATH": str(args.tree)} if args.tree else env,
        stdout=subprocess.DEVNULL, stderr=_log(tmp / "burst.stderr"),
        stdin=subprocess.DEVNULL, cwd=args.tree or ROOT)
    return _watch(sim, proc, lambda: [c.pid for c in psutil.Process(proc.pid).children()],
                  args, [proc])


def run_plain(sim: SimulatorProcess, env: dict[str, str], args: argparse.Namespace,
              tmp: Path) -> list[dict[str, Any]]:
    fleet = load_fleet(FLEET)
    profile = fleet.suppliers["bench"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plain_env = {**env, "TB_BENCH_KEY": profile.api_key, "TB_BENCH_SECRET": profile.secret,
                 "TB_BENCH_PATH": "/suppliers/bench",
                 "TB_BENCH_RATE": str(args.rate / PLAIN_USERS),
                 "PYTHONPATH": str(ROOT)}
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    err = _log(tmp / "locust.stderr")
    master = subprocess.Popen(
        [*locust, "--headless", "--master", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(port), "--expect-workers", str(args.workers),
         "-u", str(PLAIN_USERS), "-r", str(PLAIN_USERS), "-t", f"{round(args.duration_s)}s",
         "--host", sim.url, "--only-summary", "--stop-timeout", "5"],
        env=plain_env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
        cwd=ROOT)
    workers = [subprocess.Popen(
        [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
        env=plain_env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
        cwd=ROOT) for _ in range(args.workers)]
    return _watch(sim, master, lambda: [w.pid for w in workers], args, [master, *workers])


def _watch(sim: SimulatorProcess, master: subprocess.Popen[bytes], workers: Any,
           args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]
           ) -> list[dict[str, Any]]:
    start = time.monotonic()
    samples: list[dict[str, Any]] = []
    limit = args.duration_s + 90
    try:
        while master.poll() is None and time.monotonic() - start < limit:
            time.sleep(args.sample_s)
            samples.append(_sample(sim, master.pid, workers(), start))
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    stop_process(proc)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=40, help="orders per second")
    parser.add_argument("--duration-s", type=int, default=180)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--warmup-s", type=float, default=20,
                        help="samples before this are not counted (start-up, first orders)")
    parser.add_argument("--only", choices=("trialbench", "plain"), default=None)
    parser.add_argument("--samples-out", default=None, help="write every sample here (JSON)")
    parser.add_argument("--tree", default=None,
                        help="run trialbench from this checkout (e.g. an older commit, made "
                             "with `git archive COMMIT | tar -x -C DIR`), same venv")
    args = parser.parse_args()
    fleet = load_fleet(FLEET)
    everything: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="burst-memory-") as tmp_name, \
            start_simulator(FLEET) as sim:
        tmp = Path(tmp_name)
        env = {**os.environ, **fleet_env(fleet, sim.url)}
        runs = {"trialbench": run_trialbench, "plain-locust": run_plain}
        for name, run in runs.items():
            if args.only is not None and not name.startswith(args.only):
                continue
            sim.reset()
            samples = run(sim, env, args, tmp)
            everything[name] = samples
            # the steady part: from the warm-up to the end of the schedule
            print(json.dumps(summarise(name, samples, args.warmup_s,
                                       args.duration_s + 1)), flush=True)
    if args.samples_out:
        Path(args.samples_out).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
