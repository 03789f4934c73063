"""The trial executor's I/O: httpx's async client, and the loop that drives a lifecycle.

:class:`AsyncTransport` never raises for what a supplier does: a timeout or a refused
connection comes back as an :class:`HttpResponse` with status 0 and ``transport_error``
set, so it becomes data in the event log. Redirects are never followed.

:func:`drive` runs one lifecycle generator (:mod:`harness.run.lifecycle`): it sends each
:class:`~harness.run.lifecycle.Send` and sleeps through each
:class:`~harness.run.lifecycle.Wait`, waking early on news when asked to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TypeVar

import httpx

from harness.drivers.base import HttpRequest, HttpResponse
from harness.run.lifecycle import Send, Steps

T = TypeVar("T")

TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
"""Linux only; elsewhere the delayed-ACK stall (below) is not corrected."""


def set_quickack(sock: object) -> None:
    """Ask the kernel to acknowledge at once what arrives next on ``sock``.

    Latency is the supplier's, the same in both modes: some servers write the headers and
    the body of an answer in two sends without TCP_NODELAY, and Nagle then holds the body
    until the client acknowledges the headers. A keep-alive client whose kernel delays its
    ACKs (Linux does on a busy connection; not on one that sat idle) waits about 40 ms for
    every such answer, so the figure would depend on how the harness paces its own
    requests. Quick ACKs make every answer arrive as the supplier sent it; see
    ``bench/LATENCY_PARITY.md``. Not sticky: set again after each read.
    """
    if TCP_QUICKACK is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError, TypeError):
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)  # type: ignore[attr-defined]


async def _quickack_hook(response: httpx.Response) -> None:
    """After the headers arrive, ACK at once, so a body sent separately is not held."""
    stream = response.extensions.get("network_stream")
    if stream is not None:
        set_quickack(stream.get_extra_info("socket"))


class AsyncTransport:
    """One pooled httpx client for a whole trial."""

    def __init__(self, timeout_s: float, max_connections: int = 200) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            trust_env=False,  # never route loopback traffic through a proxy from the env
            follow_redirects=False,  # a redirect would carry signed requests elsewhere
            event_hooks={"response": [_quickack_hook]},
        )

    async def send(self, request: HttpRequest) -> HttpResponse:
        """One attempt; status 0 when there was no answer."""
        start = time.perf_counter()
        try:
            reply = await self._client.request(request.method, request.url,
                                               headers=dict(request.headers),
                                               content=request.body or None)
        except httpx.TimeoutException:
            return HttpResponse(0, {}, b"", (time.perf_counter() - start) * 1000, "timeout")
        except httpx.HTTPError as exc:
            return HttpResponse(0, {}, b"", (time.perf_counter() - start) * 1000,
                                f"connect_error:{type(exc).__name__}")
        return HttpResponse(reply.status_code, reply.headers, reply.content,
                            (time.perf_counter() - start) * 1000)

    async def aclose(self) -> None:
        await self._client.aclose()


async def drive(transport: AsyncTransport, steps: Steps[T], *,
                news: asyncio.Event | None = None) -> T:
    """Run ``steps`` to its end with ``transport``; its return value.

    A ``Wait(news=True)`` ends early when ``news`` is set (the lifecycle's ``wake``)."""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                step = steps.send(await transport.send(step.request))
                continue
            delay = step.until - time.time()
            if step.news and news is not None:
                news.clear()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(news.wait(), delay)
            elif delay > 0:
                await asyncio.sleep(delay)
            step = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
