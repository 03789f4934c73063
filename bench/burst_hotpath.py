"""The burst worker's hot-path plumbing, measured in one process (no network, so far less
noisy than a burst on a shared machine): before/after of each issue-13 change.

- event lines: the ten events of a typical burst order (planned, attempt, accepted,
  attempt, observed, final, code checked ...), formatted and appended to a shard with one
  ``os.write`` each: ``json.dumps`` (before) against :func:`harness.events.event_line`
  (orjson, after). µs per order.
- Locust's request statistics: firing ``events.request`` with a local runner's stats
  listening (before) against the no-op event a worker uses when Locust's web UI is off
  (after), three requests per order (POST, poll, issuer check). µs per order.
- duplicate index: bytes per code of this run's keyed hashes, ``set`` of ``str`` (before)
  against :class:`harness.run.duplicates.CompactDuplicateIndex` (after), by tracemalloc.

Each timing is the best of ``--repeat`` rounds of ``--orders`` orders (process CPU time).

    .venv/bin/python bench/burst_hotpath.py [--orders 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from locust.env import Environment  # noqa: E402  (patches with gevent, as a worker does)
from locust.event import EventHook  # noqa: E402

from harness.codes import DuplicateIndex, code_hash  # noqa: E402
from harness.events import _default, event_line  # noqa: E402
from harness.run.duplicates import CompactDuplicateIndex  # noqa: E402


def _order_events(i: int) -> list[tuple[str, dict[str, Any]]]:
    cid = f"tb-20261127-burst-abcd-bench-{i:07d}"
    common = {"supplier": "bench", "client_order_id": cid}
    return [
        ("order_planned", {**common, "sku": "card-10", "quantity": 1, "mode": "burst",
                           "phase": "hold", "index": i, "intended_at": 1795754304.123456,
                           "worker": "w0", "reserved": Decimal("10.00")}),
        ("order_attempt", {**common, "attempt": 1, "method": "POST", "purpose": "place"}),
        ("order_accepted", {**common, "supplier_order_id": f"S{i}", "status": 201,
                            "state": "processing", "unit_price": Decimal("9.50"),
                            "amount": Decimal("9.50"), "via": "post", "latency_ms": 3.217}),
        ("order_observed", {**common, "state": "processing", "via": "post", "codes": 0}),
        ("order_attempt", {**common, "attempt": 1, "method": "GET", "purpose": "poll"}),
        ("order_observed", {**common, "state": "success", "via": "poll", "codes": 1}),
        ("order_final", {**common, "state": "success", "last_state": "success",
                         "amount": Decimal("9.50"), "unit_price": Decimal("9.50"),
                         "codes_delivered": 1, "delivered_at": "2026-11-27T04:58:24.100Z",
                         "failure_reason": None, "delivered_seen_at": 1795754304.4,
                         "within_deadline": True, "skipped": None}),
        ("code_attempt", {**common, "attempt": 1, "method": "GET", "purpose": "issuer_check"}),
        ("code_checked", {**common, "code_hash": "9f" * 16, "serial_masked": "BNCH-****-1234",
                          "verdict": "valid", "issuer_status": "active",
                          "face_value": Decimal("10.00"), "expires_at": None}),
        ("budget", {"supplier": "bench", "committed": Decimal("123456.50")}),
    ]


def _old_line(type_: str, fields: dict[str, Any]) -> bytes:
    line = json.dumps({"t": time.time(), "type": type_, **fields}, default=_default,
                      separators=(",", ":"))
    return (line + "\n").encode()


def _best(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def bench_events(orders: int, repeat: int) -> dict[str, float]:
    events = [_order_events(i) for i in range(orders)]
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(Path(tmp) / "events-w0.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

        def with_(fmt: Callable[[str, dict[str, Any]], bytes]) -> Callable[[], None]:
            def run() -> None:
                os.ftruncate(fd, 0)
                for order in events:
                    for type_, fields in order:
                        os.write(fd, fmt(type_, fields))
            return run

        out = {}
        for name, fmt in (("json", _old_line), ("orjson", event_line)):
            out[name] = _best(with_(fmt), repeat) / orders * 1e6
        os.close(fd)
    return out


def bench_stats(orders: int, repeat: int) -> dict[str, float]:
    environment = Environment()
    environment.create_local_runner()
    meta = {"request_type": "GET", "name": "bench poll", "response_time": 1.234,
            "response_length": 350, "exception": None, "context": {}, "url": "http://x/",
            "start_time": time.time(), "response": None}

    def fire(event: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in range(orders * 3):
                event.fire(**meta)
        return run

    return {"locust_stats": _best(fire(environment.events.request), repeat) / orders * 1e6,
            "none": _best(fire(EventHook()), repeat) / orders * 1e6}  # nobody listens


def bench_duplicates(codes: int) -> dict[str, float]:
    hashes = [code_hash(b"bench-key", f"BNCH-{i:010d}") for i in range(codes)]
    out = {}
    for name, make in (("set_of_str", DuplicateIndex), ("compact", CompactDuplicateIndex)):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        copies = [h.encode().decode() for h in hashes]  # as each order's check makes them
        index = make()
        for digest in copies:
            index.see(digest)
        del copies  # the index keeps what it keeps; the order's own strings go
        out[name] = (tracemalloc.get_traced_memory()[0] - before) / codes
        tracemalloc.stop()
        del index
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--codes", type=int, default=200_000)
    args = parser.parse_args()
    result = {"events_us_per_order": bench_events(args.orders, args.repeat),
              "locust_stats_us_per_order": bench_stats(args.orders, args.repeat),
              "duplicate_index_bytes_per_code": bench_duplicates(args.codes)}
    print(json.dumps({k: {n: round(v, 1) for n, v in d.items()} for k, d in result.items()}))


if __name__ == "__main__":
    main()
