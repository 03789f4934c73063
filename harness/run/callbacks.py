"""The callback receiver: one HTTP/1.1 implementation, served by either executor.

Suppliers POST to ``<receiver>/callbacks/<supplier>``. :class:`CallbackConnection` is the
receiver's sans-I/O core, built on h11 (a well-kept sans-I/O HTTP/1.1 parser, already
installed with httpx): it takes bytes, hands every complete request to a handler (which
verifies the signature with the supplier's driver and answers 2xx to acknowledge or 401
for a forgery) and gives back the bytes to send. Chunked bodies, keep-alive and
pipelining are h11's. A body over ``max_body`` gets 413 and the connection is closed;
a connection idle for ``idle_s`` (between requests, or within one: a slow-loris) or
taking longer than ``request_s`` over one request is closed; every rejection, whatever
its reason (``malformed``, ``too_large``, ``method``, ``handler_error``, ``idle``,
``slow_request``, ``connection_error``, ``error``), is passed to ``on_reject`` so the
executor can log it. A keep-alive connection that closes quietly after it was served is
not a rejection.

Two servers drive it on a free loopback port: :class:`CallbackReceiver` in the trial's
asyncio loop, and :class:`GeventCallbackReceiver` in a burst worker (imported from
:mod:`harness.run.worker` only, which has gevent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11

MAX_BODY = 1 << 20
IDLE_S = 30.0
REQUEST_S = 60.0
"""The longest one request may take to arrive whole, from its first byte."""


@dataclass(frozen=True, slots=True)
class RawCallback:
    method: str
    path: str  # with query, exactly as requested
    headers: dict[str, str]  # lower-case names
    body: bytes


Handler = Callable[[RawCallback], "int | tuple[int, bytes]"]
"""A callback's handler: the status to answer, or the status and a body (a dialect's
acknowledgement, e.g. ``success``)."""
Reject = Callable[[str, str], None]
"""``on_reject(reason, path)``: a request the receiver refused before the handler."""


def _ignore(reason: str, path: str) -> None:
    """The default ``on_reject``."""


class CallbackConnection:
    """One connection's HTTP/1.1, with no I/O: :meth:`feed` bytes in, bytes out."""

    def __init__(self, handler: Handler, *, max_body: int = MAX_BODY,
                 on_reject: Reject = _ignore) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self._handler = handler
        self._max_body = max_body
        self._on_reject = on_reject
        self._request: h11.Request | None = None
        self._body = bytearray()
        self.closed = False
        self.served = 0
        """Requests answered on this connection."""

    @property
    def mid_request(self) -> bool:
        """A request has begun (a byte of it came) and is not yet answered."""
        return self._h11.their_state is h11.SEND_BODY or (
            self._h11.their_state is h11.IDLE and bool(self._h11.trailing_data[0]))

    def reject(self, reason: str) -> None:
        """Report a refusal the server made itself (idle, too slow, broken connection)."""
        self._on_reject(reason, self._path())

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the peer (b"" at its end of stream); the bytes to send back.

        After this, :attr:`closed` says whether the connection should be closed."""
        out = bytearray()
        self._h11.receive_data(data)
        while not self.closed:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._on_reject("malformed", self._path())
                out += self._answer(exc.error_status_hint or 400, close=True)
                break
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
                    self._h11.start_next_cycle()
                    self._request = None
                    continue
                break
            if isinstance(event, h11.Request):
                self._request, self._body = event, bytearray()
                declared = dict(event.headers).get(b"content-length", b"")
                if declared.isdigit() and int(declared) > self._max_body:
                    self._on_reject("too_large", self._path())
                    out += self._answer(413, close=True)
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._max_body:
                    self._on_reject("too_large", self._path())
                    out += self._answer(413, close=True)
            elif isinstance(event, h11.EndOfMessage):
                answer = self._dispatch()
                status, body = answer if isinstance(answer, tuple) else (answer, b"")
                out += self._answer(status, body=body)
                self.served += 1
            elif isinstance(event, h11.ConnectionClosed):
                self.closed = True
        if self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state is h11.CLOSED:
            self.closed = True
        return bytes(out)

    def _path(self) -> str:
        return self._request.target.decode("latin-1") if self._request is not None else ""

    def _dispatch(self) -> int | tuple[int, bytes]:
        request = self._request
        assert request is not None
        method = request.method.decode("latin-1")
        if method != "POST":
            self._on_reject("method", self._path())
            return 405
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in request.headers}
        try:
            return self._handler(RawCallback(method, self._path(), headers, bytes(self._body)))
        except Exception:  # a handler bug must not kill the receiver
            self._on_reject("handler_error", self._path())
            return 400

    def _answer(self, status: int, *, close: bool = False, body: bytes = b"") -> bytes:
        headers = [("content-length", str(len(body)))]
        if body:
            headers.append(("content-type", "text/plain"))
        if close:
            headers.append(("connection", "close"))
        try:
            data = self._h11.send(h11.Response(status_code=status, headers=headers)) or b""
            if body:
                data += self._h11.send(h11.Data(data=body)) or b""
            data += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            data = b""
            close = True
        if close:
            self.closed = True
        return data


class CallbackReceiver:
    """Serve ``handler`` on 127.0.0.1 from asyncio; ``url`` is known once started."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", *, max_body: int = MAX_BODY,
                 idle_s: float = IDLE_S, request_s: float = REQUEST_S,
                 on_reject: Reject = _ignore) -> None:
        self._handler = handler
        self._host = host
        self._max_body = max_body
        self._idle_s = idle_s
        self._request_s = request_s
        self._on_reject = on_reject
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, self._host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):  # idle keep-alive connections end their handlers
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> CallbackReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        connection = CallbackConnection(self._handler, max_body=self._max_body,
                                        on_reject=self._on_reject)
        clock = _RequestClock(self._idle_s, self._request_s)
        try:
            while not connection.closed:
                try:
                    data = await asyncio.wait_for(reader.read(65536),
                                                  clock.wait_s(connection))
                except TimeoutError:
                    clock.expired(connection)
                    break
                out = connection.feed(data)
                if out:
                    writer.write(out)
                    await writer.drain()
                if not data:
                    break
        except OSError:
            if connection.mid_request:
                connection.reject("connection_error")
        except Exception:  # a receiver bug must be logged, never kill the run
            connection.reject("error")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class GeventCallbackReceiver:
    """Serve ``handler`` on 127.0.0.1 from gevent (a burst worker); ``url`` once started."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", *,
                 max_body: int = MAX_BODY, idle_s: float = IDLE_S,
                 request_s: float = REQUEST_S, on_reject: Reject = _ignore) -> None:
        from gevent.server import StreamServer

        self._handler = handler
        self._max_body = max_body
        self._idle_s = idle_s
        self._request_s = request_s
        self._on_reject = on_reject
        self._server = StreamServer((host, 0), self._serve)
        self.url = ""
        self._host = host

    def start(self) -> str:
        self._server.start()
        self.url = f"http://{self._host}:{self._server.server_port}"
        return self.url

    def stop(self, timeout: float = 1.0) -> None:
        self._server.stop(timeout=timeout)

    def _serve(self, sock: Any, address: Any) -> None:
        connection = CallbackConnection(self._handler, max_body=self._max_body,
                                        on_reject=self._on_reject)
        clock = _RequestClock(self._idle_s, self._request_s)
        try:
            while not connection.closed:
                sock.settimeout(clock.wait_s(connection))
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    clock.expired(connection)
                    break
                out = connection.feed(data)
                if out:
                    sock.sendall(out)
                if not data:
                    break
        except OSError:
            if connection.mid_request:
                connection.reject("connection_error")
        except Exception:  # a receiver bug must be logged, never kill the worker
            connection.reject("error")
        finally:
            with contextlib.suppress(OSError):
                sock.close()


class _RequestClock:
    """The two limits of a connection: ``idle_s`` without a byte, and ``request_s`` from
    the first byte of a request to its end (so a slow-loris trickle cannot hold it)."""

    def __init__(self, idle_s: float, request_s: float) -> None:
        self._idle_s = idle_s
        self._request_s = request_s
        self._began: float | None = None

    def wait_s(self, connection: CallbackConnection) -> float:
        """How long the next read may wait."""
        if not connection.mid_request:
            self._began = None
            return self._idle_s
        now = time.monotonic()
        if self._began is None:
            self._began = now
        return max(0.0, min(self._idle_s, self._began + self._request_s - now))

    def expired(self, connection: CallbackConnection) -> None:
        """A read timed out: report it, unless a served keep-alive connection sat idle."""
        if connection.mid_request:
            slow = self._began is not None and \
                time.monotonic() - self._began >= self._request_s - 0.01
            connection.reject("slow_request" if slow else "idle")
        elif connection.served == 0:
            connection.reject("idle")


__all__ = ["CallbackConnection", "CallbackReceiver", "GeventCallbackReceiver", "RawCallback"]


def acknowledged(side: Any, status: int) -> int | tuple[int, bytes]:
    """``status``, with the body a supplier's dialect wants as its acknowledgement of an
    accepted callback (e.g. Juhe's ``success``), if it names one."""
    ack = getattr(side.driver, "callback_ack", b"") if status == 200 else b""
    return (status, ack) if ack else status
