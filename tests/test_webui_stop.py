"""Live views that behave: STOP in Locust's web UI, and Ctrl-C, end a burst within its
grace period, every order followed to a final state or marked interrupted, and the exit
code says which; the web page says whose latencies it shows.

Each test runs ``trialbench burst`` in a subprocess (gevent stays out of pytest) on the
starter scenario with a longer hold, against the built-in simulator, on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
STOP_GRACE_S = 3.0  # harness.run.burst.STOP_GRACE_S (not imported: it imports Locust)
CLOSE_S = 6.0
"""After the grace: balance reads, the tables, the summary (measured about 1 s here)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scenario(tmp_path: Path, *, slow_supplier: bool) -> Path:
    text = (SCENARIOS / "starter.yaml").read_text(encoding="utf-8")
    text = text.replace("from_rate_per_s: 2,", "from_rate_per_s: 10,")  # orders at once
    text = text.replace("- {name: hold, duration_s: 5}", "- {name: hold, duration_s: 40}")
    text = text.replace("spending_cap: 6000 ", "spending_cap: 60000")
    if slow_supplier:  # slowpoke delivers in 2.5 s (median) or 14 s: some outlast the grace
        text = text.replace("acme", "slowpoke").replace("ACME", "SLOWPOKE")
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _start(tmp_path: Path, scenario: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALBENCH_")}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "burst", str(scenario), "--simulate",
         str(SCENARIOS / "fleet-demo.yaml"), "--results", str(tmp_path / "results"),
         "--no-live", "--web-ui", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_orders(client: httpx.Client, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Poll the page until the trialbench tab shows orders sent; return its stats."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            stats: dict[str, Any] = client.get("/stats/requests").json()
        except httpx.HTTPError:
            time.sleep(0.25)
            continue
        rows = stats["extended_stats"][0]["data"]
        if sum(int(row["sent_due"].split("/")[0]) for row in rows) >= 4:
            return stats
        time.sleep(0.25)
    raise AssertionError("no orders sent within 60 s")


def _finish(proc: subprocess.Popen[str], asked_at: float) -> tuple[int, float, str]:
    output, _ = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - asked_at, output


def _run_folder(tmp_path: Path) -> Path:
    runs = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def _unsettled(run: Path) -> int:
    planned, final = set(), set()
    for shard in run.glob("events*.jsonl"):
        for line in shard.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event["type"] == "order_planned":
                planned.add(event["client_order_id"])
            elif event["type"] == "order_final" and not event.get("interrupted"):
                final.add(event["client_order_id"])
    return len(planned - final)


@dataclass
class Stopped:
    """One burst stopped mid-run: how, its exit code, seconds from the stop to its exit,
    its output, its run folder, and what the web page showed before the stop."""

    how: str
    code: int
    took_s: float
    output: str
    run: Path
    page: str
    stats: dict[str, Any]


def _stop_a_burst(base: Path, how: str) -> Stopped:
    """Start a burst (acme and shady for STOP; slowpoke, whose orders outlast the grace,
    for Ctrl-C), wait until orders are out, stop it the given way, wait for its exit."""
    folder = base / how
    folder.mkdir()
    port = _free_port()
    proc = _start(folder, _scenario(folder, slow_supplier=how == "ctrl-c"), port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5,
                          trust_env=False) as client:
            stats = _wait_for_orders(client, proc)
            page = client.get("/").text
            asked_at = time.monotonic()
            if how == "stop":
                assert client.post("/stop").json()["success"] is True
            else:
                proc.send_signal(signal.SIGINT)
        code, took, output = _finish(proc, asked_at)
    finally:
        proc.kill()
    return Stopped(how, code, took, output, _run_folder(folder), page, stats)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Stopped]:
    """Both bursts at once (each mostly waits for its start-up), stopped each its way."""
    base = tmp_path_factory.mktemp("stops")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {how: pool.submit(_stop_a_burst, base, how) for how in ("stop", "ctrl-c")}
        return {how: future.result(timeout=150) for how, future in futures.items()}


@pytest.mark.slow
def test_web_ui_stop_ends_the_burst_within_its_grace(stopped: dict[str, Stopped]) -> None:
    """STOP on Locust's page ends a burst in its grace period; the page carries the notice
    and the from-intended-start tab; every order is final, so the exit code is 0."""
    done = stopped["stop"]
    assert "measured from the moment each request was actually sent" in done.page
    assert "intended start" in done.page and "TRIALBENCH tab" in done.page
    assert {row["supplier"] for row in done.stats["extended_stats"][0]["data"]} == \
        {"acme", "shady"}
    assert done.took_s < STOP_GRACE_S + CLOSE_S, f"STOP to exit took {done.took_s:.1f} s"
    assert done.code == 0, done.output
    assert "stopped by web UI STOP: every order sent reached a final state" in done.output
    manifest = json.loads((done.run / "manifest.json").read_text())
    assert manifest["stopped"]["by"] == "web UI STOP"
    assert manifest["stopped"]["unsettled_orders"] == 0 == _unsettled(done.run)
    assert not manifest["interrupted"]
    assert (done.run / "report.md").is_file() and (done.run / "summary.csv").is_file()


@pytest.mark.slow
def test_ctrl_c_marks_orders_in_flight_interrupted_and_exits_130(
        stopped: dict[str, Stopped]) -> None:
    """Ctrl-C ends the burst within its grace too; orders still in flight after it are
    marked interrupted, which the exit code (130) and the manifest say."""
    done = stopped["ctrl-c"]
    assert done.took_s < STOP_GRACE_S + CLOSE_S, f"Ctrl-C to exit took {done.took_s:.1f} s"
    manifest = json.loads((done.run / "manifest.json").read_text())
    unsettled = _unsettled(done.run)
    assert manifest["stopped"]["by"] == "Ctrl-C"
    assert manifest["stopped"]["unsettled_orders"] == unsettled > 0
    assert done.code == 130 and manifest["interrupted"], done.output
    assert "marked interrupted" in done.output


def test_trial_live_view_shows_elapsed_time_and_eta() -> None:
    """The trial's live table says how long it has run and, from the pace so far, how
    long the orders have left; before any order ends it says so instead of guessing."""
    from rich.console import Console

    from harness.progress import TrialProgress, eta_text

    assert eta_text(12.0, 40, 120).startswith("elapsed 12 s · orders final 40/120 · about 24 s")
    assert "known once the first orders end" in eta_text(3.0, 0, 120)
    assert "following refunds" in eta_text(30.0, 120, 120)
    console = Console(width=200, record=True)
    progress = TrialProgress(["acme", "shady"], 10, enabled=False, console=console)
    progress.started -= 10.0
    for _ in range(4):
        progress.count("acme", "planned")
        progress.count("acme", "success")
    progress.count("shady", "skipped")
    console.print(progress.table())
    text = console.export_text()
    assert "elapsed 10 s · orders final 5/20 · about 30 s left" in text
