"""A fixed-delay HTTP/1.1 test server that can reproduce the delayed-ACK stall.

Python's ``http.server`` (and many small frameworks) answer with two ``send()`` calls on a
socket without ``TCP_NODELAY``: the status line and headers first, then the body. Nagle's
algorithm holds the second, small segment until the first is acknowledged, and a
keep-alive client whose kernel is delaying its ACKs (Linux does this on a busy
request/response connection) acknowledges only when its delayed-ACK timer fires, about
40 ms later on Linux. The body, and so the response, arrives that much late. A client on a
connection that sat idle acknowledges at once and does not see it.

:class:`StallServer` serves any path and method (GET, POST, PUT, PATCH, DELETE) after a
fixed delay (``delay_s``, default 50 ms) with a small JSON body, keep-alive, and has two
modes:

- ``split=True``: headers and body in two ``send()`` calls, ``TCP_NODELAY`` off (the stall
  pattern, byte for byte what ``BaseHTTPRequestHandler`` does);
- ``split=False``: the whole response in one ``send()``, ``TCP_NODELAY`` on (a server that
  never stalls a client).

It binds 127.0.0.1 on a free port, runs in a daemon thread and is a context manager::

    with StallServer(split=True) as server:
        httpx.get(server.url + "/anything")

Standard library only, so the benchmark and the tests can import it anywhere.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import cast

DEFAULT_BODY = b'{"ok": true, "order_id": "stall-0001", "state": "accepted"}'


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, split: bool, delay_s: float, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.split = split
        self.delay_s = delay_s
        self.body = body
        self.requests = 0
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client asks to close

    def setup(self) -> None:
        super().setup()
        server = cast(_Server, self.server)
        # Explicit either way: a split server must stall even if the OS defaults change.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,
                                   0 if server.split else 1)
        with server.lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        server = cast(_Server, self.server)
        with server.lock:
            server.connections.discard(self.connection)
        super().finish()

    def _answer(self) -> None:
        server = cast(_Server, self.server)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if server.delay_s > 0:
            time.sleep(server.delay_s)
        with server.lock:
            server.requests += 1
        body = server.body
        if server.split:
            # As http.server does: headers are buffered and flushed by end_headers() in one
            # send, then the body goes in a second send (wfile is unbuffered).
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            head = ("HTTP/1.1 200 OK\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    "\r\n").encode("ascii")
            self.wfile.write(head + body)

    do_GET = _answer
    do_POST = _answer
    do_PUT = _answer
    do_PATCH = _answer
    do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a benchmark server must not write a line per request."""


class StallServer:
    """Fixed-delay keep-alive HTTP server on 127.0.0.1; ``split`` selects the stall pattern."""

    def __init__(self, *, split: bool = True, delay_s: float = 0.05,
                 body: bytes = DEFAULT_BODY) -> None:
        self.split = split
        self.delay_s = delay_s
        self.body = body
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("StallServer is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        """Requests answered so far."""
        return self._server.requests if self._server is not None else 0

    def start(self) -> StallServer:
        if self._server is not None:
            return self
        server = _Server(self.split, self.delay_s, self.body)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"stall-server-{server.server_address[1]}", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        with server.lock:
            open_connections = list(server.connections)
        for conn in open_connections:  # keep-alive handler threads block on a read: wake them
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=2)

    def __enter__(self) -> StallServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
