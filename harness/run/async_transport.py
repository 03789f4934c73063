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
import time
from typing import TypeVar

import httpx

from harness.drivers.base import HttpRequest, HttpResponse
from harness.run.lifecycle import Send, Steps

T = TypeVar("T")


class AsyncTransport:
    """One pooled httpx client for a whole trial."""

    def __init__(self, timeout_s: float, max_connections: int = 200) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            trust_env=False,  # never route loopback traffic through a proxy from the env
            follow_redirects=False,  # a redirect would carry signed requests elsewhere
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
