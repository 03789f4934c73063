"""Scanning the log ahead during a burst, so the table build at its end reads little JSON.

A burst of a million orders writes about 2 GB of event log, and scanning that JSON was
most of the table build's time when the burst ended. While the burst runs, a child process
(niced, one thread) scans each shard's new whole lines into Parquet stretches with
:func:`harness.tables_columnar.fold_ahead`; the build then reads those and scans only what
was written since. The stretches are a cache of the log, never the record: the log stays
the only truth, and a stretch that no longer matches its shard is ignored.

The child ends when its stdin closes: when the burst ends (:meth:`ScanAhead.close`), or
when the master dies and the kernel closes the pipe for it.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

STRETCH_BYTES = 16 << 20
"""A shard is scanned once it has this much new log (in stretches of up to 4 times it)."""
PERIOD_S = 10.0
"""How often the child looks for new log."""
BYTES_ENV, PERIOD_ENV = "TRIALBENCH_SCAN_AHEAD_BYTES", "TRIALBENCH_SCAN_AHEAD_EVERY_S"
"""Override :data:`STRETCH_BYTES` and :data:`PERIOD_S` (tests scan a few kB every fraction
of a second)."""
NICENESS = 10
"""The child yields the CPU to the burst's workers and the master."""


class ScanAhead:
    """The child process scanning ``run_dir``'s log ahead; :meth:`close` ends it."""

    def __init__(self, run_dir: Path) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "harness.run.scan_ahead", str(run_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self._child.pid

    def close(self, timeout_s: float = 30.0) -> str:
        """Stop scanning (a stretch being written is finished first, within ``timeout_s``;
        else the child is killed and its half-written stretch ignored); what it printed."""
        try:
            _, err = self._child.communicate(timeout=timeout_s)  # closes its stdin first
        except subprocess.TimeoutExpired:
            self._child.kill()
            _, err = self._child.communicate()
        return err.decode(errors="replace")


def _stdin_closed(timeout_s: float) -> bool:
    readable, _, _ = select.select([sys.stdin.fileno()], [], [], timeout_s)
    return bool(readable) and not os.read(sys.stdin.fileno(), 4096)


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0])
    min_bytes = int(os.environ.get(BYTES_ENV) or STRETCH_BYTES)
    period_s = float(os.environ.get(PERIOD_ENV) or PERIOD_S)
    os.nice(NICENESS)
    # DuckDB and pandas (a second of CPU) are imported once there is log to scan
    ready = False
    while True:
        started = time.monotonic()
        try:
            ready = ready or any(shard.stat().st_size >= min_bytes
                                 for shard in run_dir.glob("events*.jsonl"))
            if ready:
                from harness.tables_columnar import fold_ahead

                fold_ahead(run_dir, min_bytes=min_bytes, stop=lambda: _stdin_closed(0))
        except Exception as error:  # the build scans what was not scanned ahead
            print(f"scanning the log ahead stopped: {error!r}", file=sys.stderr)
            return 1
        if _stdin_closed(max(0.0, period_s - (time.monotonic() - started))):
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
