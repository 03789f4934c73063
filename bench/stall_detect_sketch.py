"""Sketch: does a supplier show the delayed-ACK stall pattern? (kept in bench/, see below)

Issue 13 decided to leave this in ``bench/`` (``bench/latency_parity.py`` uses it) rather
than move it into the package now. Flagging a supplier in the report needs more than
this function: probe requests in delayed-ACK mode from both transports (a socket option
set after each send, in httpcore's stream and in geventhttpclient's socket wrapper),
headers-vs-body timings per response from both, kept out of the latency figures, then a
finding kind carried through the analysis, the report and both language catalogues. And
it is untested where it matters: Linux only (no ``TCP_QUICKACK`` elsewhere), and never run
against a remote server, where a split write costs one round trip on the body even with
quick ACKs. Meanwhile both transports ACK at once, so trials and bursts both report the
supplier's own time for such a server (``bench/LATENCY_PARITY.md``).

The pattern: the supplier's server writes status+headers and body in two ``send()`` calls
without ``TCP_NODELAY``. Nagle's algorithm then holds the body until the client
acknowledges the headers, and a client kernel that is delaying its ACKs does so only when
its delayed-ACK timer fires (Linux: 40 ms minimum, ``TCP_ATO_MIN``; up to 200 ms,
``TCP_DELACK_MAX``). So the body arrives about 40 ms after the headers although the
supplier had it ready at once.

The evidence is per response, and both clients give it: ``headers_ms`` (request sent to
status line + headers parsed: httpx ``client.stream()`` / a response event hook;
Locust ``FastHttpSession.request(..., stream=True)`` returns then) and ``total_ms`` (to
the last body byte). The gap ``total_ms - headers_ms`` is the stall.

The gap shows only when the client is in delayed-ACK mode. A client that acknowledges at
once (``TCP_QUICKACK`` after every read, as the benchmark measures latency) never sees it,
and a default client sees it only on a connection reused within ~40 ms of the previous
answer. So feed :func:`stall_suspected` samples from *probe* requests sent in delayed-ACK
mode (``TCP_QUICKACK`` = 0 set right after sending the request: deterministic, whatever the
spacing) or from default-mode requests sent back to back; ``ack="quick"`` samples of the
same supplier, if given, must show the gap gone, which separates the stall from a server
that is merely slow to produce its body after flushing the headers.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Ack = Literal["default", "delayed", "quick"]

STALL_GAP_MIN_MS = 30.0
"""Smallest header-to-body gap read as a stall: Linux's minimum delayed-ACK time is 40 ms
(HZ/25), and the timer fires 0–4 ms early or late with a 250 Hz tick; 30 ms leaves room
for that and is far above a body that simply follows its headers (< 1 ms on loopback,
< 1 RTT elsewhere)."""

STALL_GAP_MAX_MS = 250.0
"""Largest gap read as a stall: Linux caps the delayed ACK at 200 ms (``TCP_DELACK_MAX``)
and inflates the timeout towards it when ACKs keep being missed; longer gaps are the
server's own doing (a slow or streamed body)."""

MIN_SAMPLES = 8
"""Fewer delayed/default responses than this: no verdict (False)."""

MIN_STALLED_FRACTION = 0.5
"""Share of responses whose gap falls in [STALL_GAP_MIN_MS, STALL_GAP_MAX_MS]. Delayed-ACK
probes stall on ~100% of responses; default-mode back-to-back traffic on nearly all after
the first; a healthy server on none."""

MIN_QUICKACK_DROP_MS = 25.0
"""With prompt-ACK (``ack="quick"``) samples present, the median gap must fall by at least
this much: the body was waiting for our ACK, not for the server."""


@dataclass(frozen=True)
class ResponseTiming:
    """One response's timings, milliseconds from the moment the request was sent."""

    headers_ms: float
    total_ms: float
    ack: Ack = "default"
    ok: bool = True  # False for timeouts, refused connections, 5xx: no timing evidence

    @property
    def gap_ms(self) -> float:
        return max(0.0, self.total_ms - self.headers_ms)


def stalled(sample: ResponseTiming) -> bool:
    """The body of this response came a delayed-ACK time after its headers."""
    return STALL_GAP_MIN_MS <= sample.gap_ms <= STALL_GAP_MAX_MS


def stall_suspected(samples: Iterable[ResponseTiming]) -> bool:
    """True when a supplier shows the delayed-ACK stall pattern.

    Needs at least :data:`MIN_SAMPLES` good responses measured in delayed-ACK or default
    mode, of which at least :data:`MIN_STALLED_FRACTION` have a header-to-body gap in
    [:data:`STALL_GAP_MIN_MS`, :data:`STALL_GAP_MAX_MS`]. If at least
    :data:`MIN_SAMPLES` prompt-ACK samples are also given, their median gap must be at
    least :data:`MIN_QUICKACK_DROP_MS` below the others' (the stall goes away when the
    client acknowledges at once; a slow body does not).
    """
    good = [s for s in samples if s.ok and s.total_ms >= s.headers_ms >= 0]
    exposed = [s for s in good if s.ack != "quick"]
    if len(exposed) < MIN_SAMPLES:
        return False
    if sum(stalled(s) for s in exposed) < MIN_STALLED_FRACTION * len(exposed):
        return False
    quick = [s.gap_ms for s in good if s.ack == "quick"]
    if len(quick) >= MIN_SAMPLES:
        exposed_gap = statistics.median(s.gap_ms for s in exposed)
        return exposed_gap - statistics.median(quick) >= MIN_QUICKACK_DROP_MS
    return True


def stall_penalty_ms(samples: Iterable[ResponseTiming]) -> float:
    """Median header-to-body gap of the stalled responses (0.0 if none): what a merchant's
    keep-alive client adds per response when its kernel delays the ACK."""
    gaps = [s.gap_ms for s in samples if s.ok and s.ack != "quick" and stalled(s)]
    return float(statistics.median(gaps)) if gaps else 0.0
