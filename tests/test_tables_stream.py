"""The table builders (columnar and streaming) give the same tables as the builder they
replaced, and money is exact decimals in the Parquet files."""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import shutil
import sys
import tarfile
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness import tables_columnar
from harness.events import (
    COMPLETE_STAMP,
    EventOrderError,
    read_events,
    run_complete,
    stream_events,
)
from harness.results import (
    MONEY_COLUMNS,
    SCHEMAS,
    build_tables,
    build_tables_streaming,
    read_table,
    write_tables,
)

ROOT = Path(__file__).parent.parent
REAL_RUNS = Path(__file__).parent / "data" / "runs" / "real-runs.tar.gz"


@functools.cache
def _reference() -> ModuleType:
    """bench/tables_reference.py: the builder before the streaming one."""
    spec = importlib.util.spec_from_file_location("tables_reference",
                                                  ROOT / "bench" / "tables_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tables_reference"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real burst (4 suppliers, errors, slips, callbacks) and a real demo trial (refunds,
    redeemed codes, bad codes) recorded by trialbench, unpacked."""
    root = tmp_path_factory.mktemp("real")
    with tarfile.open(REAL_RUNS) as archive:
        archive.extractall(root, filter="data")
    return {"burst": root / "burst", "trial": root / "trial"}


def _assert_same_tables(run_dir: Path, *, columnar: bool = True) -> None:
    """Both builders (the columnar one unless told it cannot) and build_tables give the
    reference builder's tables, value for value and dtype for dtype."""
    old = _reference().build_tables(run_dir)
    builders = [build_tables_streaming, build_tables]
    if columnar:
        builders.append(tables_columnar.build)
    for builder in builders:
        new = builder(run_dir)
        for name in SCHEMAS:
            pd.testing.assert_frame_equal(getattr(new, name), getattr(old, name),
                                          check_exact=True, obj=f"{builder.__name__} {name}")
    if columnar:  # and the columnar fold of a log scanned ahead as it was written
        new = tables_columnar.build(_folded_as_written(run_dir))
        for name in SCHEMAS:
            pd.testing.assert_frame_equal(getattr(new, name), getattr(old, name),
                                          check_exact=True, obj=f"scanned ahead {name}")


def _folded_as_written(run_dir: Path) -> Path:
    """A copy of the run whose shards are written in three steps, scanned ahead
    (fold_ahead) after the first two, as a burst does: stretches and an unscanned tail
    (the first step's in stretches of at most 64 kB)."""
    copy = run_dir.parent / "scanned-ahead" / run_dir.name  # the same run id
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("events*.jsonl", ".fold"))
    shards = {shard.name: shard.read_bytes().splitlines(keepends=True)
              for shard in run_dir.glob("events*.jsonl")}
    for step in (1, 2, 3):
        for name, lines in shards.items():
            with (copy / name).open("ab") as handle:
                handle.writelines(lines[len(lines) * (step - 1) // 3:len(lines) * step // 3])
        if step < 3:
            tables_columnar.fold_ahead(copy, min_bytes=1, max_bytes=65536 if step == 1 else
                                       1 << 30)
    assert list((copy / tables_columnar.FOLD_DIR).glob("*.parquet"))
    return copy


@pytest.mark.parametrize("kind", ["burst", "trial"])
def test_streamed_tables_equal_the_old_builders(real_runs: dict[str, Path], kind: str) -> None:
    """On a real burst and a real trial, every table is the old builder's, value for value
    (every order once, amounts to the last bit)."""
    _assert_same_tables(real_runs[kind])


def test_stream_gives_the_sorted_order(real_runs: dict[str, Path]) -> None:
    """The stream yields exactly the events of read_events in the same order, also with a
    small window and small chunks."""
    run = real_runs["burst"]
    assert list(stream_events(run, window_s=0.2, chunk_bytes=4096)) == list(read_events(run))


def _write(run_dir: Path, shards: dict[str, list[dict[str, Any]]]) -> Path:
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_dir.name}))
    for name, events in shards.items():
        with (run_dir / name).open("w") as handle:
            for event in events:
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
    return run_dir


def _planned(cid: str, t: float, mode: str = "trial") -> dict[str, Any]:
    return {"t": t, "type": "order_planned", "supplier": "s", "client_order_id": cid,
            "mode": mode, "worker": "w0", "sku": "c", "quantity": 1, "intended_at": t,
            "deadline_s": 10, "listed_price": "9.05", "sale_price": "10.10",
            "face_value": "10"}


def test_resume_replan_and_refund_edge_cases_match(tmp_path: Path) -> None:
    """Re-planned orders, resumed and absent orders, a refund re-read on resume, balances
    and two shards with equal times give the old builder's tables."""
    key = {"supplier": "s", "client_order_id": "o1"}
    key2 = {"supplier": "s", "client_order_id": "o2"}
    main = [
        {"t": 100.0, "type": "trial_started"},
        {"t": 100.0, "type": "balance_read", "supplier": "s", "phase": "before",
         "balance": "100.00"},
        _planned("o1", 100.0), _planned("o2", 100.5),
        {"t": 100.6, "type": "order_attempt", **key, "attempt": 1, "method": "POST",
         "purpose": "place"},
        {"t": 100.7, "type": "order_error", **key, "kind": "http_503", "status": 503,
         "phase": "place"},
        {"t": 100.8, "type": "order_accepted", **key, "supplier_order_id": "X1",
         "status": 201, "state": "submitted", "unit_price": "9.05", "amount": "9.05",
         "via": "post"},
        {"t": 101.0, "type": "order_final", **key, "state": "success",
         "last_state": "success", "amount": "9.05", "unit_price": "9.05",
         "codes_delivered": 1, "delivered_at": None, "failure_reason": None,
         "delivered_seen_at": 100.9, "within_deadline": True, "skipped": None},
        {"t": 101.5, "type": "refund_attempt", **key, "reason": "unused"},
        {"t": 101.6, "type": "refund_requested", **key, "reason": "unused", "status": 201,
         "state": "pending", "amount": "9.05"},
        {"t": 102.0, "type": "balance_read", "supplier": "s", "phase": "after_orders",
         "balance": "90.90"},
    ]
    resume = [
        {"t": 103.0, "type": "run_resumed"},
        {"t": 103.0, "type": "order_resumed", **key2, "intended_at": 103.0, "posted_at": None},
        _planned("o1", 103.1),
        {"t": 103.2, "type": "order_absent", **key2, "intended_at": 103.2},
        {"t": 103.3, "type": "refund_requested", **key, "reason": "unused", "status": 200,
         "state": "completed", "amount": "9.05", "via": "resume"},
        {"t": 103.4, "type": "refund_final", **key, "state": "completed", "final": True,
         "amount": "9.05", "resolved_seen_at": 103.35, "credited_amount": "9.05",
         "credited": True},
        {"t": 104.0, "type": "resume_finished"},
    ]
    run = _write(tmp_path / "run", {"events.jsonl": main, "events-resume-1.jsonl": resume})
    _assert_same_tables(run)


def test_a_shard_far_out_of_order_falls_back_to_sorting(tmp_path: Path) -> None:
    """A shard whose lines are out of time order beyond the window cannot be streamed; the
    builder then sorts the whole log and the tables are still the old builder's."""
    events = [_planned(f"o{i}", 100.0 + i) for i in range(40)]
    random.Random(3).shuffle(events)
    run = _write(tmp_path / "shuffled", {"events.jsonl": [{"t": 99.0, "type": "trial_started"},
                                                          *events]})
    with pytest.raises(EventOrderError):
        list(stream_events(run, window_s=1.0, chunk_bytes=256))
    _assert_same_tables(run)


def test_money_is_decimal_in_parquet_and_exact(real_runs: dict[str, Path],
                                               tmp_path: Path) -> None:
    """Every money column is a decimal in the Parquet file, holding the log's amounts to
    the cent, and reads back as the builder's floats; schema.json says so."""
    run = real_runs["trial"]
    tables = build_tables(run)
    out = tmp_path / run.name
    out.mkdir()
    write_tables(out, tables)
    logged = {e["client_order_id"]: Decimal(e["amount"]) for e in read_events(run)
              if e["type"] == "order_final" and e.get("amount") is not None}
    orders = pq.read_table(out / "orders.parquet").to_pandas()
    assert all(isinstance(v, Decimal) for v in orders["amount"])
    assert {cid: amount for cid, amount in zip(orders["client_order_id"], orders["amount"],
                                               strict=True)} == logged
    schema = json.loads((out / "schema.json").read_text())
    for name, columns in MONEY_COLUMNS.items():
        fields = pq.read_schema(out / f"{name}.parquet")
        for col in columns:
            assert str(fields.field(col).type).startswith("decimal128(38,"), (name, col)
            assert "decimal128" in schema[name][col]
        back = read_table(out / f"{name}.parquet")
        for col in columns:
            pd.testing.assert_series_equal(back[col], getattr(tables, name)[col].astype(float))


def _burst_log(tmp_path: Path) -> Path:
    """A hand-written burst in two worker shards and the master's, with the rules that hang
    on log order: ties in time, re-plans, events before the burst or the plan, resumes,
    redeemed samples and a supplier's odd values."""
    k1 = {"supplier": "s", "client_order_id": "b1"}
    k2 = {"supplier": "s", "client_order_id": "b2"}
    k3 = {"supplier": "t", "client_order_id": "b3"}

    def plan(cid: str, t: float, supplier: str = "s", **extra: Any) -> dict[str, Any]:
        return {**_planned(cid, t, mode="burst"), "supplier": supplier, **extra}

    master = [
        {"t": 98.0, "type": "balance_read", "supplier": "s", "phase": "before",
         "balance": "50.00"},
        {"t": 99.0, "type": "burst_started", "t0": 99.5,
         "scheduled_per_second": {"s": [1, 2, 0], "t": [0, 1]}},
        {"t": 120.0, "type": "balance_read", "supplier": "s", "phase": "after_orders",
         "balance": "31.00"},
        {"t": 121.0, "type": "code_redeemed", **k1, "code_hash": "h1", "status": "redeemed"},
        {"t": 122.0, "type": "burst_finished"},
    ]
    w0 = [
        plan("b0", 98.5),  # before the burst started: in orders, not in the timeline
        {"t": 100.0, "type": "order_attempt", **k3, "attempt": 1, "method": "POST",
         "purpose": "place"},  # before its plan
        {"t": 100.0, "type": "order_error", **k3, "kind": "timeout", "status": 0,
         "phase": "place"},
        plan("b1", 100.0), plan("b3", 100.1, supplier="t"),
        {"t": 100.15, "type": "order_attempt", **k3, "attempt": 2, "method": "POST",
         "purpose": "repost"},  # its last failed POST is what error_kind shows
        {"t": 100.15, "type": "order_error", **k3, "kind": "http_503", "status": 503,
         "phase": "place"},
        {"t": 100.2, "type": "order_attempt", **k1, "attempt": 1.0, "method": "POST",
         "purpose": "place"},
        {"t": 100.2, "type": "schedule_slip", **k1, "intended_at": 100.0,
         "started_at": 100.2, "slip_ms": 200.0},
        {"t": 100.4, "type": "order_accepted", **k1, "supplier_order_id": 123, "status": 201,
         "state": "submitted", "unit_price": "9.05", "amount": "9.05", "via": "post",
         "answered_at": 100.35},
        {"t": 100.4, "type": "order_accepted", **k1, "supplier_order_id": {"odd": [1]},
         "status": 200, "state": "submitted", "unit_price": "9.05", "amount": "9.05",
         "via": "get"},
        {"t": 100.5, "type": "order_observed", **k1, "state": "success", "source": "poll"},
        {"t": 100.6, "type": "order_final", **k1, "state": "success", "last_state": "success",
         "amount": "9.05", "unit_price": "9.05", "codes_delivered": 1, "delivered_at": None,
         "failure_reason": None, "delivered_seen_at": 100.5, "within_deadline": True,
         "skipped": None},
        {"t": 100.6, "type": "order_final", **k1, "state": "partial", "last_state": "partial",
         "amount": "9.10", "unit_price": None, "codes_delivered": 1.0, "delivered_at": None,
         "failure_reason": 'odd "reason" \\ é', "delivered_seen_at": 100.5,
         "within_deadline": True, "skipped": None, "resolution": None},
        {"t": 101.0, "type": "code_checked", **k1, "sku": "c", "mode": "",
         "code_hash": "h1", "serial_masked": "***1", "claimed_face_value": "10",
         "expected_face_value": "10", "issuer_face_value": None, "expires_at": None,
         "pattern_ok": True, "duplicate_of": None, "face_value_ok": True, "expiry_ok": True,
         "issuer_status": "active", "verdict": "valid"},
        {"t": 101.0, "type": "code_checked", "client_order_id": "nobody", "sku": "c",
         "mode": "burst", "code_hash": "h2", "serial_masked": "***2",
         "claimed_face_value": 10.5, "expected_face_value": "10", "issuer_face_value": "10",
         "expires_at": "2030-01-01T00:00:00+00:00", "pattern_ok": None,
         "duplicate_of": "this_run", "face_value_ok": False, "expiry_ok": True,
         "issuer_status": "unchecked", "verdict": "wrong_face_value"},
    ]
    w1 = [
        plan("b2", 100.0),  # same time as b1's plan in w0: w0 first
        {"t": 100.3, "type": "order_accepted", **k2, "supplier_order_id": "X2", "status": 201,
         "state": "submitted", "unit_price": "9.05", "amount": "9.05", "via": "post"},
        plan("b2", 100.3, intended_at=100.25),  # re-planned at the same time: starts over
        {"t": 100.35, "type": "order_attempt", **k2, "attempt": 1, "method": "POST",
         "purpose": "repost"},
        {"t": 100.36, "type": "order_error", **k2, "kind": "http_503", "status": 503,
         "phase": "place"},
        {"t": 100.8, "type": "order_accepted", **k2, "supplier_order_id": "X2b",
         "status": 201, "state": "submitted", "unit_price": "9.05", "amount": "9.05",
         "via": "post", "answered_at": 100.7},
        {"t": 100.9, "type": "order_final", **k2, "state": "failed", "last_state": "failed",
         "amount": "0", "unit_price": "9.05", "codes_delivered": 0, "delivered_at": None,
         "failure_reason": "out of stock", "delivered_seen_at": None,
         "within_deadline": False, "skipped": None},
        {"t": 110.0, "type": "order_resumed", **k2, "intended_at": 110.0, "posted_at": 100.35},
        {"t": 110.0, "type": "order_resumed", **k3, "intended_at": 110.0, "posted_at": None},
    ]
    return _write(tmp_path / "burst", {"events.jsonl": master, "events-w0.jsonl": w0,
                                       "events-w1.jsonl": w1})


def test_burst_ties_replans_and_odd_values_match(tmp_path: Path) -> None:
    """Equal times within and across shards, a burst re-plan, events before the burst or
    the plan, resumes with and without a POST, a redeemed sample, a code of an unplanned
    order and a supplier's odd values give the reference builder's tables in every
    builder."""
    run = _burst_log(tmp_path)
    _assert_same_tables(run)
    tables = build_tables(run)
    assert len(tables.timeline)  # the burst's timeline is not empty
    # an accepted order is timed by its answer's arrival (answered_at), not the line's t
    accepted = tables.orders.set_index("client_order_id")["accepted_at"]
    assert accepted["b1"].timestamp() == pytest.approx(100.35)


def test_logs_the_columnar_fold_cannot_read_fall_back(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A torn last line, money events not in the writer's compact layout, and a log beyond
    the columnar fold's size are refused by it and built by the streaming fold, equal to
    the reference."""
    torn = _burst_log(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(tables_columnar, "MAX_LOG_BYTES", 100)
        with pytest.raises(tables_columnar.Unsupported):
            tables_columnar.build(torn)
        _assert_same_tables(torn, columnar=False)
    with (torn / "events-w1.jsonl").open("a") as handle:
        handle.write('{"t": 130.0, "type": "order_fin')
    with pytest.raises(tables_columnar.Unsupported):
        tables_columnar.build(torn)
    _assert_same_tables(torn, columnar=False)

    spaced = tmp_path / "spaced"
    spaced.mkdir()
    (spaced / "manifest.json").write_text(json.dumps({"run_id": "spaced"}))
    (tmp_path / "plain").mkdir()
    for shard in _burst_log(tmp_path / "plain").glob("events*.jsonl"):
        events = [json.loads(line) for line in shard.read_text().splitlines()]
        (spaced / shard.name).write_text("".join(json.dumps(e) + "\n" for e in events))
    with pytest.raises(tables_columnar.Unsupported):
        tables_columnar.build(spaced)
    _assert_same_tables(spaced, columnar=False)


@pytest.mark.parametrize("finish", ["base", None, {}, {"interrupted": True},
                                    {"failed": "boom"}, {"interrupted": 0, "failed": ""}])
def test_the_columnar_fold_keeps_whether_the_run_finished(tmp_path: Path, finish: Any) -> None:
    """The columnar fold keeps the answer run_complete gives by reading the log (finished,
    resumed and never finished, interrupted or failed), so the first analysis does not
    read the log again."""
    run = _burst_log(tmp_path)  # it ends with burst_finished
    lines = [] if finish == "base" else [{"t": 130.0, "type": "burst_finished"},
                                         {"t": 130.0, "type": "run_resumed"}]
    if isinstance(finish, dict):  # the tie above is broken as run_complete breaks it
        lines.append({"t": 131.0, "type": "resume_finished", **finish})
    with (run / "events.jsonl").open("a") as handle:
        handle.writelines(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    stamp = run / COMPLETE_STAMP
    assert not stamp.exists()
    tables_columnar.build(run)
    kept = json.loads(stamp.read_text())
    stamp.unlink()
    assert kept["complete"] == run_complete(run)  # read from the log, as before the fold
    assert kept == json.loads(stamp.read_text())
    assert kept["complete"] is (finish == "base" or finish == {}
                                or (isinstance(finish, dict) and not any(finish.values())))


def test_epoch_times_with_ties_in_a_shard_match(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-written burst moved to epoch times (ties within and across shards) is put
    in log order by the key computed in the scan, with no sort, and gives the reference
    builder's tables; at its own small times it takes the sorting path."""
    sorted_logs: list[int] = []
    sort = tables_columnar._number_by_sorting
    monkeypatch.setattr(tables_columnar, "_number_by_sorting",
                        lambda *args: (sorted_logs.append(1), sort(*args)))
    (tmp_path / "plain").mkdir()
    plain = _burst_log(tmp_path / "plain")
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "manifest.json").write_text(json.dumps({"run_id": "moved"}))
    times = ("t", "intended_at", "started_at", "posted_at", "t0", "delivered_seen_at")
    for shard in plain.glob("events*.jsonl"):
        events = [json.loads(line) for line in shard.read_text().splitlines()]
        for event in events:
            event.update({k: event[k] + 1_790_000_000 for k in times
                          if isinstance(event.get(k), float | int)})
        (moved / shard.name).write_text(
            "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
    _assert_same_tables(moved)
    assert not sorted_logs
    tables_columnar.build(plain)
    assert sorted_logs == [1]


def test_stretches_that_no_longer_match_their_shard_are_not_read(
        real_runs: dict[str, Path], tmp_path: Path) -> None:
    """Stretches scanned ahead are read only while they match their shard: a shard replaced
    by another file or cut short, a stretch out of line with the one before, and a scan
    killed half-way (its temporary folder left) give the log's own tables, never the
    stale stretches'."""
    run = tmp_path / real_runs["burst"].name
    shutil.copytree(real_runs["burst"], run)
    tables_columnar.fold_ahead(run, min_bytes=1, max_bytes=65536)
    folded = run / tables_columnar.FOLD_DIR
    (folded / "trialbench-fold-killed").mkdir()
    (folded / "trialbench-fold-killed" / "part.jsonl").write_text("{")
    shard = run / "events-w0.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    chain, covered, counted = tables_columnar._segments(shard, folded)
    assert len(chain) > 2 and covered == shard.stat().st_size and counted == len(lines)
    # another file under the shard's name: every stretch of it is stale
    replaced = tmp_path / "replaced.jsonl"
    replaced.write_bytes(b"".join(lines[: len(lines) // 2]))
    replaced.replace(shard)
    assert tables_columnar._segments(shard, folded)[0] == []
    _assert_same_tables(run)
    # the same file cut short: the stretches past its end are stale
    tables_columnar.fold_ahead(run, min_bytes=1, max_bytes=16384)
    with shard.open("r+b") as handle:
        handle.truncate(len(b"".join(lines[: len(lines) // 4])))
    chain, covered, _ = tables_columnar._segments(shard, folded)
    assert chain and covered <= shard.stat().st_size
    _assert_same_tables(run)
    # a stretch that says it starts after more lines than the stretches before hold
    first = chain[0].name.split(".")
    first[5] = str(int(first[5]) + 1)
    chain[0].rename(folded / ".".join(first))
    assert tables_columnar._segments(shard, folded)[0] == []
    _assert_same_tables(run)


def test_a_hash_shared_by_two_orders_sends_the_log_to_the_streaming_fold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The columnar fold joins events to orders by a 64-bit hash of the order's key; were
    two keys ever to share one, it refuses the log (Unsupported) and build_tables gives
    the streaming fold's tables, equal to the reference: never one order's events on
    another."""
    run = _burst_log(tmp_path)
    scan = tables_columnar._scan
    monkeypatch.setattr(tables_columnar, "_scan", lambda *a, **k: scan(*a, **k).replace(
        "hash(ksup, kcid)", "hash(ksup)"))  # every order of a supplier shares one hash
    with pytest.raises(tables_columnar.Unsupported, match="share a hash"):
        tables_columnar.build(run)
    _assert_same_tables(run, columnar=False)


def test_the_build_reads_the_stretches_not_the_json_they_cover(
        real_runs: dict[str, Path], tmp_path: Path) -> None:
    """Once a shard is scanned ahead, the build takes those lines from the stretches: with
    the JSON under them overwritten in place (same size, same line ends: what no stretch
    check can see), the build still gives the log's tables, where a build of the same
    bytes not scanned ahead cannot read them."""
    run = tmp_path / real_runs["burst"].name
    shutil.copytree(real_runs["burst"], run)
    expected = tables_columnar.build(run)
    tables_columnar.fold_ahead(run, min_bytes=1, max_bytes=1 << 30)
    shard = run / "events-w0.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    bulk = [i for i, line in enumerate(lines) if b'"type":"order_attempt"' in line]
    for i in bulk:  # each attempt line: same length, still ending in a newline, not JSON
        lines[i] = b"#" * (len(lines[i]) - 1) + b"\n"
    with shard.open("r+b") as handle:  # in place: the same inode
        handle.write(b"".join(lines))
    assert len(bulk) > 100 and tables_columnar._segments(
        shard, run / tables_columnar.FOLD_DIR)[1] == shard.stat().st_size
    ahead = tables_columnar.build(run)
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(getattr(ahead, name), getattr(expected, name),
                                      check_exact=True, obj=name)
    shutil.rmtree(run / tables_columnar.FOLD_DIR)
    with pytest.raises(Exception):  # noqa: B017  DuckDB's own error for lines not JSON
        tables_columnar.build(run)


def test_a_timeline_beyond_the_later_budget_is_queried_again_with_more(
        real_runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """When the timeline's and the codes' queries run out of the small memory budget the
    fold gives them beside the Python work, they run again at the fold's own budget: the
    columnar fold still builds the reference's tables, never the slow streaming fold.
    (DuckDB running out is simulated: no budget makes a small log run out reliably.)"""
    import duckdb

    calls: list[int] = []
    timeline = tables_columnar._timeline

    def out_of_memory_once(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.OutOfMemoryException("could not allocate block")
        return timeline(*args)

    monkeypatch.setattr(tables_columnar, "_timeline", out_of_memory_once)
    new = tables_columnar.build(real_runs["burst"])
    assert len(calls) == 2
    old = _reference().build_tables(real_runs["burst"])
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(getattr(new, name), getattr(old, name), check_exact=True)


def test_a_later_budget_duckdb_cannot_shrink_to_is_left_as_it_was(
        real_runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A later budget smaller than what DuckDB holds (it refuses to shrink to 64 kB) leaves
    the fold's own budget in place, and the build goes on to the reference's tables."""
    monkeypatch.setattr(tables_columnar, "LATER_MEMORY_LIMIT", "64KB")
    new = tables_columnar.build(real_runs["burst"])
    old = _reference().build_tables(real_runs["burst"])
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(getattr(new, name), getattr(old, name), check_exact=True)


class _Scrambled:
    """A DuckDB connection whose query results come back in reverse order: DuckDB may give
    the rows of a query without ORDER BY in any order (at scale, its threads interleave
    them; a small log comes back in order by chance)."""

    def __init__(self, con: Any) -> None:
        self.con = con

    def sql(self, query: str) -> Any:
        import pyarrow as pa

        table = self.con.sql(query).to_arrow_table()
        reverse = pa.array(range(table.num_rows - 1, -1, -1), type=pa.int64())

        class Relation:
            def to_arrow_reader(self, rows: int) -> Any:
                return table.take(reverse).to_reader(rows)

        return Relation()


def test_the_fold_sorts_what_duckdb_returns_in_any_order(
        real_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The orders' rows, their errors and the code checks come out of DuckDB unsorted and are
    put in order by the fold itself: with every such result reversed, the tables are still
    the reference's (each order's counts and errors on its own row, the codes in log order)."""
    arrow = tables_columnar._arrow
    monkeypatch.setattr(tables_columnar, "_arrow",
                        lambda con, sql, *args, **kwargs: arrow(_Scrambled(con), sql, *args,
                                                                **kwargs))
    for run in (real_runs["burst"], real_runs["trial"], _burst_log(tmp_path)):
        new = tables_columnar.build(run)
        old = _reference().build_tables(run)
        for name in SCHEMAS:
            pd.testing.assert_frame_equal(getattr(new, name), getattr(old, name),
                                          check_exact=True, obj=f"{run.name} {name}")
    # b3's failed POSTs, a timeout then a 503: the last is its error_kind (errors in order)
    assert new.orders.set_index("client_order_id").loc["b3", "error_kind"] == "http_503"
