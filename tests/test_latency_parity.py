"""Both transports measure a supplier's latency the same way, even on a server that
writes headers and body in two sends without TCP_NODELAY (the delayed-ACK stall).

Against ``tests/stall_server.py`` answering in 50 ms: a stock keep-alive client sent
back to back waits ~40 ms more for every answer; the trial's httpx transport and the
burst's Locust transport do not. Exact figures (within 2 ms of a bare quick-ACK client)
are in ``bench/LATENCY_PARITY.md``; here only the stall's presence or absence is checked.
"""

from __future__ import annotations

import asyncio
import http.client
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stall_server import StallServer

from harness.drivers.base import HttpRequest
from harness.run.async_transport import AsyncTransport

pytestmark = pytest.mark.serial  # compares latencies to the millisecond: run alone

DELAY_MS = 50.0
STALL_FREE_MS = DELAY_MS + 20  # a stalled answer takes DELAY_MS + ~40
N = 20


def _stock_client_ms(url: str) -> float:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    times = []
    for _ in range(N + 2):
        start = time.perf_counter()
        conn.request("POST", "/v1/orders", body=b"{}")
        conn.getresponse().read()
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return statistics.median(times[2:])


def _httpx_ms(url: str) -> float:
    async def main() -> float:
        transport = AsyncTransport(5.0)
        times = []
        try:
            for _ in range(N + 2):
                start = time.perf_counter()
                response = await transport.send(HttpRequest("POST", url + "/v1/orders", {},
                                                             b"{}", read_only=False))
                assert response.status == 200
                times.append((time.perf_counter() - start) * 1000)
        finally:
            await transport.aclose()
        return statistics.median(times[2:])
    return asyncio.run(main())


GEVENT_CLIENT = """
import statistics, sys, time
from harness.drivers.base import HttpRequest
from harness.run.gevent_transport import GeventTransport
transport = GeventTransport(5.0)
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    response = transport.send(HttpRequest("POST", sys.argv[1] + "/v1/orders", {}, b"{}",
                                          read_only=False), "x")
    assert response.status == 200, response
    times.append((time.perf_counter() - start) * 1000)
print(statistics.median(times[2:]))
"""


def _gevent_ms(url: str) -> float:
    done = subprocess.run([sys.executable, "-c", GEVENT_CLIENT, url, str(N + 2)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip())


def test_stall_server_stalls_a_stock_keep_alive_client() -> None:
    """The test server does reproduce the stall: a stock client waits ~40 ms per answer."""
    with StallServer(split=True, delay_s=DELAY_MS / 1000) as server:
        assert _stock_client_ms(server.url) > DELAY_MS + 30


def test_trial_and_burst_transports_see_the_supplier_latency() -> None:
    """On the stalling server, httpx (trials) and Locust's client (bursts) both see the
    server's 50 ms, not 50 + 40, and agree with each other within a few ms."""
    with StallServer(split=True, delay_s=DELAY_MS / 1000) as server:
        trial, burst = _httpx_ms(server.url), _gevent_ms(server.url)
    assert DELAY_MS <= trial < STALL_FREE_MS and DELAY_MS <= burst < STALL_FREE_MS
    assert abs(trial - burst) < 10
