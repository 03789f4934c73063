"""The table build at holiday scale: DuckDB folds the event log in columns, as results._fold.

Each shard's JSON lines are scanned into a few packed columns (:func:`_scan`); during a
burst most of that scan is done ahead, into Parquet stretches under the run's ``.fold/``
(:func:`fold_ahead`, run by :mod:`harness.run.scan_ahead`), and :func:`build` reads the
stretches that still match their shard and scans only the rest.

DuckDB's queries for the orders come first (:func:`_fetch`); then, its budget cut to
:data:`LATER_MEMORY_LIMIT`, the timeline's and the code checks' rows (:func:`_later`).
DuckDB is closed before Python makes the tables from the Arrow rows, each column as pandas
would make it from a list of values, without the list (:func:`harness.results._take`), and
each Arrow column let go once made into one (:class:`_Columns`). At a million orders the
build's peak memory is the tables' own (0.54 GB) plus about 0.4 GB.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from harness import events as E
from harness import results as R
from harness.events import _lines_with, _parse

MEMORY_LIMIT = "512MB"
"""DuckDB's memory budget for the fold; beyond it, it spills to a temporary folder."""
LATER_MEMORY_LIMIT = "128MB"
"""DuckDB's budget once the orders' rows are out, for the timeline's and the codes' queries:
their rows wait in memory beside it; if these run out of it, they run again at
:data:`MEMORY_LIMIT`."""
MAX_LOG_BYTES = 4_000_000_000
"""Logs larger than this go to the streaming fold: within :data:`MEMORY_LIMIT` the columnar
fold was measured on logs up to 2.26 GB (1M orders, 10 suppliers), and a failed attempt
would cost its time twice."""
_BULK = ("order_planned", "order_attempt", "order_accepted", "order_observed", "order_error",
         "order_final", "schedule_slip", "code_checked")
"""Event types folded in DuckDB; each line's fields are read by name in one scan."""
_RARE = ("order_absent", "order_resumed", "code_redeemed", "refund_attempt",
         "refund_requested", "refund_final", "balance_read", "burst_started")
"""Event types parsed line by line in Python (a few per order at most, usually none)."""
_MARKS = tuple(dict.fromkeys((*E.START_EVENTS, *E.FINISH_EVENTS)))
"""The events that say whether the run finished (:func:`harness.events.completion`)."""

_FIELDS = ("supplier", "client_order_id", "mode", "worker", "sku", "quantity", "deadline_s",
           "listed_price", "sale_price", "face_value", "attempt", "method", "purpose", "kind",
           "status", "phase", "supplier_order_id", "state", "last_state", "amount",
           "unit_price", "codes_delivered", "failure_reason", "resolution", "code_hash",
           "serial_masked", "claimed_face_value", "expected_face_value", "issuer_face_value",
           "expires_at", "pattern_ok", "duplicate_of", "face_value_ok", "expiry_ok",
           "issuer_status", "verdict", "interrupted", "failed")
"""Fields read as JSON text (decoded in Python once per distinct text, so every value is the
one json.loads gives); t, intended_at, delivered_seen_at and answered_at are read as
doubles."""

_PACKED = """
  CASE type WHEN 'order_planned' THEN mode WHEN 'order_attempt' THEN attempt
    WHEN 'order_error' THEN kind WHEN 'order_accepted' THEN supplier_order_id
    WHEN 'order_observed' THEN state WHEN 'order_final' THEN state
    WHEN 'code_checked' THEN code_hash
    WHEN 'trial_finished' THEN json_array(interrupted, failed)
    WHEN 'burst_finished' THEN json_array(interrupted, failed)
    WHEN 'resume_finished' THEN json_array(interrupted, failed) END AS k1,
  CASE type WHEN 'order_planned' THEN json_array(worker, sku, quantity, deadline_s,
      listed_price, sale_price, face_value)
    WHEN 'order_attempt' THEN method WHEN 'order_error' THEN status
    WHEN 'order_final' THEN json_array(last_state, amount, unit_price, codes_delivered,
      failure_reason, resolution)
    WHEN 'code_checked' THEN serial_masked END AS k2,
  CASE type WHEN 'order_attempt' THEN purpose WHEN 'order_error' THEN phase
    WHEN 'code_checked' THEN expires_at END AS k3,
  CASE WHEN type = 'code_checked' THEN json_array(mode, sku, claimed_face_value,
      expected_face_value, issuer_face_value, pattern_ok, duplicate_of, face_value_ok,
      expiry_ok, issuer_status, verdict) END AS k4,
  CASE type WHEN 'order_planned' THEN intended_at WHEN 'order_final' THEN delivered_seen_at
    WHEN 'order_accepted' THEN coalesce(answered_at, t) END AS d"""
"""Each event type's fields packed into a few columns (k1..k4, d), so the table stays narrow."""


def _trim_heap() -> None:
    """Hand the free pages back to the system: glibc keeps what DuckDB's threads freed in
    their arenas, hundreds of MB at a million orders (a no-op beyond glibc), and Arrow's
    allocator what the Arrow rows held."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _seq_key(shard: int) -> str:
    """SQL for an event's place in log order, (t, shard, line) as one HUGEINT, so the
    events need no global sort; NULL where t is not an exact multiple of 2**-30 in
    [2**22, 2**33) s (every epoch time from 1970-02-18 to 2242 is; tests' small times are
    not, and get the sorting path)."""
    if not 0 <= shard < 1 << 16:
        return "NULL"
    return (f"CASE WHEN t >= 4194304 AND t < 8589934592 AND t * 1073741824 = "
            f"floor(t * 1073741824) THEN (t * 1073741824)::BIGINT::HUGEINT "
            f"* 281474976710656 + {shard * (1 << 32)} + rn END")


class Unsupported(Exception):
    """The log has something the columnar fold does not reproduce; use the streaming fold."""


def _text(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity
        return json.loads(text)


def _distinct(column: Any) -> tuple[list[Any], np.ndarray[Any, Any], bool]:
    """A column of JSON texts as its distinct values, each text parsed once, and each row's
    index into them; a NULL row's index is one past the last value (the bool: whether a row
    is NULL)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if hasattr(column, "combine_chunks"):
        column = column.combine_chunks()
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    values = [_loads(text) for text in encoded.dictionary.to_pylist()]
    indices = encoded.indices
    has_null = indices.null_count > 0
    if has_null:
        indices = indices.fill_null(len(values))
    return values, indices.to_numpy(zero_copy_only=False), has_null


def _listed(values: list[Any], indices: np.ndarray[Any, Any]) -> list[Any]:
    """``[values[i] for i in indices]``."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):  # one by one: a value may be a list
        array[i] = value
    out: list[Any] = array[indices].tolist()
    return out


def _decode(column: Any) -> list[Any]:
    """A column of JSON texts (None for SQL NULL) as a list of Python values."""
    values, indices, _ = _distinct(column)
    return _listed([*values, None], indices)


def _arrow(con: Any, sql: str, encode: tuple[str, ...] = (), order: str = "") -> Any:
    """The result of ``sql`` as an Arrow table, streamed out of DuckDB in batches; the
    columns ``encode`` (few distinct texts in many rows) dictionary-encoded batch by batch,
    so that they take a few bytes a row while the table waits for the Python fold; with
    ``order``, its rows sorted by that column (then dropped) here rather than in DuckDB,
    whose sort of wide rows did not keep to its memory limit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    reader = con.sql(sql).to_arrow_reader(1 << 16)
    batches = []
    for batch in reader:
        # every column copied out of DuckDB's batch (a column left in it keeps the whole
        # batch, the texts encoded away among it, alive)
        columns = [pc.dictionary_encode(column) if name in encode else pa.concat_arrays([column])
                   for name, column in zip(batch.schema.names, batch.columns, strict=True)]
        batches.append(pa.record_batch(columns, names=batch.schema.names))
    if not batches:  # the schema with the encoded types, no rows
        table = pa.Table.from_batches([], schema=pa.schema([
            pa.field(f.name, pa.dictionary(pa.int32(), f.type) if f.name in encode
                     else f.type) for f in reader.schema]))
    else:
        table = pa.Table.from_batches(batches).unify_dictionaries()
    del batches
    if order:
        rows = pc.sort_indices(table[order])
        table = table.drop_columns([order])
        for i, name in enumerate(table.schema.names):  # one column's copy at a time
            table = table.set_column(i, name, table.column(i).take(rows))
    return table


def _floats(column: Any) -> np.ndarray[Any, Any]:
    out: np.ndarray[Any, Any] = np.array(  # a writable copy
        column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


def build(run_dir: Path) -> R.RunTables:
    """The tables of one run, equal to :func:`harness.results._fold`'s; raises
    :class:`Unsupported` (or a DuckDB error) when the log is not one it reproduces."""
    import duckdb

    shards = sorted(run_dir.glob("events*.jsonl"))
    if not shards:
        raise Unsupported("no event log")
    size = sum(shard.stat().st_size for shard in shards)
    if size > MAX_LOG_BYTES:
        raise Unsupported(f"a {size:,}-byte log is beyond the columnar fold's memory")
    for shard in shards:  # a torn last line is skipped by the streaming fold
        with shard.open("rb") as handle:
            if handle.seek(0, 2) == 0:
                raise Unsupported(f"{shard.name} is empty")
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                raise Unsupported(f"{shard.name} ends with a torn line")
    manifest = R.load_manifest(run_dir)
    signature = E.shards_signature(run_dir)  # before the read, as run_complete takes it
    with tempfile.TemporaryDirectory(prefix="trialbench-fold-") as spill:
        # a database file, not memory: its tables can leave memory past the limit
        con = duckdb.connect(str(Path(spill) / "fold.duckdb"),
                             config={"memory_limit": MEMORY_LIMIT, "temp_directory": spill,
                                     "preserve_insertion_order": True})
        try:
            con.execute("SET enable_progress_bar = false")
            rows = _fetch(con, run_dir, shards, Path(spill))
            # what is left for DuckDB is small: its buffers go back before Python's work
            with contextlib.suppress(duckdb.OutOfMemoryException):  # if it can let them go
                con.execute(f"SET memory_limit = '{LATER_MEMORY_LIMIT}'")
            _trim_heap()
            try:
                timeline, complete, code_rows = _later(con, run_dir.name, rows.rare)
            except duckdb.OutOfMemoryException:  # a log the small budget does not fit:
                con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")  # again, with more
                timeline, complete, code_rows = _later(con, run_dir.name, rows.rare)
        finally:
            con.close()
    # DuckDB gone, Python makes the tables from the Arrow rows; each step's garbage goes
    # back to the system before the next
    _trim_heap()
    money = R._Money(run_dir.name)
    orders = _orders(run_dir.name, rows, money)  # it lets the orders' rows go
    _trim_heap()
    code_columns = _Columns(code_rows)
    del code_rows
    codes = _codes(run_dir.name, code_columns, money)
    _trim_heap()
    tables = R._assemble(run_dir.name, manifest, orders, codes, money, timeline)
    _trim_heap()
    # the scan read every line: keep whether the run finished, so the first analysis
    # need not read the log again (harness.events.run_complete)
    E.keep_completion(run_dir, signature, complete)
    return tables


def _scan(source: str, lines_before: int = 0) -> str:
    """SQL for the packed columns of the wanted events in one JSON-lines file, rn counting
    its lines from ``lines_before`` (the lines of the shard before the file's first)."""
    columns = {"t": "DOUBLE", "type": "VARCHAR", "intended_at": "DOUBLE",
               "delivered_seen_at": "DOUBLE", "answered_at": "DOUBLE",
               **{name: "JSON" for name in _FIELDS}}
    wanted = ", ".join(f"'{k}'" for k in dict.fromkeys((*_BULK, *_RARE, *_MARKS)))
    return f"""SELECT rn + {lines_before} AS rn, t, type,
                 coalesce(supplier::VARCHAR, '""') AS ksup,
                 coalesce(client_order_id::VARCHAR, '""') AS kcid, supplier IS NULL AS nosup,
                 client_order_id IS NULL AS nocid, hash(ksup, kcid) AS k,
                 k1::VARCHAR AS k1, k2::VARCHAR AS k2, k3::VARCHAR AS k3, k4::VARCHAR AS k4, d
             FROM (SELECT row_number() OVER () AS rn, t, type, supplier, client_order_id,
                   {_PACKED}
                   FROM read_json({source}, format='newline_delimited',
                                  columns={columns!r}, maximum_object_size=16777216))
             WHERE type IN ({wanted}) AND (type <> 'order_observed' OR k1 IN
                   ('"success"', '"partial"', '"refunded"'))"""  # the timeline's only use


FOLD_DIR = ".fold"
"""Where :func:`fold_ahead` keeps a shard's scanned stretches, in the run folder."""


def _segment_name(shard: Path, inode: int, start: int, end: int, before: int,
                  lines: int) -> str:
    return f"{shard.name}.{inode}.{start}.{end}.{before}.{lines}.parquet"


def _segments(shard: Path, folded: Path) -> tuple[list[Path], int, int]:
    """The stretches of ``shard`` scanned ahead into ``folded`` (which need not exist) that
    still hold (same file, from byte 0 on without a gap, each ending at a line's end), and
    the bytes and lines they cover."""
    stat = shard.stat()
    found: dict[int, tuple[int, int, int, Path]] = {}
    for path in folded.glob(f"{shard.name}.*.parquet"):
        parts = path.name[len(shard.name) + 1:].split(".")
        if len(parts) == 6 and all(part.isdigit() for part in parts[:5]):
            inode, start, end, before, lines = map(int, parts[:5])
            if inode == stat.st_ino:
                found[start] = (end, before, lines, path)
    chain: list[Path] = []
    covered = counted = 0
    with shard.open("rb") as handle:
        while covered in found:
            end, before, lines, path = found[covered]
            if before != counted or not covered < end <= stat.st_size:
                break
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                break
            chain.append(path)
            covered, counted = end, counted + lines
    return chain, covered, counted


def _copy_range(shard: Path, start: int, end: int, target: Path) -> int:
    """Copy bytes [start, end) of ``shard`` to ``target``; the lines they hold."""
    lines = 0
    with shard.open("rb") as source, target.open("wb") as out:
        source.seek(start)
        left = end - start
        while left:
            block = source.read(min(left, 1 << 24))
            if not block:
                raise Unsupported(f"{shard.name} shrank while it was read")
            out.write(block)
            lines += block.count(b"\n")
            left -= len(block)
    return lines


def _last_line_end(shard: Path, start: int, limit: int) -> int:
    """The end of the last whole line of ``shard`` in bytes [start, limit); start if none."""
    with shard.open("rb") as handle:
        end = limit
        while end > start:
            begin = max(start, end - (1 << 20))
            handle.seek(begin)
            block = handle.read(end - begin)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return begin + newline + 1
            end = begin
    return start


def fold_ahead(run_dir: Path, *, min_bytes: int, max_bytes: int | None = None,
               keep_bytes: int = 0, stop: Callable[[], bool] | None = None) -> int:
    """Scan the log's new whole lines into Parquet stretches under ``run_dir/.fold``, so
    that the table build at the end of a run reads those instead of the JSON (what
    :func:`build` would scan there, byte for byte). A shard is scanned once it has
    ``min_bytes`` new, in stretches of at most ``max_bytes`` (default 4 x ``min_bytes``),
    leaving its last ``keep_bytes`` alone; ``stop()`` is asked between stretches. A
    stretch is written whole under a temporary name and renamed, so stopping at any point
    loses nothing. Returns the bytes scanned. During a burst, :mod:`harness.run.scan_ahead`
    runs it."""
    import duckdb

    folded = run_dir / FOLD_DIR
    done = 0
    for shard in sorted(run_dir.glob("events*.jsonl")):
        while not (stop is not None and stop()):
            _, covered, counted = _segments(shard, folded)
            most = 4 * min_bytes if max_bytes is None else max(min_bytes, max_bytes)
            limit = min(shard.stat().st_size - keep_bytes, covered + most)
            if limit - covered < min_bytes:
                break
            end = _last_line_end(shard, covered, limit)
            if end - covered < min_bytes:
                break
            folded.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="trialbench-fold-", dir=folded) as work:
                part = Path(work) / "part.jsonl"
                lines = _copy_range(shard, covered, end, part)
                temporary = Path(work) / "part.parquet"
                con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "threads": 1,
                                             "temp_directory": work})
                try:
                    con.execute(f"COPY ({_scan(_text(part), counted)}) TO "
                                f"{_text(temporary)} (FORMAT parquet)")
                finally:
                    con.close()
                os.replace(temporary, folded / _segment_name(
                    shard, shard.stat().st_ino, covered, end, counted, lines))
            done += end - covered
    return done


class _Columns:
    """An Arrow table that lets each column go once it is popped, so that a column's
    memory goes back as soon as the table's column is made from it."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.num_rows: int = table.num_rows

    def pop(self, name: str) -> Any:
        column = self.table.column(name)
        self.table = self.table.drop_columns([name])
        return column


@dataclass
class _Rows:
    """What DuckDB hands the Python fold for the orders table, in Arrow: the rare events
    (parsed), the orders' rows with their attempts and errors."""

    rare: list[tuple[dict[str, Any], dict[str, Any]]]
    orders: Any
    tried: Any
    failed: Any


def _later(con: Any, run_id: str, rare: list[tuple[dict[str, Any], dict[str, Any]]]
           ) -> tuple[Any, bool, Any]:
    """:func:`_timeline`, :func:`_complete` and :func:`_code_rows`."""
    return _timeline(con, run_id, rare), _complete(con), _code_rows(con)


def _fetch(con: Any, run_dir: Path, shards: list[Path], spill: Path) -> _Rows:
    """The log's events in DuckDB (stretches scanned ahead and JSON), checked, the orders
    keyed, and the rows the Python fold reads."""
    folded = run_dir / FOLD_DIR
    scans: list[tuple[int, str]] = []  # (shard, JSON scan) read into table json<i>
    parts: list[list[str]] = []  # each shard's sources, in line order
    for i, shard in enumerate(shards):
        chain, covered, counted = _segments(shard, folded)
        parts.append([f"SELECT * FROM read_parquet([{', '.join(map(_text, chain))}])"]
                     if chain else [])
        size = shard.stat().st_size
        if covered == 0:
            scans.append((i, _scan(_text(shard))))
        elif covered < size:  # the log written since it was scanned ahead
            tail = spill / f"tail{i}.jsonl"
            _copy_range(shard, covered, size, tail)
            scans.append((i, _scan(_text(tail), counted)))
    for i, _ in scans:
        parts[i].append(f"SELECT * FROM json{i}")

    # a JSON scan's line numbers need a single thread: the shards are read side by side,
    # one thread each, into tables of the fold's database; stretches scanned ahead are read
    # where they are
    def read(i: int) -> None:
        cursor = con.cursor()
        try:
            cursor.execute(f"CREATE TABLE json{scans[i][0]} AS {scans[i][1]}")
        finally:
            cursor.close()

    if scans:
        with ThreadPoolExecutor(max_workers=min(len(scans), os.cpu_count() or 1)) as pool:
            list(pool.map(read, range(len(scans))))
    for i, sources in enumerate(parts):
        con.execute(f"CREATE VIEW shard{i} AS SELECT {i} AS shard, *, {_seq_key(i)} AS seq "
                    f"FROM ({' UNION ALL '.join(sources)})")
    union = " UNION ALL ".join(f"SELECT * FROM shard{i}" for i in range(len(shards)))
    con.execute("SET preserve_insertion_order = false")  # the order is seq's from here on
    unkeyed = con.sql(f"SELECT count(*) FILTER (WHERE seq IS NULL) FROM ({union})").fetchall()
    if not unkeyed[0][0]:  # every event has its key: no sort needed
        con.execute(f"CREATE VIEW ev AS {union}")
    else:
        _number_by_sorting(con, union, len(shards))
    bad_t, starts = con.sql("""SELECT count(*) FILTER (WHERE t IS NULL OR isnan(t)),
        count(*) FILTER (WHERE type = 'burst_started') FROM ev""").fetchall()[0]
    if bad_t:
        raise Unsupported("an event without a numeric time")
    # joins go by k, a 64-bit hash of the order's key: exact only while no two keys share one
    shared = con.sql("""SELECT count(*) FROM (SELECT k FROM ev GROUP BY k
                        HAVING min(ksup) <> max(ksup) OR min(kcid) <> max(kcid))""").fetchall()
    if shared[0][0]:
        raise Unsupported("two orders' keys share a hash")
    if starts > 1:
        raise Unsupported("more than one burst_started")
    # first/last by seq, then the rows themselves by seq: aggregates of fixed size and
    # joins, which DuckDB can spill (arg_max over text could not, at a million orders)
    con.execute("""CREATE TABLE o AS
        SELECT row_number() OVER (ORDER BY g.first_seq) - 1 AS idx, g.k, e.ksup, e.kcid,
               g.first_seq, g.last_seq, e.k1 AS mode, e.k2 AS rest, e.d AS intended
        FROM (SELECT k, min(seq) AS first_seq, max(seq) AS last_seq
              FROM ev WHERE type = 'order_planned' GROUP BY k) g
        JOIN (SELECT seq, ksup, kcid, k1, k2, d FROM ev WHERE type = 'order_planned') e
             ON e.seq = g.last_seq""")

    return _Rows(_rare_events(con, shards), *_order_rows(con))


def _number_by_sorting(con: Any, union: str, shards: int) -> None:
    """The events as table ``ev``, seq numbered by sorting them all on (t, shard, line):
    for a log with a time outside :func:`_seq_key`'s range."""
    con.execute(f"""CREATE TABLE ev AS SELECT * EXCLUDE (seq),
        row_number() OVER (ORDER BY t, shard, rn) AS seq FROM ({union})""")
    for i in range(shards):
        con.execute(f"DROP VIEW shard{i}")
        con.execute(f"DROP TABLE IF EXISTS json{i}")


def _complete(con: Any) -> bool:
    """:func:`harness.events.completion` of the run's start and finish events."""
    rows = con.sql(f"""SELECT t, type, k1 FROM ev
                       WHERE type IN ({", ".join(f"'{k}'" for k in _MARKS)})""").fetchall()
    marks = []
    for t, kind, flags in rows:
        interrupted, failed = _loads(flags) if flags is not None else (None, None)
        marks.append({"t": t, "type": kind, "interrupted": interrupted, "failed": failed})
    return E.completion(marks)


def _rare_events(con: Any, shards: list[Path]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The rare events in log order, parsed from their lines, each with what DuckDB knows of
    it (seq, its order's row and last plan, the mode of its order's plan before it)."""
    rows = con.sql(f"""
        WITH r AS (SELECT shard, rn, seq, t, type, k FROM ev
                   WHERE type IN ({", ".join(f"'{k}'" for k in _RARE)})),
             p AS (SELECT k, seq AS pseq, k1 AS pmode FROM ev
                   WHERE type = 'order_planned')
        SELECT r.shard, r.rn, r.seq, r.t, r.type, o.idx, o.last_seq, p.pseq, p.pmode
        FROM r ASOF LEFT JOIN p ON r.k = p.k AND r.seq >= p.pseq
        LEFT JOIN o ON r.k = o.k
        ORDER BY r.shard, r.rn""").fetchall()
    if not rows:
        return []
    by_shard: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_shard[row[0]].append(row)
    needles = [f'"type":"{kind}"'.encode() for kind in _RARE]
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i, shard in enumerate(shards):
        mine = by_shard.get(i, [])
        if not mine:
            continue
        events = [e for e in map(_parse, _lines_with(shard, needles)) if e.get("type") in _RARE]
        if len(events) != len(mine):
            raise Unsupported(f"{shard.name}: rare events not in the compact layout")
        for event, (_, _, seq, t, kind, idx, last_seq, pseq, pmode) in zip(events, mine,
                                                                           strict=True):
            if event["type"] != kind or float(event["t"]) != t:
                raise Unsupported(f"{shard.name}: rare events out of step")
            out.append((event, {"seq": seq, "idx": idx, "last_seq": last_seq,
                                "mode": _loads(pmode) if pseq is not None else ""}))
    out.sort(key=lambda pair: int(pair[1]["seq"]))
    return out


def _strings(column: Any) -> Any:
    """A column of JSON texts as a pandas ``str`` array straight from Arrow, when every text
    is a plain JSON string (no escapes) or NULL and at least one is a string (what pandas
    makes of such a list of str and None); else None."""
    import pandas as pd
    import pyarrow.compute as pc

    if hasattr(column, "combine_chunks"):
        column = column.combine_chunks()
    valid = len(column) - column.null_count
    if not valid:
        return None
    if hasattr(column, "dictionary"):  # encoded (each text in the dictionary is used)
        texts = column.dictionary
        if pc.sum(pc.match_substring_regex(texts, r'^"[^"\\]*"$')).as_py() != len(texts):
            return None
        return pd.array(pc.take(pc.utf8_slice_codeunits(texts, 1, -1), column.indices),
                        dtype="str")
    if pc.sum(pc.match_substring_regex(column, r'^"[^"\\]*"$')).as_py() != valid:
        return None
    return pd.array(pc.utf8_slice_codeunits(column, 1, -1), dtype="str")


def _texts(column: Any) -> Any:
    """:func:`_strings`, or else the column of decoded values as pandas makes it from their
    list (:func:`harness.results._take`)."""
    plain = _strings(column)
    if plain is not None:
        return plain
    values, indices, has_null = _distinct(column)
    return R._take([*values, None] if has_null else values, indices)


def _derived(column: Any, derive: Any, default: tuple[Any, ...],
             make: Callable[[list[Any], np.ndarray[Any, Any]], Any] = R._take) -> list[Any]:
    """Per row, ``derive(value)`` (a tuple) of the row's JSON text, or ``default`` where the
    text is NULL; computed once per distinct text; returned as one column per tuple field,
    each made by ``make`` from the distinct values and the rows' indices into them (by
    default a pandas column as from the list of values, :func:`harness.results._take`)."""
    values, indices, has_null = _distinct(column)
    rows = [derive(value) for value in values] + ([default] if has_null else [])
    return [make([row[i] for row in rows], indices) for i in range(len(default))]


def _plan_fields(value: Any) -> tuple[Any, ...]:
    worker, sku, quantity, deadline, listed, sale, face = value
    return ("" if worker is None else worker, sku, quantity, deadline, R._money(listed),
            R._money(sale), R._money(face))


def _final_fields(value: Any) -> tuple[Any, ...]:
    last, amount, unit, delivered, reason, resolution = value
    return (last, R._money(amount), R._money(unit), delivered, reason or "", resolution or "")


def _order_rows(con: Any) -> tuple[Any, Any, Any]:
    """Each order's row (its last plan, first and last acceptance, last final state), its
    attempts counted by method and purpose, and its errors in log order."""
    base = _arrow(con, """
        WITH acc AS (SELECT o.idx, min(e.seq) AS first, max(e.seq) AS last
                     FROM ev e JOIN o ON e.k = o.k
                     WHERE e.type = 'order_accepted' AND e.seq > o.last_seq GROUP BY o.idx),
             fin AS (SELECT o.idx, max(e.seq) AS last
                     FROM ev e JOIN o ON e.k = o.k
                     WHERE e.type = 'order_final' AND e.seq > o.last_seq GROUP BY o.idx)
        SELECT o.idx, o.ksup, o.kcid, o.mode, o.rest, o.intended, a1.d AS accepted_at,
               CASE WHEN acc.idx IS NULL THEN '""' ELSE a2.k1 END AS soid,
               f.t AS final_at, f.d AS seen,
               CASE WHEN fin.idx IS NULL THEN '"unknown"' ELSE f.k1 END AS state,
               f.k2 AS frest
        FROM o LEFT JOIN acc ON o.idx = acc.idx
             LEFT JOIN (SELECT seq, d FROM ev WHERE type = 'order_accepted') a1
                 ON a1.seq = acc.first
             LEFT JOIN (SELECT seq, k1 FROM ev WHERE type = 'order_accepted') a2
                 ON a2.seq = acc.last
             LEFT JOIN fin ON o.idx = fin.idx
             LEFT JOIN (SELECT seq, t, k1, k2, d FROM ev WHERE type = 'order_final') f
                 ON f.seq = fin.last""", encode=("ksup", "mode", "rest", "state", "frest"),
                  order="idx")
    tried = _arrow(con, """SELECT o.idx, e.k2 AS method, e.k3 AS purpose, count(*) AS n
                       FROM ev e JOIN o ON e.k = o.k
                       WHERE e.type = 'order_attempt' GROUP BY ALL""",
                   encode=("method", "purpose"))
    failed = _arrow(con, """SELECT e.seq, o.idx, e.k1 AS kind, e.k2 AS status, e.k3 AS phase
                        FROM ev e JOIN o ON e.k = o.k
                        WHERE e.type = 'order_error'""", order="seq")
    return base, tried, failed


def _orders(run_id: str, fetched: _Rows, money: R._Money) -> Any:
    """The orders table; feeds ``money`` the rare money events. It takes the orders' rows
    out of ``fetched``, so that each goes once made into the table's columns."""
    base = _Columns(fetched.orders)
    tried, failed, rare = fetched.tried, fetched.failed, fetched.rare
    fetched.orders = fetched.tried = fetched.failed = None  # each goes once made into columns
    n = base.num_rows
    worker, sku, quantity, deadline, listed, sale, face = _derived(
        base.pop("rest"), _plan_fields, (None,) * 7)
    last, amount, unit, delivered, reason, resolution = _derived(
        base.pop("frest"), _final_fields, ("unknown", 0.0, np.nan, 0, "", ""))
    num: dict[str, np.ndarray[Any, Any]] = {
        "intended_at": _floats(base.pop("intended")),
        "accepted_at": _floats(base.pop("accepted_at")),
        "final_at": _floats(base.pop("final_at")), "seen": _floats(base.pop("seen")),
        "listed_price": np.asarray(listed, dtype=np.float64),
        "sale_price": np.asarray(sale, dtype=np.float64),
        "face_value": np.asarray(face, dtype=np.float64),
        "unit_price": np.asarray(unit, dtype=np.float64),
        "amount": np.asarray(amount, dtype=np.float64)}
    obj: dict[str, Any] = {
        "mode": _texts(base.pop("mode")), "worker": worker, "sku": sku, "quantity": quantity,
        "deadline_s": deadline, "state": _texts(base.pop("state")), "last_state": last,
        "codes_delivered": delivered, "failure_reason": reason, "resolution": resolution,
        "supplier_order_id": _texts(base.pop("soid"))}

    for event, known in rare:  # resumes move intended_at; money events in log order
        kind = event["type"]
        idx, last_seq = known["idx"], known["last_seq"]
        after_plan = idx is not None and known["seq"] > last_seq
        # placed anew on resume (absent), or never sent before it (resumed, no POST seen)
        if after_plan and (kind == "order_absent" or (kind == "order_resumed"
                           and event.get("posted_at") is None)):
            num["intended_at"][idx] = event["intended_at"]
        elif kind in R._Money.KINDS:
            key = (event.get("supplier", ""), event.get("client_order_id", ""))
            money.add(kind, event, key, known["mode"])

    counts = tuple(np.zeros(n, dtype=np.int64) for _ in range(4))
    if tried.num_rows:
        rows = tried["idx"].to_numpy()
        times = tried["n"].to_numpy().astype(np.int64)
        np.add.at(counts[0], rows, times)
        # each (method, purpose) pair that occurs looked up once
        methods, method_of, _ = _distinct(tried["method"])
        purposes, purpose_of, _ = _distinct(tried["purpose"])
        methods.append(None)
        purposes.append(None)
        pair = method_of.astype(np.int64) * len(purposes) + purpose_of
        seen, where = np.unique(pair, return_inverse=True)
        column = np.array([_PURPOSE.get(purposes[p % len(purposes)] or
                                        methods[p // len(purposes)], 0) for p in seen.tolist()],
                          dtype=np.int64)[where]
        for c in (1, 2, 3):
            mine = column == c
            np.add.at(counts[c], rows[mine], times[mine])

    errors: dict[int, list[tuple[str, int, str]]] = {}
    for row, kind_, status, phase in zip(failed["idx"].to_pylist(), _decode(failed["kind"]),
                                         _decode(failed["status"]), _decode(failed["phase"]),
                                         strict=True):
        errors.setdefault(row, []).append(("" if kind_ is None else str(kind_),
                                           0 if status is None else int(status),
                                           "" if phase is None else str(phase)))
    del tried, failed
    return R._orders_frame(run_id, _texts(base.pop("ksup")), _texts(base.pop("kcid")), num,
                           obj, counts, errors)


_PURPOSE = R._PURPOSE_COLUMN


def _code_fields(value: Any) -> tuple[Any, ...]:
    return (*value[:2], *(R._money(v) for v in value[2:5]), *value[5:])


def _code_rows(con: Any) -> Any:
    """The code checks in log order, each with its order's key and mode when planned."""
    return _arrow(con, """SELECT e.seq,
                              CASE WHEN e.nosup AND o.idx IS NULL THEN NULL ELSE e.ksup END
                                  AS supplier,
                              CASE WHEN e.nocid AND o.idx IS NULL THEN NULL ELSE e.kcid END
                                  AS client_order_id,
                              e.k1, e.k2, e.k3, e.k4, o.mode AS omode,
                              o.idx IS NOT NULL AS planned
                       FROM ev e LEFT JOIN o ON e.k = o.k
                       WHERE e.type = 'code_checked'""",
                  encode=("supplier", "k3", "k4", "omode"), order="seq")


def _codes(run_id: str, table: _Columns, money: R._Money) -> Any:
    """The codes table, one row per code_checked in log order; its columns made as
    :func:`harness.results._code_frame` makes them from lists, without the lists."""
    # event.get(col): None where the field is missing, unless the order's key replaces it
    codes: dict[str, Any] = {
        "supplier": _texts(table.pop("supplier")),
        "client_order_id": _texts(table.pop("client_order_id")),
        "code_hash": _texts(table.pop("k1")), "serial_masked": _texts(table.pop("k2"))}
    expiries, indices, has_null = _distinct(table.pop("k3"))
    codes["expires_at"] = R._take(R._expiries([*expiries, None] if has_null else expiries),
                                  indices)
    names = ("mode", "sku", "claimed_face_value", "expected_face_value", "issuer_face_value",
             "pattern_ok", "duplicate_of", "face_value_ok", "expiry_ok", "issuer_status",
             "verdict")
    for name, (values, indices) in zip(names, _derived(
            table.pop("k4"), _code_fields, (None,) * len(names), lambda v, i: (v, i)),
            strict=True):
        if name == "duplicate_of":
            values = R._duplicate_of(values)
        if name == "mode" and not all(values):  # the order's mode, or "" if never planned
            omodes = _decode(table.pop("omode"))
            planned = table.pop("planned").to_pylist()
            codes[name] = [m if m else (om if p else "") for m, om, p in zip(
                _listed(values, indices), omodes, planned, strict=True)]
        else:
            codes[name] = R._take(values, indices)
    return R._code_table(run_id, codes, money)


def _timeline(con: Any, run_id: str,
              rare: list[tuple[dict[str, Any], dict[str, Any]]]) -> Any:
    """The timeline table (per supplier per second of a burst)."""
    builder = R._TimelineBuilder(run_id)
    starts = [(event, known) for event, known in rare if event["type"] == "burst_started"]
    if not starts:
        return builder.frame()
    event, known = starts[0]
    builder.t0 = t0 = float(event["t0"])
    builder.scheduled = event.get("scheduled_per_second") or {}
    con.execute(f"""CREATE OR REPLACE TABLE bp AS SELECT k, seq AS pseq, d AS intended
                    FROM ev WHERE type = 'order_planned' AND k1 = '"burst"'
                    AND seq > {known["seq"]}""")
    replans = con.sql("SELECT count(*) - count(DISTINCT k) FROM bp").fetchall()
    # each event sees the order's last burst plan before it: an ASOF join, or a plain one
    # when no order was planned twice (a burst never re-plans; a resume might)
    join = "ASOF JOIN" if replans[0][0] else "JOIN"
    con.execute(f"""CREATE OR REPLACE TABLE m AS
        WITH tev AS (SELECT ksup, k, seq, type, t, k1, k2, d FROM ev  -- what the counts read
                     WHERE seq > {known["seq"]} AND (type IN ('order_accepted',
                     'order_observed', 'order_error', 'schedule_slip')
                     OR (type = 'order_attempt' AND k2 = '"POST"')
                     OR (type = 'order_final' AND k1 IN ('"partial"', '"failed"'))))
        SELECT tev.*, bp.intended, floor(tev.t - {t0!r})::BIGINT AS sec,
               floor(bp.intended - {t0!r})::BIGINT AS isec
        FROM tev {join} bp ON tev.k = bp.k
                           AND tev.seq >= bp.pseq""")
    cells: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    supplier_of: dict[str, Any] = {}

    def supplier(text: str) -> Any:
        got = supplier_of.get(text)
        if got is None:
            got = supplier_of[text] = _loads(text)
        return got

    def add(sql: str, column: str) -> None:
        for ksup, sec, n in con.sql(sql).fetchall():
            cells[(supplier(ksup), sec)][column] += n

    add("""SELECT ksup, sec, count(*) FROM m WHERE type = 'order_attempt'
           AND (k1 IN ('1', 'true')
               OR (json_type(k1::JSON) IN ('DOUBLE', 'UBIGINT', 'BIGINT') AND k1::DOUBLE = 1))
           GROUP BY ALL""", "sent")
    con.execute("""CREATE OR REPLACE TABLE acc AS
                   SELECT any_value(ksup) AS ksup, k, min(seq) AS aseq,
                   arg_min(sec, seq) AS sec, arg_min(isec, seq) AS isec,
                   arg_min((d - intended) * 1000, seq) AS ms
                   FROM m WHERE type = 'order_accepted' GROUP BY k""")
    add("SELECT ksup, sec, count(*) FROM acc GROUP BY ALL", "accepted")
    latencies = con.sql("SELECT ksup, isec, list(ms) FROM acc GROUP BY ALL").fetchall()
    for ksup, isec, values in latencies:
        builder.acceptance[(supplier(ksup), isec)] = values
    add("""SELECT ksup, sec, count(*) FROM (SELECT ksup, arg_min(sec, seq) AS sec FROM m
           WHERE type = 'order_observed' AND k1 IN ('"success"', '"partial"', '"refunded"')
           GROUP BY ksup, k) GROUP BY ALL""", "delivered")
    for ksup, sec, kind, status, n in con.sql(
            """SELECT ksup, sec, k1, k2, count(*) FROM m WHERE type = 'order_error'
               GROUP BY ALL""").fetchall():
        kind_, status_ = _loads(kind), _loads(status)
        column = R._error_column(str("" if kind is None else kind_),
                                 int(0 if status is None else status_))
        cells[(supplier(ksup), sec)][column] += n
    add("SELECT ksup, isec, count(*) FROM m WHERE type = 'schedule_slip' GROUP BY ALL",
        "slipped")
    add("""SELECT m.ksup, m.sec, count(*) FROM m JOIN acc ON m.k = acc.k
           AND m.seq > acc.aseq
           WHERE m.type = 'order_final' GROUP BY ALL""", "partial_oversold")
    builder.cells = cells
    return builder.frame()
