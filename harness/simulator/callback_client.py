"""The simulator's callback sender: a small HTTP/1.1 POST client with keep-alive pools.

httpx's async client costs about a millisecond of CPU per request; at a few hundred
orders a second (two or three callbacks each) that alone saturated the simulator's core,
and the simulator, not the supplier it plays, became what a burst measured. This client
does only what callbacks need: ``POST`` a small body to ``http://host:port/path`` and
read the status, reusing idle connections per host. Anything it cannot speak (https, a
malformed answer) is an :class:`OSError`, i.e. a failed delivery to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class CallbackClient:
    """POST callbacks over pooled keep-alive connections (at most ``per_host`` busy)."""

    def __init__(self, per_host: int = 64) -> None:
        self._idle: dict[tuple[str, int], list[Connection]] = defaultdict(list)
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._per_host = per_host

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> int:
        """Send one callback; return the HTTP status. Raises OSError or TimeoutError."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise OSError(f"callbacks are sent over plain http only, not to {url!r}")
        host_key = (parts.hostname, parts.port or 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        slots = self._slots.setdefault(host_key, asyncio.Semaphore(self._per_host))
        async with slots:
            return await asyncio.wait_for(self._exchange(host_key, request), timeout_s)

    async def _exchange(self, host_key: tuple[str, int], request: bytes) -> int:
        idle = self._idle[host_key]
        while idle:  # a pooled connection may have been closed by the peer: try the next
            reader, writer = idle.pop()
            try:
                return await self._roundtrip(host_key, reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                writer.close()
            except BaseException:  # cancelled by the timeout: the connection is spoilt
                writer.close()
                raise
        reader, writer = await asyncio.open_connection(*host_key)
        try:
            return await self._roundtrip(host_key, reader, writer, request)
        except (asyncio.IncompleteReadError, ValueError) as exc:
            writer.close()
            raise OSError(f"bad answer from the callback receiver: {exc}") from exc
        except BaseException:
            writer.close()
            raise

    async def _roundtrip(self, host_key: tuple[str, int], reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, request: bytes) -> int:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise asyncio.IncompleteReadError(b"", None)
        status = int(status_line.split()[1])
        length, chunked = 0, False
        close = status_line.startswith(b"HTTP/1.0")  # 1.0 closes unless it says keep-alive
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection":
                close = value != "keep-alive" if close else value == "close"
        if chunked:
            while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                await reader.readexactly(size + 2)
            await reader.readline()
        elif length:
            await reader.readexactly(length)
        if close:
            writer.close()
        else:
            self._idle[host_key].append((reader, writer))
        return status

    async def aclose(self) -> None:
        """Close every idle connection."""
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        self._idle.clear()
