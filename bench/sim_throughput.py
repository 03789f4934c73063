"""Requests per second the simulator serves, measured from a separate load process.

The simulator runs as its own process (``start_simulator``), pinned to one core when the
OS allows; the load generator is another process, pinned to another core, holding
keep-alive connections on raw sockets and sending pre-signed requests, one in flight per
connection. Two phases: ``GET /v1/orders/{id}`` over existing orders, then
``POST /v1/orders`` with fresh ids. Usage::

    .venv/bin/python bench/sim_throughput.py [--duration-s 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import selectors
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.protocol import signed_headers  # noqa: E402
from harness.simulator.process import start_simulator  # noqa: E402
from harness.simulator.profiles import load_fleet  # noqa: E402

FLEET = Path(__file__).resolve().parent / "fleet-bench.yaml"
SUPPLIER = "bench"


def build_request(host: str, method: str, path: str, body: bytes, key: str,
                  secret: str) -> bytes:
    """One complete signed HTTP/1.1 request, keep-alive."""
    headers = signed_headers(key, secret, method, path, body)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive",
             *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def load(port: int, requests: list[bytes], connections: int, duration_s: float,
         cpu: int | None, out: Any) -> None:
    """Drive ``connections`` keep-alive sockets for ``duration_s``; report counts."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, list[Any]] = {}
    next_index = 0
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        state[sock] = [b"", 0.0]
        sel.register(sock, selectors.EVENT_READ)
    done = 0
    statuses: dict[int, int] = {}
    latencies_ms: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s

    def send(sock: socket.socket) -> None:
        nonlocal next_index
        request = requests[next_index % len(requests)]
        next_index += 1
        state[sock][0] = b""
        state[sock][1] = time.perf_counter()
        sock.sendall(request)

    for sock in state:
        send(sock)
    while time.perf_counter() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("server closed a connection")
            buf = state[sock][0] + chunk
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                state[sock][0] = buf
                continue
            head = buf[:head_end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0
                              else None])
            if len(buf) < head_end + 4 + length:
                state[sock][0] = buf
                continue
            status = int(buf[9:12])
            statuses[status] = statuses.get(status, 0) + 1
            latencies_ms.append((time.perf_counter() - state[sock][1]) * 1000)
            done += 1
            send(sock)
    elapsed = time.perf_counter() - started
    for sock in state:
        sock.close()
    latencies_ms.sort()
    out.put({"requests": done, "elapsed_s": elapsed, "statuses": statuses,
             "p50_ms": latencies_ms[len(latencies_ms) // 2] if latencies_ms else None,
             "p99_ms": latencies_ms[int(len(latencies_ms) * 0.99)] if latencies_ms else None})


def run_phase(port: int, requests: list[bytes], connections: int, duration_s: float,
              cpu: int | None) -> dict[str, Any]:
    """Run the load generator in a separate process and return its report."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=load, args=(port, requests, connections, duration_s, cpu, out))
    proc.start()
    report: dict[str, Any] = out.get(timeout=duration_s + 60)
    proc.join()
    report["rate_per_s"] = report["requests"] / report["elapsed_s"]
    return report


def main() -> int:
    """Start the simulator, run both phases, print the figures as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    fleet = load_fleet(FLEET)
    profile = fleet.suppliers[SUPPLIER]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    with start_simulator(FLEET) as sim:
        if pin:
            os.sched_setaffinity(sim.proc.pid, {cpus[0]})
        host = sim.url.removeprefix("http://")
        port = int(host.rsplit(":", 1)[1])
        base = f"/suppliers/{SUPPLIER}/v1/orders"

        def post(coid: str) -> bytes:
            body = json.dumps({"client_order_id": coid, "sku": "card-10", "quantity": 1,
                               "account": None, "callback_url": None}).encode()
            return build_request(host, "POST", base, body, profile.api_key, profile.secret)

        seed_orders = [f"seed-{i}" for i in range(1000)]
        run_phase(port, [post(c) for c in seed_orders], 8, 1.0, cpus[1] if pin else None)
        gets = [build_request(host, "GET", f"{base}/{c}", b"", profile.api_key, profile.secret)
                for c in seed_orders]
        posts = [post(f"bench-{i}") for i in range(int(args.duration_s * 12_000))]
        print(f"simulator pid {sim.proc.pid} pinned to cpu {cpus[0] if pin else 'any'}; "
              f"load pinned to cpu {cpus[1] if pin else 'any'}; "
              f"{args.connections} connections, {args.duration_s:g} s per phase", flush=True)
        for name, requests in (("GET /v1/orders/{id}", gets), ("POST /v1/orders", posts)):
            report = run_phase(port, requests, args.connections, args.duration_s,
                               cpus[1] if pin else None)
            print(json.dumps({"endpoint": name, "rate_per_s": round(report["rate_per_s"]),
                              "requests": report["requests"], "statuses": report["statuses"],
                              "p50_ms": round(report["p50_ms"], 2),
                              "p99_ms": round(report["p99_ms"], 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
