"""A supplier that stops answering for 2 s mid-burst: trialbench's p99 against the true
latency from each order's intended start, with plain Locust's figure beside it.

Against the simulator with ``bench/fleet-50ms.yaml`` (one supplier answering every POST
in exactly 50 ms), on 127.0.0.1, one after the other:

1. a bare keep-alive client (``bench/latency_50ms.py``'s) measures the supplier's own
   latency ``L`` (p50 of 30 POSTs);
2. ``trialbench burst`` at ``--rate`` orders/s for ``--duration-s`` (slots sized by the
   scenario's defaults, with ``stall_cover_s`` = the stall); ``--stall-at-s`` after the
   burst's t0 the simulator process is frozen (SIGSTOP) for ``--stall-s`` and then
   resumed (SIGCONT): the kernel still takes connections and requests, nothing is
   answered. The reference for each order, from its intended start ``t`` and the stall
   window ``[a, b)`` measured here: ``b − t + L`` if it was due in the stall, ``b − t``
   if its answer would have come in the stall (``t + L`` in ``[a, b)``), else ``L``.
   Reported: p50/p95/p99 of trialbench's ``acceptance_ms`` (from the intended start) and
   of the reference over the same orders, the error of the p99, and ``schedule_slip``
   events (the target is none: the slots cover a stall of the configured length). A
   second reference, ``truth``, reads the supplier's own clock: when it took each order
   (``updated_at`` in its answer; delivery is synchronous) plus its fixed delay, minus
   the intended start. It includes the supplier's recovery after the stall (its backlog
   of queued requests and connections), which the first one does not model, but also
   any late send of ours (the supplier took the order later): it is the true latency
   only when no order slipped, so the verdict is on the first;
3. plain Locust (``bench/stall_locustfile.py``, ``--locust-users`` users at a constant
   throughput adding up to the same rate, the same duration), frozen the same way
   after its start; Locust's own p99 (from each request's actual send), its requests
   against the schedule's, and the reference p95/p99 of its schedule (the true latency
   of every request it should have sent).

Prints one JSON line per part. Bounded: one simulator, loopback only, a few hundred
requests, about 60 s at the defaults (the smoke, 20 s).

    .venv/bin/python bench/stall_bench.py           # 40/s for 20 s, a 2 s stall at 8 s
    .venv/bin/python bench/stall_bench.py --smoke   # 20/s for 3 s, a 1 s stall at 1 s
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from latency_50ms import FLEET, bare  # noqa: E402  (bench/ is not a package)

from harness.demo import fleet_env  # noqa: E402
from harness.events import read_events  # noqa: E402
from harness.simulator.process import SimulatorProcess, start_simulator  # noqa: E402
from harness.simulator.profiles import load_fleet  # noqa: E402

SCENARIO = """\
name: stall-{stall_s:g}s
seed: 1
suppliers:
  - name: fixed
    base_url: ${{TRIALBENCH_SIM_URL}}/suppliers/fixed
    credentials:
      api_key: ${{TRIALBENCH_DEMO_FIXED_API_KEY}}
      secret: ${{TRIALBENCH_DEMO_FIXED_SECRET}}
    products:
      - {{sku: card-10, face_value: "10.00", sale_price: "10.00"}}
burst:
  phases:
    - {{duration_s: {duration_s:g}, rate_per_s: {rate:g}}}
  deadline_s: 10
  delivery: poll
  request_timeout_s: 10
  expected_latency_ms: 50
  stall_cover_s: {cover_s:g}
  spending_cap: 100000
"""


def _q(values: Any, q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), q))


def reference_ms(intended: np.ndarray, window: tuple[float, float], latency_ms: float
                 ) -> np.ndarray:
    """The true latency from each intended start (epoch seconds) through the stall."""
    a, b = window
    lat = latency_ms / 1000
    ref = np.full(intended.shape, lat)
    in_stall = (intended >= a) & (intended < b)
    held = ~in_stall & (intended + lat >= a) & (intended + lat < b)
    ref[in_stall] = b - intended[in_stall] + lat
    ref[held] = b - intended[held]
    return ref * 1000


def _wait_for(path_glob: str, root: Path, proc: subprocess.Popen[bytes], find: Any,
              timeout_s: float = 60) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        for path in root.glob(path_glob):
            found = find(path)
            if found is not None:
                return float(found)
        time.sleep(0.02)
    raise RuntimeError(f"never started: {path_glob} under {root}")


def _t0(path: Path) -> float | None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if '"burst_started"' in line:
            return float(json.loads(line)["t0"])
    return None


def _mark(path: Path) -> float | None:
    text = path.read_text(encoding="utf-8").strip()
    return float(text) if text else None


def _freeze(sim: SimulatorProcess, start_at: float, stall_s: float) -> tuple[float, float]:
    """Freeze the simulator at ``start_at`` (epoch s) for ``stall_s``; the real window."""
    time.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    os.kill(sim.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(stall_s)
    finally:
        os.kill(sim.proc.pid, signal.SIGCONT)
    return began, time.time()


def trialbench_part(sim: SimulatorProcess, env: dict[str, str], tmp: Path, args: Any,
                    latency_ms: float, supplier_delay_ms: float) -> dict[str, Any]:
    scenario = tmp / "stall.yaml"
    cover_s = args.stall_s if args.stall_cover_s is None else args.stall_cover_s
    scenario.write_text(SCENARIO.format(stall_s=args.stall_s, duration_s=args.duration_s,
                                        rate=args.rate, cover_s=cover_s), encoding="utf-8")
    results = tmp / "tb"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "burst", str(scenario),
                             "--results", str(results), "--no-live"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = _wait_for("*/events.jsonl", results, proc, _t0)
        window = _freeze(sim, t0 + args.stall_at_s, args.stall_s)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise RuntimeError(f"burst exited {proc.returncode}: {err.decode()[-1500:]}")
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    orders = pd.read_parquet(run_dir / "orders.parquet")
    intended = orders["intended_at"].map(lambda ts: ts.timestamp()).to_numpy(dtype=float)
    measured = orders["acceptance_ms"].to_numpy(dtype=float)
    ref = reference_ms(intended, window, latency_ms)
    slips, created = 0, {}
    for event in read_events(run_dir):
        if event["type"] == "schedule_slip":
            slips += 1
        elif event["type"] == "order_observed" and event.get("source") == "post":
            created[event["client_order_id"]] = event["updated_at"]
    # the supplier's own clock: it took the order at updated_at (sync delivery) and
    # answered its fixed delay later, so this is the true latency, its recovery included
    answered = orders["client_order_id"].map(created).map(
        lambda text: datetime.fromisoformat(text).timestamp() if isinstance(text, str)
        else math.nan).to_numpy(dtype=float) + supplier_delay_ms / 1000
    answered[(answered >= window[0]) & (answered < window[1])] = window[1]  # held: frozen
    truth = (answered - intended) * 1000
    p99, ref99, truth99 = _q(measured, 0.99), _q(ref, 0.99), _q(truth, 0.99)
    stalled = ref > latency_ms + 10
    excess = measured[stalled] - ref[stalled]
    if args.keep:
        orders.assign(reference_ms=ref).to_parquet(Path(args.keep) / "stall_orders.parquet")
        (Path(args.keep) / "stall_window.json").write_text(json.dumps(window))
        for shard in run_dir.glob("events*.jsonl"):
            shutil.copy(shard, Path(args.keep) / shard.name)
    return {"part": "trialbench", "stall_cover_s": cover_s, "orders": len(orders),
            "accepted": int(np.isfinite(measured).sum()), "slips": slips,
            "stall_s": round(window[1] - window[0], 3),
            "p50_ms": round(_q(measured, 0.5), 1), "p95_ms": round(_q(measured, 0.95), 1),
            "p99_ms": round(p99, 1), "ref_p50_ms": round(_q(ref, 0.5), 1),
            "ref_p95_ms": round(_q(ref, 0.95), 1), "ref_p99_ms": round(ref99, 1),
            "p99_error": round(p99 / ref99 - 1, 4),
            "truth_p95_ms": round(_q(truth, 0.95), 1), "truth_p99_ms": round(truth99, 1),
            "p99_error_vs_truth": round(p99 / truth99 - 1, 4),
            "stalled_excess_p50_ms": round(_q(excess, 0.5), 1),
            "stalled_excess_max_ms": round(float(excess.max()), 1),
            "max_ms": round(float(np.nanmax(measured)), 1),
            "ref_max_ms": round(float(ref.max()), 1)}


def locust_part(sim: SimulatorProcess, tmp: Path, args: Any, latency_ms: float,
                fleet: Any) -> dict[str, Any]:
    supplier = fleet.suppliers["fixed"]
    mark = tmp / "locust-started"
    prefix = tmp / "locust"
    env = {**os.environ, "TB_STALL_KEY": supplier.api_key, "TB_STALL_SECRET": supplier.secret,
           "TB_STALL_PATH": "/suppliers/fixed", "TB_STALL_MARK": str(mark),
           "TB_STALL_RATE": str(args.rate / args.locust_users), "PYTHONWARNINGS": "ignore"}
    users = str(args.locust_users)
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f",
                             str(HERE / "stall_locustfile.py"), "--headless", "-u", users,
                             "-r", users, "-t", f"{args.duration_s:g}s", "--host", sim.url,
                             "--csv", str(prefix), "--only-summary", "--stop-timeout",
                             f"{args.stall_s + 5:g}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=HERE.parent)
    try:
        started = _wait_for(mark.name, tmp, proc, _mark)
        window = _freeze(sim, started + args.stall_at_s, args.stall_s)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust exited {proc.returncode}: {err.decode()[-1500:]}")
    with open(f"{prefix}_stats.csv", encoding="utf-8") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    scheduled = int(args.rate * args.duration_s)
    intended = started + (np.arange(scheduled) + 0.5) / args.rate
    ref = reference_ms(intended, window, latency_ms)
    ref95, ref99 = _q(ref, 0.95), _q(ref, 0.99)
    p95, p99 = float(total["95%"]), float(total["99%"])
    return {"part": "plain Locust", "users": args.locust_users,
            "requests": int(total["Request Count"]), "scheduled": scheduled,
            "failures": int(total["Failure Count"]), "stall_s": round(window[1] - window[0], 3),
            "p50_ms": float(total["50%"]), "p95_ms": p95, "p99_ms": p99,
            "ref_p95_ms": round(ref95, 1), "ref_p99_ms": round(ref99, 1),
            "ref_over_p95": round(ref95 / p95, 1) if p95 > 0 else math.inf,
            "ref_over_p99": round(ref99 / p99, 1) if p99 > 0 else math.inf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="orders per second")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--stall-at-s", type=float, default=8.0)
    parser.add_argument("--stall-s", type=float, default=2.0)
    parser.add_argument("--stall-cover-s", type=float, default=None,
                        help="the burst's stall_cover_s (default: --stall-s; 0: the old sizing)")
    parser.add_argument("--locust-users", type=int, default=4,
                        help="plain Locust users (each at rate / users per second)")
    parser.add_argument("--parts", default="trialbench,locust")
    parser.add_argument("--keep", help="folder to keep the orders (with their reference) in")
    parser.add_argument("--smoke", action="store_true",
                        help="20/s for 3 s, a 1 s stall at 1 s, trialbench only")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.duration_s, args.stall_at_s, args.stall_s = 20.0, 3.0, 1.0, 1.0
        args.parts = "trialbench"
    if not 0 < args.stall_at_s < args.stall_at_s + args.stall_s < args.duration_s <= 60:
        parser.error("need 0 < stall-at-s < stall-at-s + stall-s < duration-s <= 60")
    if not 0 < args.rate <= 500:
        parser.error("--rate must be in (0, 500]")
    fleet = load_fleet(FLEET)
    with start_simulator(FLEET) as sim, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, **fleet_env(fleet, sim.url)}
        n = 10 if args.smoke else 30
        latency_ms = statistics.median(bare(sim.url, n))
        print(json.dumps({"part": "bare keep-alive", "n": n, "p50_ms": round(latency_ms, 2)}),
              flush=True)
        if "trialbench" in args.parts:
            delay_ms = fleet.suppliers["fixed"].response_latency.median_ms
            print(json.dumps(trialbench_part(sim, env, tmp, args, latency_ms, delay_ms)),
                  flush=True)
        if "locust" in args.parts:
            print(json.dumps(locust_part(sim, tmp, args, latency_ms, fleet)), flush=True)


if __name__ == "__main__":
    main()
