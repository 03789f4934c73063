"""The event log: one JSON object a line, appended and flushed as it happens.

Every fact about a run is an event written the moment it is known, so a crash loses
nothing already sent; the results tables are derived from the log (``results.py``).
Bursts write one shard per worker process (``events-<worker>.jsonl``); readers merge
every ``events*.jsonl`` in a run folder.

Each event has ``t`` (Unix time, seconds, float), ``type`` and its own fields. Codes
appear only as a keyed hash and a masked serial, never in plain.
"""

from __future__ import annotations

import bisect
import json
import operator
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import orjson

from harness.drivers.base import Order


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} to the event log")


_ORJSON_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_APPEND_NEWLINE)
"""As ``json.dumps`` would write them: datetimes and dataclasses go through ``_default``
(``isoformat()``, or refused), int/bool/None keys become text."""


def _finite(value: object) -> bool:
    """No NaN or infinity anywhere in ``value`` (orjson would write them as null)."""
    if isinstance(value, float):
        return value - value == 0.0
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def event_line(type_: str, fields: dict[str, Any]) -> bytes:
    """One event as its log line in UTF-8, newline included, stamped with the time now.

    Written with orjson (about 4x faster than ``json.dumps`` here; a burst writes some ten
    events per order). What orjson cannot write as ``json.dumps`` does (NaN and infinity,
    ints beyond 64 bits, lone surrogates) goes through ``json.dumps``, and anything neither
    can write raises ``TypeError`` as before. Non-ASCII text is written as UTF-8, not as
    ``\\u`` escapes: the same JSON to any reader."""
    event = {"t": time.time(), "type": type_, **fields}
    if _finite(fields):
        try:
            return orjson.dumps(event, default=_default, option=_ORJSON_OPTIONS)
        except TypeError:
            pass  # e.g. an int beyond 64 bits: json.dumps writes it, or raises as it always did
    return (json.dumps(event, default=_default, separators=(",", ":")) + "\n").encode()


def format_event(type_: str, fields: dict[str, Any]) -> str:
    """One event as its log line (no newline), stamped with the time now."""
    return event_line(type_, fields)[:-1].decode()


def accepted_fields(order: Order, status: int, via: str,
                    answered_at: float | None = None) -> dict[str, Any]:
    """Fields of ``order_accepted`` (see :mod:`harness.results`), trials and bursts alike;
    ``answered_at`` only when an answer taught it (not a callback)."""
    fields = {"supplier_order_id": order.supplier_order_id, "status": status,
              "state": order.state.value, "unit_price": order.unit_price,
              "amount": order.amount, "via": via}
    if answered_at is not None:
        fields["answered_at"] = answered_at
    return fields


def accepted_time(event: Mapping[str, Any]) -> float:
    """When an ``order_accepted`` event's answer arrived: ``answered_at``, else (a callback,
    or a log from before it was kept) when the line was written."""
    answered = event.get("answered_at")
    return float(answered) if answered is not None else float(event["t"])


def final_fields(order: Order | None, state: str, delivered_seen_at: float | None,
                 deadline_at: float) -> dict[str, Any]:
    """Fields of ``order_final``: the last view of the order and when delivery was seen."""
    return {
        "state": state, "last_state": order.state.value if order is not None else "unknown",
        "amount": order.amount if order is not None else Decimal(0),
        "unit_price": order.unit_price if order is not None else None,
        "codes_delivered": len(order.codes) if order is not None else 0,
        "delivered_at": order.delivered_at if order is not None else None,
        "failure_reason": order.failure_reason if order is not None else None,
        "delivered_seen_at": delivered_seen_at,
        "within_deadline": delivered_seen_at is not None and delivered_seen_at <= deadline_at,
        "skipped": "cap" if state == "skipped" else None,
    }


ERROR_CLASSES = ("429", "503", "5xx", "timeout", "connect", "out_of_stock", "balance",
                 "refused", "not_found", "bad_response")
"""Every class :func:`error_bucket` names, besides ``other(<kind>)``."""


def error_bucket(kind: str, status: int) -> str:
    """The class of a failed request, shared by the live view, the timeline, the burst
    summary, the orders table and the report (written here so writers and readers agree).

    Every failed request gets one: 429, 503, another 5xx, timeout, connect (no answer for
    another reason), out_of_stock, balance (402), refused (any other 4xx but 404),
    not_found (404: the supplier does not hold the order, or not yet), bad_response (an
    answer with a success status whose body cannot be read), else ``other(<kind>)``,
    naming the kind.
    """
    if status == 429:
        return "429"
    if status == 503:
        return "503"
    if status >= 500:
        return "5xx"
    if status == 0:
        return "timeout" if kind == "timeout" else "connect"
    if "out_of_stock" in kind:
        return "out_of_stock"
    if status == 402:
        return "balance"
    if status == 404:
        return "not_found"
    if 400 <= status < 500:
        return "refused"
    if 200 <= status < 400:
        return "bad_response"
    return f"other({kind or status})"


def is_supplier_error(status: int, phase: str) -> bool:
    """Whether a failed request counts against the supplier: every failure but a 404 to
    the harness's own GETs (resolve, follow), which the protocol allows within its
    not-found window and which after it is the answer the harness asked for."""
    return not (status == 404 and phase in ("resolve", "follow"))


def format_error_counts(counts: Mapping[str, int]) -> str:
    """``503:12 timeout:3 other(http_418):1`` in :data:`ERROR_CLASSES` order, then the
    others by name; ``-`` when there are none. The live view and the summary print this."""
    order = {name: i for i, name in enumerate(ERROR_CLASSES)}
    items = sorted(((k, v) for k, v in counts.items() if v),
                   key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return " ".join(f"{k}:{v}" for k, v in items) or "-"


def parse_error_counts(text: str) -> Counter[str]:
    """The counts :func:`format_error_counts` wrote (``-`` or empty: none)."""
    out: Counter[str] = Counter()
    for item in (text or "").split():
        if item != "-":
            name, _, count = item.rpartition(":")
            out[name] += int(count)
    return out


class EventLog:
    """Append-only JSON-lines writer; thread-safe, flushed on every event."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, type_: str, /, **fields: Any) -> None:
        """Record one event now; ``fields`` must be JSON-able (Decimal and datetime are)."""
        line = format_event(type_, fields)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def sync(self) -> None:
        """Force the log to disk (end of a phase)."""
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                self._file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


FINISH_EVENTS = ("trial_finished", "burst_finished", "resume_finished")
"""A run is complete when the last of these and :data:`START_EVENTS` is one of these
(and says neither ``interrupted`` nor ``failed``)."""
START_EVENTS = ("trial_started", "burst_started", "run_resumed")


COMPLETE_STAMP = ".run_complete.json"
"""Where :func:`run_complete` keeps its answer, beside the shards it read: valid while
every ``events*.jsonl`` has the size, mtime and inode it had then (any write, new shard or
removed shard makes it stale, and the log is read again)."""


def shards_signature(run_dir: Path) -> dict[str, list[int]]:
    """Size, mtime (ns) and inode of each shard of the run, by name: take it *before*
    reading the log, so that a write during the read makes a kept answer stale."""
    signature: dict[str, list[int]] = {}
    for shard in sorted(run_dir.glob("events*.jsonl")):
        stat = shard.stat()
        signature[shard.name] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    return signature


def completion(events: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the last of these start (:data:`START_EVENTS`) and finish
    (:data:`FINISH_EVENTS`) events is a finish that says neither ``interrupted`` nor
    ``failed``; other events are ignored."""
    marks: list[tuple[float, str]] = []
    for event in events:
        kind = event["type"]
        if kind not in START_EVENTS and kind not in FINISH_EVENTS:
            continue
        if kind in FINISH_EVENTS and (event.get("interrupted") or event.get("failed")):
            kind = "interrupted"
        marks.append((float(event["t"]), kind))
    return bool(marks) and max(marks)[1] in FINISH_EVENTS


def keep_completion(run_dir: Path, signature: dict[str, list[int]], complete: bool) -> None:
    """Keep ``complete`` for the log of ``signature`` (:func:`shards_signature`, taken
    before the log was read) in :data:`COMPLETE_STAMP`, for :func:`run_complete`. A builder
    that reads the whole log anyway can call it, so the first analysis need not read it
    again. Nothing is kept for a folder without shards or one that is not writable."""
    if not signature:
        return
    tmp = run_dir / f"{COMPLETE_STAMP}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps({"complete": complete, "shards": signature}) + "\n")
        tmp.replace(run_dir / COMPLETE_STAMP)
    except OSError:  # a read-only run folder: answer without keeping it
        tmp.unlink(missing_ok=True)


def run_complete(run_dir: Path) -> bool:
    """True when the run's last start (or resume) was followed by its finish event
    (:func:`completion`).

    The answer is kept in :data:`COMPLETE_STAMP` with the shards' sizes and mtimes, so
    asking again about an unchanged log costs a few ``stat`` calls; otherwise it reads
    only the lines that mark a start or a finish (found by a byte search over large
    blocks of each shard) and keeps the answer (:func:`keep_completion`)."""
    signature = shards_signature(run_dir)  # before reading: a write after it is seen next time
    try:
        kept = json.loads((run_dir / COMPLETE_STAMP).read_text())
        if kept["shards"] == signature and isinstance(kept["complete"], bool):
            return bool(kept["complete"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no stamp, torn or foreign: read the log
    wanted = [f'"type":"{kind}"'.encode() for kind in (*START_EVENTS, *FINISH_EVENTS)]
    complete = completion(_parse(line) for shard in run_dir.glob("events*.jsonl")
                          for line in _lines_with(shard, wanted))
    keep_completion(run_dir, signature, complete)
    return complete


def _lines_with(path: Path, needles: list[bytes], block_bytes: int = 1 << 24
                ) -> Iterator[bytes]:
    """The whole lines of ``path`` (ending in a newline) that hold any of ``needles``, each
    once, in file order: one regular-expression pass over each block for all the needles."""
    pattern = re.compile(b"|".join(re.escape(needle) for needle in needles))
    rest = b""
    with path.open("rb") as handle:
        while block := handle.read(block_bytes):
            data = rest + block
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            last = -1
            for match in pattern.finditer(data, 0, end):
                start = data.rfind(b"\n", 0, match.start()) + 1
                if start != last:  # else another needle on a line already given
                    last = start
                    yield data[start:data.find(b"\n", match.end()) + 1]


def read_events(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Every event of a run, from every shard, in time order.

    A torn last line (a crash mid-write) is skipped, not fatal.
    """
    events: list[dict[str, Any]] = []
    for shard in sorted(run_dir.glob("events*.jsonl")):
        with shard.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break
                events.append(json.loads(line))
    events.sort(key=lambda e: e["t"])
    return iter(events)


_by_time = operator.itemgetter("t")


class EventOrderError(ValueError):
    """A shard's events are further out of time order than :func:`stream_events` allows."""


def _parse(line: bytes) -> dict[str, Any]:
    try:
        event: dict[str, Any] = orjson.loads(line)
    except orjson.JSONDecodeError:  # NaN or Infinity, which json.dumps writes and orjson refuses
        event = json.loads(line)
    return event


_TYPE_AT_START = re.compile(rb'\{"t":[^",{\[]*,"type":"([^"\\]*)"')
"""The type of a line as :func:`format_event` writes it (``{"t":<number>,"type":"..."``),
read without parsing the line."""


def stream_events(run_dir: Path, *, types: Collection[str] | None = None,
                  window_s: float = 5.0, chunk_bytes: int = 1 << 22) -> Iterator[dict[str, Any]]:
    """The events of :func:`read_events` in the same order (by ``t``; equal times in shard
    name and line order), without holding the log in memory: each shard is read in chunks,
    the shards are merged by time, and an event is passed on once every shard has been read
    ``window_s`` past it. ``types`` keeps only those types (lines written by
    :func:`format_event` that are of another type are skipped unparsed).

    A shard is appended in time order by one writer, give or take the microseconds between
    stamping and writing an event; an event more than ``window_s`` earlier than one already
    passed on raises :class:`EventOrderError` (the caller can fall back to
    :func:`read_events`). A torn last line (a crash mid-write) is skipped, as there.
    """
    wanted = None if types is None else {t.encode() for t in types}
    shards = sorted(run_dir.glob("events*.jsonl"))
    handles = [p.open("rb") for p in shards]
    pending: list[list[dict[str, Any]]] = [[] for _ in shards]
    last_t = [float("-inf")] * len(shards)
    done = [False] * len(shards)
    passed = float("-inf")
    try:
        while True:
            open_ = [i for i in range(len(shards)) if not done[i]]
            if open_:
                i = min(open_, key=last_t.__getitem__)
                lines = handles[i].readlines(chunk_bytes)
                if not lines or not lines[-1].endswith(b"\n"):
                    done[i] = True  # the end, or a torn last line: skipped
                    lines = lines[:-1]
                if wanted is not None:  # skip, unparsed, the lines of types not wanted
                    lines = [line for line in lines
                             if (m := _TYPE_AT_START.match(line)) is None or m[1] in wanted]
                try:
                    events = list(map(orjson.loads, lines))
                except orjson.JSONDecodeError:
                    events = [_parse(line) for line in lines]
                if types is not None:
                    events = [e for e in events if e.get("type") in types]
                if events:
                    first = min(map(_by_time, events))
                    if first <= passed:
                        raise EventOrderError(f"{shards[i]}: an event at t={first} comes "
                                              f"after events up to t={passed} were read")
                    last_t[i] = max(last_t[i], max(map(_by_time, events)))
                    pending[i].extend(events)
            live = [last_t[j] for j in range(len(shards)) if not done[j]]
            cutoff = min(live) - window_s if live else float("inf")
            if cutoff <= passed:
                continue
            ready: list[dict[str, Any]] = []
            for j, part in enumerate(pending):
                if part:
                    part.sort(key=_by_time)
                    cut = bisect.bisect_right(part, cutoff, key=_by_time)
                    ready.extend(part[:cut])
                    pending[j] = part[cut:]
            ready.sort(key=_by_time)
            passed = cutoff
            yield from ready
            if not live:
                return
    finally:
        for handle in handles:
            handle.close()
