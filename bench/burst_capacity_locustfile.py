"""Plain Locust, the baseline of ``bench/burst_capacity.py``: the same HTTP work per order
as a trialbench burst in poll mode, on the same open-model schedule, with none of
trialbench (no lifecycle, no event log, no budget, no duplicate index).

Arrival ``j`` is due at ``T0 + (j + ½) / RATE`` (trialbench's constant-rate schedule);
worker ``INDEX`` of ``WORKERS`` takes every ``WORKERS``-th arrival. A user claims the next
arrival, sleeps until it is due, notes how late it started, POSTs the signed order, and
hands the rest to a greenlet on a shared 200-connection session (as trialbench's worker
does): GET the order after 0.2 s, then every 1.5× longer until it is final, then one
issuer check (GET) per code. Locust's own request statistics stay on: this is plain
Locust.

At the end each worker writes ``OUT/plain-<INDEX>.json``: orders due, sent, how many
started more than 50 ms late, the 99th percentile of lateness (ms), requests and failures.

Environment: ``TB_CAP_KEY``, ``TB_CAP_SECRET``, ``TB_CAP_PATH`` (e.g. ``/suppliers/bench``),
``TB_CAP_ISSUER`` (issuer base URL) and ``TB_CAP_ISSUER_KEY``, ``TB_CAP_RATE`` (orders/s,
all workers), ``TB_CAP_DURATION_S``, ``TB_CAP_T0`` (Unix time), ``TB_CAP_INDEX``,
``TB_CAP_WORKERS``, ``TB_CAP_TOTAL`` (orders in all, as the burst's schedule counts them),
``TB_CAP_OUT`` (a folder).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gevent
from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import FastHttpSession

from harness.protocol import signed_headers

KEY = os.environ.get("TB_CAP_KEY", "")
SECRET = os.environ.get("TB_CAP_SECRET", "")
BASE = os.environ.get("TB_CAP_PATH", "/suppliers/bench")
ISSUER = os.environ.get("TB_CAP_ISSUER", "")
ISSUER_KEY = os.environ.get("TB_CAP_ISSUER_KEY", "")
RATE = float(os.environ.get("TB_CAP_RATE", "1"))
DURATION_S = float(os.environ.get("TB_CAP_DURATION_S", "1"))
T0 = float(os.environ.get("TB_CAP_T0", "0"))
INDEX = int(os.environ.get("TB_CAP_INDEX", "0"))
WORKERS = int(os.environ.get("TB_CAP_WORKERS", "1"))
OUT = os.environ.get("TB_CAP_OUT", "")
TOTAL = int(os.environ.get("TB_CAP_TOTAL", "0")) or math.floor(RATE * DURATION_S)
LATE_MS = 50.0
POLL_INITIAL_S, POLL_FACTOR, POLL_MAX_S, FOLLOW_S = 0.2, 1.5, 2.0, 6.0

_claims = itertools.count()
_lateness_ms: list[float] = []
_counts = {"due": len(range(INDEX, TOTAL, WORKERS)), "requests": 0, "failures": 0}
_follow: dict[str, Any] = {}


def _session(host: str, environment: Any) -> FastHttpSession:
    if "session" not in _follow:
        _follow["session"] = FastHttpSession(
            base_url=host, request_event=environment.events.request, user=None,
            network_timeout=5, connection_timeout=5, max_retries=0, concurrency=200)
    session: FastHttpSession = _follow["session"]
    return session


def _get(session: FastHttpSession, url: str, name: str, headers: dict[str, str]) -> Any:
    _counts["requests"] += 1
    reply = session.get(url, name=name, headers=headers)
    if not 200 <= (reply.status_code or 0) < 300:
        _counts["failures"] += 1
    return reply


def _follow_order(session: FastHttpSession, path: str, due: float) -> None:
    interval = POLL_INITIAL_S
    at = time.time()
    while time.time() < due + FOLLOW_S:
        at += interval
        gevent.sleep(max(0.0, at - time.time()))
        reply = _get(session, path, "poll", signed_headers(KEY, SECRET, "GET", path, b""))
        try:
            order = json.loads(reply.content)["order"]
        except (ValueError, KeyError, TypeError):
            order = {}
        if order.get("state") in ("success", "partial"):
            for code in order.get("codes") or ():
                url = (f"{ISSUER}/v1/codes/{quote(str(code['serial']), safe='')}"
                       f"?pin={quote(str(code['pin']), safe='')}")
                _get(session, url, "issuer_check", {"X-Api-Key": ISSUER_KEY})
            return
        if order.get("state") in ("failed", "refunded"):
            return
        interval = min(POLL_MAX_S, interval * POLL_FACTOR)


class CapacityUser(FastHttpUser):
    """One slot: claim the next arrival, wait until due, POST, hand the follow-up on."""

    max_retries = 0

    def wait_time(self) -> float:
        return 0.0

    @task
    def order(self) -> None:
        j = INDEX + next(_claims) * WORKERS
        if j >= TOTAL:
            gevent.sleep(1)
            return
        due = T0 + (j + 0.5) / RATE
        delay = due - time.time()
        if delay > 0:
            gevent.sleep(delay)
        _lateness_ms.append((time.time() - due) * 1000)
        cid = f"p{INDEX}-{j:08d}-{int(T0)}"
        body = json.dumps({"client_order_id": cid, "sku": "card-10", "quantity": 1}).encode()
        path = f"{BASE}/v1/orders"
        _counts["requests"] += 1
        reply = self.client.post(path, data=body, name="place",  # type: ignore[arg-type]
                                 headers={**signed_headers(KEY, SECRET, "POST", path, body),
                                          "Content-Type": "application/json"})
        if not 200 <= (reply.status_code or 0) < 300:
            _counts["failures"] += 1
            return
        session = _session(self.host or "", self.environment)
        gevent.spawn(_follow_order, session, f"{path}/{cid}", due)


def _write(**_: Any) -> None:
    if not OUT or "TB_CAP_INDEX" not in os.environ:  # the master places nothing
        return
    late = sorted(_lateness_ms)
    p99 = late[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)] if late else None
    Path(OUT, f"plain-{INDEX}.json").write_text(json.dumps({
        **_counts, "sent": len(late), "late": sum(1 for x in late if x > LATE_MS),
        "p99_late_ms": p99, "max_late_ms": late[-1] if late else None}))


events.test_stop.add_listener(_write)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_write)  # type: ignore[no-untyped-call]
