"""Latency parity: do trials (httpx) and bursts (Locust/geventhttpclient) measure alike?

Against ``tests/stall_server.py`` (50 ms fixed delay, loopback) in both modes, ``split``
(headers and body in two sends, no TCP_NODELAY: the delayed-ACK stall pattern) and
``unsplit`` (one send, TCP_NODELAY), it sends N sequential requests on one keep-alive
connection per client and reports p50/p99 of the full response time (request sent to last
body byte), the median time to headers and the median header-to-body gap.

Clients: ``bare`` (``http.client.HTTPConnection`` reused: the reference), ``trial`` (the
trial's own transport, ``AsyncTransport``: h11 over asyncio, quick ACKs only), ``httpx``
(``httpx.AsyncClient``, trust_env=False, the trial's client before), ``fast1`` (Locust
``FastHttpSession`` with concurrency=1, as a burst user's own client) and ``fast200``
(``FastHttpSession(concurrency=200)``, as the burst's shared follow-up session). Each
client runs in its own subprocess (Locust monkey-patches with gevent); the servers run in
the parent. Spacing: back to back (``gap_ms=0``) and ``--gap-ms`` idle after each response.

ACK modes (the client side of the stall):

- ``default``: no socket options, what every stock keep-alive client does;
- ``quick``: ``TCP_QUICKACK`` = 1 after every read that returned data, so the client's
  kernel acknowledges at once (Linux clears it again by itself; hence after every read).
  httpx: a wrapping httpcore network backend; gevent: a wrapping connection-pool socket;
- ``quickhook`` (httpx only): ``TCP_QUICKACK`` = 1 from a response event hook, i.e. once
  per response, after the headers, public httpx API only;
- ``delayed``: ``TCP_QUICKACK`` = 0 after every send, forcing delayed-ACK mode: the probe
  that exposes the stall deterministically (capped at ``--probe-n`` requests).

Usage::

    .venv/bin/python bench/latency_parity.py [--n 200] [--gap-ms 100] [--probe-n 40]
        [--clients bare,httpx,fast1,fast200] [--acks default,quick,quickhook,delayed]

One JSON line per combination on stdout. Loopback only; every request has a 5 s timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stall_detect_sketch import (  # noqa: E402
    ResponseTiming,
    stall_penalty_ms,
    stall_suspected,
)

TIMEOUT_S = 5.0
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # Linux only
CLIENTS = ("bare", "trial", "httpx", "fast1", "fast200")
ACKS = ("default", "quick", "quickhook", "delayed")
PATH = "/v1/orders"
BODY = b'{"client_order_id": "parity-1", "sku": "card-10", "quantity": 1}'
HEADERS = {"Content-Type": "application/json"}


def set_quickack(sock: Any, on: bool) -> None:
    """Set TCP_QUICKACK; silently a no-op where the OS lacks it or the socket is gone."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1 if on else 0)


class WireMarks:
    """Socket-level timestamps of one request: the first send of the request and the first
    and last reads that returned data. ``reset()`` before each request."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.first_write = self.first_read = self.last_read = 0.0

    def wrote(self) -> None:
        if not self.first_write:
            self.first_write = time.perf_counter()

    def read(self) -> None:
        now = time.perf_counter()
        if not self.first_read:
            self.first_read = now
        self.last_read = now

    def sample(self, start: float, end: float) -> list[float]:
        """[first byte ms, wire ms, whole client call ms], wire times from the first send."""
        return [(self.first_read - self.first_write) * 1000,
                (self.last_read - self.first_write) * 1000, (end - start) * 1000]


# --- bare: http.client ------------------------------------------------------------------

class _AckedSocket(socket.socket):
    """A plain socket that sets TCP_QUICKACK after reads (quick) or 0 after sends (delayed)
    and records wire timestamps."""

    ack = "default"
    marks = WireMarks()

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        n = super().recv_into(*args, **kwargs)
        if n:
            self.marks.read()
            if self.ack == "quick":
                set_quickack(self, True)
        return n

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self.marks.wrote()
        super().sendall(*args, **kwargs)
        if self.ack != "default":  # quick: leave delayed-ACK mode before the answer comes
            set_quickack(self, self.ack == "quick")


def run_bare(url: str, ack: str, n: int, gap_s: float, warmup: int) -> list[list[float]]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    conn.connect()
    assert conn.sock is not None
    sock = _AckedSocket(fileno=conn.sock.detach())
    sock.ack, sock.marks = ack, WireMarks()
    sock.settimeout(TIMEOUT_S)
    conn.sock = sock
    out = []
    for i in range(warmup + n):
        sock.marks.reset()
        start = time.perf_counter()
        conn.request("POST", PATH, body=BODY, headers=HEADERS)
        reply = conn.getresponse()
        reply.read()
        end = time.perf_counter()
        if reply.status != 200:
            raise RuntimeError(f"bad answer {reply.status}")
        if i >= warmup:
            out.append(sock.marks.sample(start, end))
        if gap_s:
            time.sleep(gap_s)
    conn.close()
    return out


# --- httpx ------------------------------------------------------------------------------

def httpx_wire_client(ack: str = "quick", marks: WireMarks | None = None,
                      **kwargs: Any) -> Any:
    """An ``httpx.AsyncClient`` whose sockets ACK at once (``quick``: TCP_QUICKACK = 1 after
    every read that returned data), late (``delayed``: 0 after every write) or as the OS
    likes (``default``), and that records wire timestamps into ``marks``.

    The hook is an httpcore network backend wrapping every stream. httpx has no public
    parameter for the backend, so the transport's pool is rebuilt with it.
    """
    import httpcore
    import httpx

    wire = marks if marks is not None else WireMarks()

    class AckStream(httpcore.AsyncNetworkStream):
        def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
            self._inner = inner
            self._sock = inner.get_extra_info("socket")

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            data = await self._inner.read(max_bytes, timeout)
            if data:
                wire.read()
                if ack == "quick":
                    set_quickack(self._sock, True)
            return data

        async def write(self, buffer: bytes, timeout: float | None = None) -> None:
            wire.wrote()
            await self._inner.write(buffer, timeout)
            if ack != "default":  # quick: leave delayed-ACK mode before the answer comes
                set_quickack(self._sock, ack == "quick")

        async def aclose(self) -> None:
            await self._inner.aclose()

        async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                            timeout: float | None = None) -> httpcore.AsyncNetworkStream:
            return AckStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class AckBackend(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.AnyIOBackend()

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                              local_address: str | None = None,
                              socket_options: Any = None) -> httpcore.AsyncNetworkStream:
            return AckStream(await self._inner.connect_tcp(
                host, port, timeout=timeout, local_address=local_address,
                socket_options=socket_options))

        async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                      socket_options: Any = None,
                                      ) -> httpcore.AsyncNetworkStream:
            return await self._inner.connect_unix_socket(path, timeout, socket_options)

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    limits = kwargs.pop("limits", httpx.Limits(max_connections=200,
                                               max_keepalive_connections=200))
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry, network_backend=AckBackend())
    return httpx.AsyncClient(transport=transport, trust_env=False, **kwargs)


async def quickack_response_hook(response: Any) -> None:
    """httpx response event hook: ACK the headers now (runs before the body is read)."""
    stream = response.extensions.get("network_stream")
    if stream is not None:
        set_quickack(stream.get_extra_info("socket"), True)


def run_httpx(url: str, ack: str, n: int, gap_s: float, warmup: int) -> list[list[float]]:
    import asyncio

    import httpx

    async def main() -> list[list[float]]:
        marks = WireMarks()
        hooks = [quickack_response_hook] if ack == "quickhook" else []
        client = httpx_wire_client("default" if ack == "quickhook" else ack, marks,
                                   timeout=httpx.Timeout(TIMEOUT_S),
                                   event_hooks={"response": hooks})
        out = []
        async with client:
            for i in range(warmup + n):
                marks.reset()
                start = time.perf_counter()
                reply = await client.request("POST", url + PATH, content=BODY,
                                             headers=HEADERS)
                end = time.perf_counter()
                reply.raise_for_status()
                if i >= warmup:
                    out.append(marks.sample(start, end))
                if gap_s:
                    await asyncio.sleep(gap_s)
        return out

    return asyncio.run(main())


# --- the trial's own transport ----------------------------------------------------------

def run_trial(url: str, ack: str, n: int, gap_s: float, warmup: int) -> list[list[float]]:
    """``harness.run.async_transport.AsyncTransport`` as trials use it (it always ACKs at
    once: ``ack`` must be ``quick``). Reads are marked through its ``set_quickack``, which
    it calls after every read; the first write is marked at the call's start."""
    import asyncio

    from harness.drivers.base import HttpRequest
    from harness.run import async_transport

    if ack != "quick":
        raise SystemExit("the trial transport always ACKs at once: --acks quick")
    marks = WireMarks()
    ack_now = async_transport.set_quickack

    def marked(sock: object) -> None:
        marks.read()
        ack_now(sock)

    async_transport.set_quickack = marked

    async def main() -> list[list[float]]:
        transport = async_transport.AsyncTransport(TIMEOUT_S)
        out = []
        for i in range(warmup + n):
            marks.reset()
            start = time.perf_counter()
            marks.wrote()
            reply = await transport.send(HttpRequest("POST", url + PATH, HEADERS, BODY,
                                                     read_only=False))
            end = time.perf_counter()
            if reply.status != 200:
                raise RuntimeError(f"bad answer {reply.status} {reply.transport_error}")
            if i >= warmup:
                out.append(marks.sample(start, end))
            if gap_s:
                await asyncio.sleep(gap_s)
        await transport.aclose()
        return out

    return asyncio.run(main())


# --- Locust FastHttpSession (gevent) ----------------------------------------------------

def fasthttp_wire(session: Any, ack: str = "quick", marks: WireMarks | None = None) -> Any:
    """Make a Locust ``FastHttpSession``'s sockets ACK at once (``quick``) or late
    (``delayed``), recording wire timestamps into ``marks``.

    Swaps the session's geventhttpclient ``HTTPClientPool`` for one (same arguments) whose
    connection pools hand out sockets wrapped to set TCP_QUICKACK after each ``recv``
    (``sendall`` for delayed). The wrapper sits on whatever socket the pool made, plain or
    TLS.
    """
    from geventhttpclient.client import HTTPClientPool

    wire = marks if marks is not None else WireMarks()

    class AckSocket:
        def __init__(self, sock: Any) -> None:
            self._sock = sock

        def recv(self, *args: Any) -> bytes:
            data: bytes = self._sock.recv(*args)
            if data:
                wire.read()
                if ack == "quick":
                    set_quickack(self._sock, True)
            return data

        def recv_into(self, *args: Any) -> int:
            n: int = self._sock.recv_into(*args)
            if n:
                wire.read()
                if ack == "quick":
                    set_quickack(self._sock, True)
            return n

        def sendall(self, *args: Any) -> None:
            wire.wrote()
            self._sock.sendall(*args)
            if ack != "default":  # quick: leave delayed-ACK mode before the answer comes
                set_quickack(self._sock, ack == "quick")

        def fileno(self) -> int:
            return int(self._sock.fileno())

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sock, name)

    pool_classes: dict[type, type] = {}

    def ack_pool_class(base: type) -> type:
        if base not in pool_classes:
            def _create_socket(self: Any) -> Any:
                return AckSocket(base._create_socket(self))  # type: ignore[attr-defined]
            pool_classes[base] = type(f"Ack{base.__name__}", (base,),
                                      {"_create_socket": _create_socket})
        return pool_classes[base]

    class AckClientPool(HTTPClientPool):
        def get_client(self, url: Any) -> Any:
            client = super().get_client(url)
            pool = client._connection_pool
            if type(pool) not in pool_classes.values():
                pool.__class__ = ack_pool_class(type(pool))
            return client

    agent = session.client
    agent.clientpool = AckClientPool(**agent.clientpool.client_args)
    return session


def run_fast(url: str, ack: str, n: int, gap_s: float, warmup: int,
             concurrency: int) -> list[list[float]]:
    import gevent
    from locust.contrib.fasthttp import FastHttpSession
    from locust.event import EventHook

    session = FastHttpSession(base_url=None, request_event=EventHook(), user=None,
                              network_timeout=TIMEOUT_S, connection_timeout=TIMEOUT_S,
                              max_retries=0, concurrency=concurrency)
    marks = WireMarks()
    fasthttp_wire(session, ack, marks)
    out = []
    for i in range(warmup + n):
        marks.reset()
        start = time.perf_counter()
        with session.request("POST", url + PATH, data=BODY, headers=dict(HEADERS),
                             catch_response=True) as reply:
            body = reply.content
            end = time.perf_counter()
            if reply.status_code != 200 or not body:
                raise RuntimeError(f"bad answer {reply.status_code}: {reply.error!r}")
            reply.success()
        if i >= warmup:
            out.append(marks.sample(start, end))
        if gap_s:
            gevent.sleep(gap_s)
    return out


# --- driver -----------------------------------------------------------------------------

def child(args: argparse.Namespace) -> None:
    gap_s = args.gap_ms / 1000
    if args.client == "bare":
        samples = run_bare(args.url, args.ack, args.n, gap_s, args.warmup)
    elif args.client == "trial":
        samples = run_trial(args.url, args.ack, args.n, gap_s, args.warmup)
    elif args.client == "httpx":
        samples = run_httpx(args.url, args.ack, args.n, gap_s, args.warmup)
    else:
        samples = run_fast(args.url, args.ack, args.n, gap_s, args.warmup,
                           int(args.client[4:]))
    json.dump(samples, sys.stdout)


def pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


def summarise(server: str, client: str, ack: str, gap_ms: float,
              samples: list[list[float]]) -> dict[str, Any]:
    first = [s[0] for s in samples]
    wire = [s[1] for s in samples]
    call = [s[2] for s in samples]
    mode = "quick" if ack.startswith("quick") else ack
    timings = [ResponseTiming(f, w, "delayed" if mode == "delayed" else
                              ("quick" if mode == "quick" else "default"))
               for f, w in zip(first, wire, strict=True)]
    return {"server": server, "client": client, "ack": ack, "gap_ms": gap_ms,
            "n": len(samples), "p50_ms": pct(wire, 50), "p99_ms": pct(wire, 99),
            "call_p50_ms": pct(call, 50), "call_p99_ms": pct(call, 99),
            "first_byte_p50_ms": pct(first, 50),
            "body_gap_p50_ms": pct([w - f for f, w in zip(first, wire, strict=True)], 50),
            "stall_suspected": stall_suspected(timings),
            "stall_penalty_ms": round(stall_penalty_ms(timings), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=100.0)
    parser.add_argument("--probe-n", type=int, default=40)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--acks", default=",".join(ACKS))
    parser.add_argument("--servers", default="split,unsplit")
    parser.add_argument("--spacings", default=None,
                        help="comma-separated gaps in ms (default: 0 and --gap-ms)")
    parser.add_argument("--child", dest="client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ack", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        child(args)
        return

    from tests.stall_server import StallServer

    spacings = ([float(g) for g in args.spacings.split(",")] if args.spacings
                else [0.0, args.gap_ms])
    servers = {name: StallServer(split=name == "split", delay_s=args.delay_ms / 1000).start()
               for name in args.servers.split(",")}
    try:
        for name, server in servers.items():
            for gap_ms in spacings:
                for client in args.clients.split(","):
                    for ack in args.acks.split(","):
                        if (ack == "quickhook" and client != "httpx") \
                                or (client == "trial" and ack != "quick"):
                            continue
                        n = min(args.n, args.probe_n) if ack == "delayed" else args.n
                        cmd = [sys.executable, __file__, "--child", client, "--url", server.url,
                               "--ack", ack, "--n", str(n), "--gap-ms", str(gap_ms),
                               "--warmup", str(args.warmup)]
                        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                              timeout=600, env={**os.environ,
                                                                "PYTHONWARNINGS": "ignore"})
                        if done.returncode != 0:
                            print(json.dumps({"server": name, "client": client, "ack": ack,
                                              "gap_ms": gap_ms, "error": done.stderr[-400:]}),
                                  flush=True)
                            continue
                        row = summarise(name, client, ack, gap_ms, json.loads(done.stdout))
                        print(json.dumps(row), flush=True)
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
