"""The child that scans a burst's log ahead (harness.run.scan_ahead): it scans a growing log
as it is written, and it ends when the burst closes it or when the burst's process dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from harness import tables_columnar
from harness.run import scan_ahead
from harness.run.scan_ahead import ScanAhead

REAL_RUNS = Path(__file__).parent / "data" / "runs" / "real-runs.tar.gz"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_it_scans_the_log_as_it_grows_and_ends_when_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log written in steps while the child runs is scanned in stretches that the build
    reads, and closing the child ends it at once, quietly."""
    with tarfile.open(REAL_RUNS) as archive:
        archive.extractall(tmp_path / "real", filter="data")
    lines = (tmp_path / "real" / "burst" / "events-w0.jsonl").read_bytes().splitlines(
        keepends=True)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv(scan_ahead.BYTES_ENV, "4096")
    monkeypatch.setenv(scan_ahead.PERIOD_ENV, "0.1")
    child = ScanAhead(run)
    try:
        with (run / "events-w0.jsonl").open("ab") as log:
            for start in range(0, len(lines), 100):
                log.writelines(lines[start:start + 100])
                log.flush()
                time.sleep(0.05)
        deadline = time.monotonic() + 30
        shard = run / "events-w0.jsonl"
        while tables_columnar._segments(shard, run / tables_columnar.FOLD_DIR)[1] \
                < shard.stat().st_size - 4096 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        started = time.monotonic()
        said = child.close()
    assert time.monotonic() - started < 10 and said == ""
    assert not _alive(child.pid)
    chain, covered, _ = tables_columnar._segments(shard, run / tables_columnar.FOLD_DIR)
    assert len(chain) > 1 and covered >= shard.stat().st_size - 4096


def test_it_ends_by_itself_when_the_burst_process_is_killed(tmp_path: Path) -> None:
    """kill -9 of the process that started the child closes the child's stdin, and the
    child ends within its period: nothing is left scanning for a burst that is gone."""
    code = ("import sys, time; from pathlib import Path\n"
            "from harness.run.scan_ahead import ScanAhead\n"
            f"child = ScanAhead(Path({str(tmp_path)!r}))\n"
            "print(child.pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              env={**os.environ, scan_ahead.PERIOD_ENV: "0.2"})
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        parent.kill()
        parent.communicate()
