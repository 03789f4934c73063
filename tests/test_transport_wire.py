"""What the transports put on the wire (real sockets on 127.0.0.1): neither keeps a
supplier's cookies."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from harness.drivers.base import HttpRequest
from harness.run.async_transport import AsyncTransport

ANSWER = (b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Type: application/json\r\n"
          b"Set-Cookie: session=abc; Path=/\r\n\r\n{}")


class FirstRead:
    """A keep-alive server that answers every request with a cookie and records the
    start of each request (its first recv())."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.first_reads: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.sock, self.sock.accept()[0] as conn:
            conn.settimeout(5)
            while True:
                first = conn.recv(65536)
                if not first:
                    return
                self.first_reads.append(first)
                data = first
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(ANSWER)


@pytest.fixture
def server() -> Iterator[FirstRead]:
    yield FirstRead()


GEVENT = """
import sys
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook
from harness.drivers.base import HttpRequest
from harness.run.gevent_transport import send_request
session = FastHttpSession(base_url=None, request_event=EventHook(), user=None,
                          network_timeout=5, connection_timeout=5, max_retries=0)
for _ in range(3):
    answer = send_request(session, HttpRequest("GET", sys.argv[1] + "/v1/orders/x", {}),
                          "get")
    assert answer.status == 201, answer
"""


@pytest.mark.parametrize("transport", ["async", "gevent"])
def test_no_transport_keeps_a_suppliers_cookies(server: FirstRead, transport: str) -> None:
    """A supplier that sets a cookie never gets it back, from trials or bursts alike, so
    both measure it as a merchant's stateless API client would."""
    if transport == "gevent":
        done = subprocess.run([sys.executable, "-c", GEVENT, server.url], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    else:
        async def run() -> None:
            transport_ = AsyncTransport(5.0)
            for _ in range(3):
                answer = await transport_.send(HttpRequest("GET", f"{server.url}/v1/o", {}))
                assert answer.status == 201
            await transport_.aclose()

        asyncio.run(run())
    assert len(server.first_reads) == 3
    assert not any(b"\r\ncookie:" in first.lower() for first in server.first_reads)
