"""Exit codes: a run that could not do its job is 3, not 0 (see ``trialbench --help``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import FAILED, _run_exit
from harness.events import format_event


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_trial_with_no_supplier_reachable_exits_3_and_keeps_its_run_folder(
        tmp_path: Path) -> None:
    """A trial whose only supplier refuses connections exits 3, says why, and leaves a
    complete run folder with every failed order recorded."""
    scenario = tmp_path / "dead.yaml"
    scenario.write_text(f"""name: dead
suppliers:
  - name: gone
    base_url: http://127.0.0.1:{closed_port()}/suppliers/gone
    credentials: {{api_key: "${{TB_DEAD_KEY}}", secret: "${{TB_DEAD_SECRET}}"}}
    products: [{{sku: card-10, kind: card, face_value: "10.00", sale_price: "10.00"}}]
trial:
  orders_per_supplier: 2
  concurrency: 2
  deadline_s: 1
  delivery: poll
  request_timeout_s: 1
  unknown_outcome_window_s: 0.5
  spending_cap: 100
""")
    done = subprocess.run([sys.executable, "-m", "harness", "trial", str(scenario),
                           "--results", str(tmp_path / "r"), "--no-progress"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "TB_DEAD_KEY": "k", "TB_DEAD_SECRET": "s"})
    assert done.returncode == 3, done.stderr
    assert "no supplier accepted any of 2 orders" in done.stderr
    (run_dir,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    assert (run_dir / "orders.parquet").exists()


def test_help_lists_the_exit_codes() -> None:
    """``trialbench --help`` documents every exit code."""
    done = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True,
                          text=True, timeout=60, check=True)
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"\n  {code}" in done.stdout


def _finished_run(root: Path, name: str, events: list[tuple[str, dict[str, object]]]) -> Path:
    """A hand-written finished trial folder: a manifest and these events between its start
    and finish."""
    run = root / name
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run_id": name, "mode": "trial"}))
    lines = [format_event("trial_started", {"t": 1.0})]
    lines += [format_event(kind, {"t": 2.0, **fields}) for kind, fields in events]
    lines.append(format_event("trial_finished", {"t": 3.0}))
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_run_that_sent_nothing_says_why_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finished run that recorded no order, or whose every order the cap blocked, exits 3
    with a line that tells the two apart and says where to look."""
    empty = _finished_run(tmp_path, "empty", [])
    order = {"supplier": "acme", "client_order_id": "o-1"}
    blocked = _finished_run(tmp_path, "blocked", [
        ("order_planned", {**order, "mode": "trial", "sku": "x", "quantity": 1,
                           "intended_at": 2.0}),
        ("spend_blocked", {**order, "needed": "10.00", "committed": "0", "cap": "5"}),
        ("order_final", {**order, "state": "skipped", "accepted": False})])
    assert _run_exit(empty) == FAILED
    assert "no order was planned or recorded" in capsys.readouterr().err
    assert _run_exit(blocked) == FAILED
    assert "the spending cap allowed none of 1" in capsys.readouterr().err
