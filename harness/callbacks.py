"""The built-in callback receiver: a small HTTP/1.1 server on a free loopback port.

Suppliers POST to ``<receiver>/callbacks/<supplier>``. The receiver hands the raw
request to a handler (the trial runner), which verifies the signature with the
supplier's driver and answers 2xx to acknowledge or 401 for a forgery. It runs in the
trial's own event loop (plain asyncio streams, so it never touches signal handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}
_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class RawCallback:
    method: str
    path: str  # with query, exactly as requested
    headers: dict[str, str]  # lower-case names
    body: bytes


Handler = Callable[[RawCallback], Awaitable[int]]


class CallbackReceiver:
    """Serve ``handler`` on 127.0.0.1; ``url`` is known once :meth:`start` returns."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self._handler = handler
        self._host = host
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
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                parts = request_line.decode("latin-1").split()
                if len(parts) != 3:
                    await self._reply(writer, 400, keep_alive=False)
                    break
                method, path, _version = parts
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > _MAX_BODY:
                    await self._reply(writer, 413, keep_alive=False)
                    break
                body = await reader.readexactly(length) if length else b""
                if method != "POST":
                    status = 405
                else:
                    try:
                        status = await self._handler(RawCallback(method, path, headers, body))
                    except Exception:  # a handler bug must not kill the receiver
                        status = 400
                keep_alive = headers.get("connection", "").lower() != "close"
                await self._reply(writer, status, keep_alive=keep_alive)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, *, keep_alive: bool) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Length: 0\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode())
        await writer.drain()
