"""The trial transport: sends a driver's :class:`HttpRequest` with httpx's async client.

Never raises for what a supplier does: a timeout or a refused connection comes back
as an :class:`HttpResponse` with status 0 and ``transport_error`` set, so it becomes
data in the event log. Retry policy for reads lives in :func:`send_read`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import httpx

from harness.drivers.base import HttpRequest, HttpResponse


class AsyncTransport:
    """One pooled httpx client for a whole trial."""

    def __init__(self, timeout_s: float, max_connections: int = 200) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            trust_env=False,  # never route loopback traffic through a proxy from the env
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
        except httpx.TransportError as exc:
            return HttpResponse(0, {}, b"", (time.perf_counter() - start) * 1000,
                                f"connect_error:{type(exc).__name__}")
        return HttpResponse(reply.status_code, reply.headers, reply.content,
                            (time.perf_counter() - start) * 1000)

    async def aclose(self) -> None:
        await self._client.aclose()


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 5.0,
              rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter for attempt 1, 2, ..."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def retry_delay_s(response: HttpResponse, attempt: int) -> float | None:
    """How long to wait before asking again, or None if this answer should not be retried.

    429 honours ``Retry-After``; 5xx and no answer back off exponentially.
    """
    if response.status == 429:
        raw = response.headers.get("retry-after")
        try:
            return max(0.0, float(raw)) if raw is not None else backoff_s(attempt)
        except ValueError:
            return backoff_s(attempt)
    if response.status == 0 or response.status >= 500:
        return backoff_s(attempt)
    return None


async def send_read(transport: AsyncTransport, build: Callable[[], HttpRequest], *,
                    max_attempts: int, until: float,
                    on_attempt: Callable[[HttpResponse], Awaitable[None] | None] | None = None,
                    ) -> HttpResponse:
    """Send a read (re-signed on every attempt), retrying 429/5xx/no-answer until
    ``max_attempts`` or the monotonic time ``until``; returns the last response."""
    attempt = 0
    while True:
        attempt += 1
        response = await transport.send(build())
        if on_attempt is not None:
            pending = on_attempt(response)
            if pending is not None:
                await pending
        delay = retry_delay_s(response, attempt)
        if delay is None or attempt >= max_attempts or time.monotonic() + delay > until:
            return response
        await asyncio.sleep(delay)
