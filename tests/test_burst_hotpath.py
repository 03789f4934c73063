"""The burst worker's hot path (issue 13): event lines written by orjson read back as
``json.dumps`` wrote them, the compact duplicate index answers as the plain one, and the
precise waker wakes every order at its time, never before."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from harness.codes import DuplicateIndex, code_hash
from harness.events import _default, event_line, format_event
from harness.run.duplicates import CompactDuplicateIndex


def _old_line(type_: str, fields: dict[str, Any], t: float) -> str:
    return json.dumps({"t": t, "type": type_, **fields}, default=_default,
                      separators=(",", ":"))


CASES: list[dict[str, Any]] = [
    {"supplier": "bench", "client_order_id": "tb-x-bench-0000001", "attempt": 1,
     "method": "POST", "purpose": "place"},
    {"unit_price": Decimal("9.50"), "amount": Decimal("0E-8"), "status": 201, "via": None,
     "latency_ms": 3.25, "ok": True, "codes": [{"hash": "ab", "serial": "**12"}]},
    {"when": datetime(2026, 11, 27, 4, 5, 6, 789, tzinfo=UTC),
     "naive": datetime(2026, 1, 1, 1, 2, 3), "keys": {1: "a", None: 2, False: 3}},
    {"text": "złoty € 中文", "tiny": 1e-7, "huge": 1e16, "neg": -0.0, "tuple": (1, 2.5)},
]
FALLBACK: list[dict[str, Any]] = [  # what orjson writes differently: json.dumps writes these
    {"nan": math.nan}, {"deep": [{"inf": -math.inf}]}, {"big": 2 ** 70},
    {"surrogate": "\ud800"},
]


@pytest.mark.parametrize("fields", CASES)
def test_event_line_reads_back_as_json_dumps(fields: dict[str, Any]) -> None:
    """An orjson event line parses to exactly what the json.dumps line parsed to."""
    line = event_line("x", fields)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    new = json.loads(line)
    old = json.loads(_old_line("x", fields, new["t"]))
    assert new == old and list(new) == list(old)
    assert line.startswith(b'{"t":') and b',"type":"x",' in line  # the prefix readers skip on
    again = json.loads(format_event("x", fields))
    assert again.pop("t") and new.pop("t") and again == new


@pytest.mark.parametrize("fields", FALLBACK)
def test_event_line_falls_back_to_json_dumps(fields: dict[str, Any]) -> None:
    """NaN, infinity, huge ints and lone surrogates are written byte for byte as before."""
    line = event_line("x", fields)
    t = json.loads(line)["t"]
    assert line == (_old_line("x", fields, t) + "\n").encode()


def test_event_line_refuses_what_json_refused() -> None:
    """An object neither can write raises TypeError, as it always did."""
    with pytest.raises(TypeError, match="cannot write object"):
        event_line("x", {"o": object()})


def test_compact_duplicate_index_answers_as_the_plain_one() -> None:
    """Same verdict for every hash (new, this run, earlier run, odd shapes), past growth."""
    rng = random.Random(7)
    hashes = [code_hash(b"k", f"S{i}") for i in range(5000)]
    earlier = hashes[:300]
    stream = [rng.choice(hashes) for _ in range(9000)] + ["short", "zz" * 16, "0" * 32]
    plain, compact = DuplicateIndex(earlier), CompactDuplicateIndex(earlier)
    expected = [plain.see(h) for h in stream]
    assert [compact.see(h) for h in stream] == expected
    assert {"this_run", "earlier_run", None} <= set(expected)


def test_compact_duplicate_index_is_compact() -> None:
    """This run's hashes cost well under the 50 bytes a code the burst may grow by."""
    hashes = [code_hash(b"k", f"S{i}") for i in range(40_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = CompactDuplicateIndex()
        for digest in hashes:
            index.see(digest)
        per_code = (tracemalloc.get_traced_memory()[0] - before) / len(hashes)
    finally:
        tracemalloc.stop()
    assert per_code < 50, per_code


def test_a_presized_duplicate_index_never_grows_while_placing() -> None:
    """Sized for the worker's expected codes, the index allocates nothing more (no rehash
    mid-burst) while they come, answers as the plain one, and still grows past them."""
    hashes = [code_hash(b"k", f"S{i}") for i in range(6000)]
    plain, index = DuplicateIndex(), CompactDuplicateIndex(expected=3000)
    size = len(index._used)
    assert size * 3 >= 3000 * 4
    answers = [index.see(h) for h in hashes[:3000] + hashes[:10]]
    assert len(index._used) == size  # every expected code fitted without growing
    assert answers == [plain.see(h) for h in hashes[:3000] + hashes[:10]]
    assert [index.see(h) for h in hashes[3000:]] == [None] * 3000  # more than expected
    assert len(index._used) > size


WAKER = r"""
from gevent import monkey; monkey.patch_all()
import json, random, time
import gevent
from harness.run.gevent_transport import PreciseWaker
waker = PreciseWaker()
early, late, woken = [], [], []
def one(at):
    waker.sleep_until(at)
    now = time.time()
    (early if now < at else late).append(now - at)
    woken.append(at)
start = time.time()
ats = [start + random.uniform(-0.01, 0.3) for _ in range(300)]
gevent.joinall([gevent.spawn(one, at) for at in ats])
# close() ends the thread: whoever still waits (or comes later) wakes on time all the same
def after_close(at):
    waker.sleep_until(at)
    (early if time.time() < at else late).append(time.time() - at)
now = time.time()
waiting = [gevent.spawn(after_close, now + d) for d in (0.052, 0.06, 0.3)]
gevent.sleep(0.05)
waker.close()
waiting.append(gevent.spawn(after_close, time.time() + 0.1))
closed = gevent.joinall(waiting, timeout=5)
print(json.dumps({"early": len(early), "woken": len(woken),
                  "closed": len(closed), "worst_late_s": max(late)}))
"""


def test_precise_waker_wakes_each_at_its_time_never_before() -> None:
    """300 greenlets sleeping until random times (some past) all wake, none before its
    time; after close() (a worker ending) those still
    waiting and later ones still wake, never early; the hub ends with nothing left."""
    done = subprocess.run([sys.executable, "-c", WAKER], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["early"] == 0 and got["woken"] == 300 and got["closed"] == 4
