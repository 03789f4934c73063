"""What the transports put on the wire (real sockets on 127.0.0.1): neither keeps a
supplier's cookies, and both verify an https supplier's certificate."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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
from locust.event import EventHook
from harness.drivers.base import HttpRequest
from harness.run.gevent_transport import GeventTransport
seen = []  # what Locust's statistics would get (its web UI): name, failure
event = EventHook()
event.add_listener(lambda name, exception, **_: seen.append((name, exception)))
transport = GeventTransport(5.0, request_event=event)
for _ in range(3):
    answer = transport.send(HttpRequest("GET", sys.argv[1] + "/v1/orders/x", {}), "get")
    assert answer.status == 201, answer
assert seen == [("get", None)] * 3, seen
"""


@pytest.mark.parametrize("transport", ["async", "gevent"])
def test_no_transport_keeps_a_suppliers_cookies(server: FirstRead, transport: str) -> None:
    """A supplier that sets a cookie never gets it back, from trials or bursts alike, so
    both measure it as a merchant's stateless API client would (and a burst's requests
    reach Locust's statistics, by name, when they are kept)."""
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


GEVENT_TLS = """
import json, ssl, sys
from harness.drivers.base import HttpRequest
from harness.run.gevent_transport import GeventTransport
url, cafile = sys.argv[1], sys.argv[2]
trusted = GeventTransport(5.0, tls=ssl.create_default_context(cafile=cafile))
default = GeventTransport(5.0)
answers = [trusted.send(HttpRequest("GET", url + "/v1/balance", {}), "get") for _ in range(2)]
untrusted = default.send(HttpRequest("GET", url + "/v1/balance", {}), "get")
print(json.dumps({"trusted": [[a.status, a.body.decode()] for a in answers],
                  "untrusted": [untrusted.status, untrusted.transport_error]}))
"""


def test_bursts_verify_https_suppliers_as_trials_do(tmp_path: Path) -> None:
    """The burst transport verifies an https supplier's certificate, as the trial's does
    (Locust's FastHttpSession, used before, skipped the check by default): a trusted one
    is asked over one keep-alive TLS connection, an untrusted one gets no request."""
    from test_async_transport import Scripted, answer, read_request, self_signed

    server_tls, _client = self_signed(tmp_path)

    def handler(conn: socket.socket, number: int) -> None:
        while read_request(conn) is not None:
            conn.sendall(answer(b'{"tls": true}'))

    server = Scripted(handler, server_tls)
    try:
        done = subprocess.run([sys.executable, "-c", GEVENT_TLS, server.url,
                               str(tmp_path / "cert.pem")], capture_output=True, text=True,
                              timeout=60, check=False)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["trusted"] == [[201, '{"tls": true}']] * 2
    assert got["untrusted"] == [0, "not_sent:ConnectError"]  # nothing left: nothing bought
    assert server.connections == 2  # the trusted one kept alive, the untrusted one refused


GEVENT_POST = """
import json, sys
from harness.drivers.base import HttpRequest
from harness.run.gevent_transport import GeventTransport
transport = GeventTransport(5.0)
answer = transport.send(HttpRequest("POST", sys.argv[1] + "/v1/orders", {}, b'{"c": 1}',
                                    read_only=False), "post")
print(json.dumps([answer.status, answer.transport_error]))
"""


@pytest.mark.parametrize("transport", ["async", "gevent"])
def test_a_post_whose_connection_dies_is_sent_once(transport: str) -> None:
    """A supplier that takes a POST and closes the connection without answering gets it
    once: neither transport sends it again (its outcome is unknown; the lifecycle asks)."""
    from test_async_transport import Scripted, post, read_request, send_all

    posts: list[bytes] = []

    def hang_up(conn: socket.socket, number: int) -> None:
        head = read_request(conn)
        if head is not None:
            posts.append(head.split(b"\r\n")[0])

    server = Scripted(hang_up)
    try:
        if transport == "gevent":
            done = subprocess.run([sys.executable, "-c", GEVENT_POST, server.url],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr[-2000:]
            status, error = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            (answer,) = send_all(AsyncTransport(5.0), [post(server.url)])
            status, error = answer.status, answer.transport_error
    finally:
        server.close()
    assert status == 0 and error.startswith("connect_error:"), error
    assert posts == [b"POST /v1/orders HTTP/1.1"]
    assert server.connections == 1


GEVENT_REFUSED = """
import json, sys
from harness.drivers.base import HttpRequest
from harness.run.gevent_transport import GeventTransport
answer = GeventTransport(5.0).send(HttpRequest("POST", sys.argv[1] + "/v1/orders", {}, b"{}",
                                               read_only=False), "post")
print(json.dumps([answer.status, answer.transport_error]))
"""


def test_a_refused_connection_is_not_sent_in_both_modes() -> None:
    """A supplier whose port refuses the connection bought nothing, and both transports
    say so alike (``not_sent:ConnectError``), so a burst records a refusal, not an
    unknown outcome."""
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    done = subprocess.run([sys.executable, "-c", GEVENT_REFUSED, url], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    from test_async_transport import post, send_all

    (trial,) = send_all(AsyncTransport(5.0), [post(url)])
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, "not_sent:ConnectError"]
    assert (trial.status, trial.transport_error) == (0, "not_sent:ConnectError")
