"""Acceptance latency on a 50 ms endpoint: trial, burst and a bare keep-alive client.

Starts the simulator with ``bench/fleet-50ms.yaml`` (one supplier answering every request
in exactly 50 ms), then, one after another against it:

- a bare client: ``http.client`` on one keep-alive connection, POSTing signed orders one
  after another (TCP_QUICKACK after each read, as both transports do);
- ``trialbench trial bench/latency-50ms.yaml`` (400 orders, one at a time, like the bare client);
- ``trialbench burst bench/latency-50ms.yaml`` (20 orders/s for 20 s).

400 of each: p99 is then the 4th-highest of each, not the 2nd (which moved by ±1.5 ms
between runs of the same code).

It prints p50/p99 of each in ms: for the trial and the burst, ``acceptance_ms`` from the
orders table (from each order's intended start to its accepted answer).

    .venv/bin/python bench/latency_50ms.py
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.demo import fleet_env
from harness.protocol import signed_headers
from harness.simulator.process import start_simulator
from harness.simulator.profiles import load_fleet

HERE = Path(__file__).parent
FLEET = HERE / "fleet-50ms.yaml"
SCENARIO = HERE / "latency-50ms.yaml"


def _pct(values: list[float] | pd.Series, q: float) -> float:
    return float(pd.Series(values).quantile(q))


def bare(url: str, n: int = 400) -> list[float]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    times = []
    for i in range(n):
        body = json.dumps({"client_order_id": f"bare-{os.getpid()}-{i}", "sku": "card-10",
                           "quantity": 1, "account": None, "callback_url": None}).encode()
        path = "/suppliers/fixed/v1/orders"
        headers = {**signed_headers("fixed-key", "fixed-secret", "POST", path, body),
                   "Content-Type": "application/json"}
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        reply.read()
        if conn.sock is not None and hasattr(socket, "TCP_QUICKACK"):
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        assert reply.status == 201, reply.status
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return times


def run(command: str, env: dict[str, str], results: Path) -> pd.Series:
    subprocess.run([sys.executable, "-m", "harness", command, str(SCENARIO), "--results",
                    str(results), "--no-live" if command == "burst" else "--no-progress"],
                   env=env, check=True, capture_output=True, timeout=300)
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    orders = pd.read_parquet(run_dir / "orders.parquet")
    return orders["acceptance_ms"].dropna()


def main() -> None:
    with start_simulator(FLEET) as sim, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **fleet_env(load_fleet(FLEET), sim.url)}
        rows = {"bare keep-alive": bare(sim.url),
                "trial": run("trial", env, Path(tmp) / "trial"),
                "burst (Locust)": run("burst", env, Path(tmp) / "burst")}
    for name, values in rows.items():
        print(json.dumps({"client": name, "n": len(values),
                          "p50_ms": round(_pct(values, 0.5), 2),
                          "p99_ms": round(_pct(values, 0.99), 2),
                          "mean_ms": round(statistics.fmean(list(values)), 2)}))


if __name__ == "__main__":
    main()
