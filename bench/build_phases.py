"""Peak RSS and time of each phase of the table build (``build_tables`` then
``write_tables``) on one run folder: where the build's memory goes.

    .venv/bin/python bench/synth_run.py --orders 1000000 --suppliers 10 --out /tmp/run1m
    .venv/bin/python bench/build_phases.py /tmp/run1m

A thread samples the process's RSS every 10 ms; each phase is a function of
``harness.tables_columnar`` or ``harness.results``, wrapped to name the phase while it
runs (a name with ``'`` is the time after that function returned, before the next).
Prints one JSON line per phase (``phase``, ``peak_mb``, ``end_mb``, ``s``: its time) and a
last line with the whole build's time and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil  # Locust's dependency, as in burst_memory.py

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

PHASES = {"harness.tables_columnar": ("_fetch", "_order_rows", "_later", "_timeline",
                                      "_code_rows", "_orders", "_codes"),
          "harness.results": ("_assemble",)}


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


class Phases:
    """The RSS peak and end of each named phase, from a sampling thread."""

    def __init__(self) -> None:
        self.now = "imports"
        self.order: list[str] = []
        self.peak: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._sample, daemon=True).start()

    def _record(self, phase: str) -> None:
        """The RSS now, as a sample of ``phase``."""
        rss = _rss_mb()
        with self.lock:
            if phase not in self.peak:
                self.order.append(phase)
                self.peak[phase] = rss
            self.peak[phase] = max(self.peak[phase], rss)
            self.end[phase] = rss

    def _sample(self) -> None:
        while True:
            self._record(self.now)
            time.sleep(0.01)

    def wrap(self, module: Any, name: str) -> None:
        inner: Callable[..., Any] = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            before, self.now = self.now, name
            self._record(name)  # a phase shorter than the sampling's 10 ms is still named
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
                self._record(name)
                self.now = before.rstrip("'") + "'"

        setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (events*.jsonl, manifest.json)")
    args = parser.parse_args()
    phases = Phases()
    started = time.perf_counter()
    import importlib

    from harness import results
    for module_name, names in PHASES.items():
        module = importlib.import_module(module_name)
        for name in names:
            phases.wrap(module, name)
    phases.wrap(results, "build_tables")
    phases.wrap(results, "write_tables")
    tables = results.build_tables(args.run)
    results.write_tables(args.run, tables)
    time.sleep(0.05)
    for phase in phases.order:
        print(json.dumps({"phase": phase, "peak_mb": round(phases.peak[phase]),
                          "end_mb": round(phases.end[phase]),
                          "s": round(phases.seconds.get(phase, 0.0), 2)}))
    print(json.dumps({"phase": "whole", "s": round(time.perf_counter() - started, 2),
                      "orders": len(tables.orders),
                      "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                      / 1024)}))


if __name__ == "__main__":
    main()
