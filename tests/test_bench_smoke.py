"""Smoke runs of the benchmarks in bench/ (tiny sizes, seconds), so they cannot rot:
``make bench`` runs the same code at full size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BENCH = ROOT / "bench"


def test_table_and_bootstrap_benchmarks_run_and_agree() -> None:
    """The tables benchmark builds a tiny synthetic burst with the new and the old builder,
    and the larger one with and without its log scanned ahead as it was written (and ranks
    it), the bootstrap benchmark finds the vectorised p95 identical to the loop, and the
    runner prints its one table."""
    done = subprocess.run([sys.executable, str(BENCH / "run_bench.py"), "--smoke", "--parts",
                           "tables,bootstrap"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout
    assert table.startswith("| figure")
    assert "build tables, 2,000 orders" in table and "old builder, 500 orders" in table
    assert "not scanned ahead)" in table and "(scanned ahead during the run" in table
    assert "FAILED" not in table, table
    assert "identical" in table


def test_split_write_latency_benchmark_runs() -> None:
    """The split-write latency benchmark measures a bare client and Locust's client against
    the stalling server and reports a p50 near the server's 50 ms for both (quick ACKs)."""
    done = subprocess.run([sys.executable, str(BENCH / "latency_parity.py"), "--n", "5",
                           "--clients", "bare,fast1", "--acks", "quick", "--servers", "split",
                           "--spacings", "20"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {row["client"] for row in rows} == {"bare", "fast1"}
    for row in rows:
        assert "error" not in row, row
        assert 45 <= row["p50_ms"] <= 90, row


@pytest.mark.serial  # a burst whose latencies are compared: run alone
def test_stall_benchmark_runs_without_slips_or_omission() -> None:
    """A burst through a supplier frozen for 1 s (the scenario's stall_cover_s) sends every
    order on time (no schedule_slip) and its p99 from the intended start is the true one."""
    done = subprocess.run([sys.executable, str(BENCH / "stall_bench.py"), "--smoke"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["part"]: row for row in map(json.loads, done.stdout.splitlines())}
    burst = rows["trialbench"]
    assert burst["orders"] == burst["accepted"] == 60, burst
    assert burst["slips"] == 0, burst
    assert burst["ref_p99_ms"] > 900  # the stall is in the reference's tail
    assert -0.02 <= burst["p99_error_vs_truth"] <= 0.10, burst
    assert -0.02 <= burst["p99_error"] <= 0.10, burst


@pytest.mark.serial  # two short bursts whose schedule lateness is measured: run alone
def test_capacity_benchmark_measures_both_on_one_schedule() -> None:
    """At 20 orders/s for 2 s, trialbench (lateness from its event log) and plain Locust
    (the same schedule and HTTP work) both send all 40 orders, each with its lateness,
    its CPU per order and the simulator's share measured."""
    done = subprocess.run([sys.executable, str(BENCH / "burst_capacity.py"), "--runs",
                           "tb1,plain1", "--at", "20", "--duration-s", "2", "--startup-s", "8"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    steps = {row["run"]: row for row in rows if "run" in row}
    for name in ("tb1", "plain1"):
        step = steps[name]
        assert step["due"] == step["sent"] == 40, step
        assert 0 <= step["late"] <= 40 and step["p99_late_ms"] is not None, step
        assert step["worker_cpu_ms_per_order"] > 0 and step["sim_cores"] > 0, step
    assert steps["plain1"]["requests"] >= 3 * 40 and steps["plain1"]["failures"] == 0
    assert set(rows[-1]["summary"]["held"]) == {"tb1", "plain1"}


def test_build_phases_benchmark_names_each_phase(tmp_path: Path) -> None:
    """The build's phase probe runs the real build and write on a small synthetic burst and
    reports every phase of the columnar fold with its peak memory, and the whole build."""
    run = tmp_path / "run"
    subprocess.run([sys.executable, str(BENCH / "synth_run.py"), "--orders", "2000",
                    "--suppliers", "3", "--out", str(run)], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, str(BENCH / "build_phases.py"), str(run)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    phases = {row["phase"] for row in rows}
    assert {"_fetch", "_order_rows", "_timeline", "_code_rows", "_orders", "_codes",
            "write_tables"} <= phases
    assert all(row["peak_mb"] > 50 for row in rows if "peak_mb" in row)
    assert rows[-1]["phase"] == "whole" and rows[-1]["orders"] == 2000
    assert (run / "orders.parquet").exists()
