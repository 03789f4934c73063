"""``make bench``: every benchmark of issue 13 in one run, printed as ONE table of figures
with their targets and ratios (measured side by side: absolute figures on a shared
2-core machine are noisy, ratios much less so).

    .venv/bin/python bench/run_bench.py              # the full run (about 12 minutes)
    .venv/bin/python bench/run_bench.py --smoke      # seconds, tiny sizes (tests use it)

Parts (each also runnable alone, see bench/README.md):

- tables: a synthetic burst log (``bench/synth_run.py``) of ``--small`` and ``--large``
  orders over 10 suppliers, each scanned ahead while it is written, as a burst's child
  does (``harness.run.scan_ahead``); the builder (``harness.results.build_tables``: the
  columnar fold, ``harness.tables_columnar``) on each, and on the small one (with
  ``--cold`` the large one too) as if not scanned ahead; with ``--old`` the builder before
  issue 13 (``bench/tables_reference.py``) and with ``--fallback`` the streaming fold the
  builder falls back to (``build_tables_streaming``) on the small log; each in its own
  process, wall time and peak RSS; then ``trialbench rank`` and ``trialbench report`` on
  the large run;
- bootstrap: the latency-growth p95 of 4,000 block draws (222 blocks, 33,000 orders: one
  third of one supplier at 1M orders / 10 suppliers), per-draw loop against the
  vectorised bisection (same picks, same answers);
- burst: ``bench/burst_memory.py`` (trialbench burst against plain Locust, same rate,
  same simulator, one after the other): RSS growth per order and CPU per order; then
  ``bench/burst_capacity.py``: orders/s held on schedule by 1 and 2 trialbench workers and
  by plain Locust doing the same HTTP work per order;
- latency: ``bench/latency_50ms.py`` (a fixed 50 ms endpoint: bare keep-alive client,
  trial, burst), ``bench/stall_bench.py`` (a supplier frozen for 2 s mid-burst: trialbench's
  p99 against the true latency from the intended start, plain Locust beside it) and
  ``bench/latency_parity.py`` (a split-write server without TCP_NODELAY, as Python's
  http.server, against one that writes once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent
PY = sys.executable

_CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {bench!r})
run = Path(sys.argv[1])
cold = sys.argv[2] == "cold" and (run / ".fold").is_dir()
if cold:  # the build of a log not scanned ahead
    (run / ".fold").rename(run / ".fold-aside")
started = time.perf_counter()
if sys.argv[2] == "old":
    import tables_reference as builder
    tables = builder.build_tables(run)
else:
    from harness import results
    build = results.build_tables_streaming if sys.argv[2] == "stream" else results.build_tables
    tables = build(run)
    results.write_tables(run, tables)
if cold:
    (run / ".fold-aside").rename(run / ".fold")
print(json.dumps({{"s": time.perf_counter() - started, "orders": len(tables.orders),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _timed(cmd: list[str], timeout: float = 900) -> dict[str, Any]:
    """Run ``cmd``; its wall seconds, exit code and output."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return {"s": time.perf_counter() - started, "rc": proc.returncode,
            "out": out.decode(errors="replace"), "err": err.decode(errors="replace")}


def _peak_rss(cmd: list[str], timeout: float = 900) -> dict[str, Any]:
    """Run ``cmd`` under /usr/bin/time -v when there is one, for the child's peak RSS."""
    gnu_time = Path("/usr/bin/time")
    if not gnu_time.exists():
        return {**_timed(cmd, timeout), "rss_mb": float("nan")}
    done = _timed([str(gnu_time), "-v", *cmd], timeout)
    rss = float("nan")
    for line in done["err"].splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.rsplit(":", 1)[1]) / 1024
    return {**done, "rss_mb": rss}


def _json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class Table:
    """The one table of figures: name, measured, target, ratio, command."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, name: str, value: str, target: str = "", ratio: str = "") -> None:
        self.rows.append((name, value, target, ratio))
        print(f"  {name}: {value}" + (f"  (target {target})" if target else "")
              + (f"  [{ratio}]" if ratio else ""), file=sys.stderr, flush=True)

    def render(self) -> str:
        head = ("figure", "measured", "target", "ratio / verdict")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]
        lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
                 "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
                  for r in self.rows]
        return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def bench_tables(table: Table, tmp: Path, small: int, large: int, old: bool,
                 commands: tuple[str, ...] = ("rank", "report"), fallback: bool = True,
                 cold_large: bool = False) -> None:
    from harness.run.scan_ahead import STRETCH_BYTES

    child = _CHILD.format(bench=str(HERE))
    results: dict[int, dict[str, Any]] = {}
    for orders in dict.fromkeys((small, large)):
        # the log written while it is scanned ahead, as during a burst
        run, cpu_s = _write_scanning_ahead(tmp / f"run-{orders}", orders,
                                           STRETCH_BYTES if orders >= 100_000 else 16384)
        size_mb = sum(p.stat().st_size for p in run.glob("events*.jsonl")) / 1e6
        tail_mb = sum(p.stat().st_size - _covered(p) for p in run.glob("events*.jsonl")) / 1e6
        cold: list[dict[str, Any]] = []
        if orders == small or cold_large:  # the same log, not scanned ahead
            cold = _json_lines(_timed([PY, "-c", child, str(run), "cold"])["out"])
            if cold:
                table.add(f"build tables, {orders:,} orders ({size_mb:,.0f} MB log, not "
                          "scanned ahead)", f"{cold[-1]['s']:.1f} s, "
                          f"{cold[-1]['rss_mb']:,.0f} MB")
        done = _timed([PY, "-c", child, str(run), "new"])
        rows = _json_lines(done["out"])
        if done["rc"] != 0 or not rows:
            table.add(f"build tables, {orders:,} orders", f"FAILED: {done['err'][-200:]}")
            continue
        results[orders] = rows[-1]
        big = orders >= 1_000_000
        table.add(f"build tables, {orders:,} orders (scanned ahead during the run; "
                  f"{tail_mb:,.1f} MB written since)",
                  f"{rows[-1]['s']:.1f} s, {rows[-1]['rss_mb']:,.0f} MB",
                  "≤ 30 s, ≤ 1,024 MB" if big else "",
                  "; ".join(([_verdict(rows[-1]["s"] <= 30 and rows[-1]["rss_mb"] <= 1024)]
                             if big else [])
                            + ([f"not scanned ahead / scanned {cold[-1]['s'] / rows[-1]['s']:.2f}"]
                               if cold else [])))
        if orders == large:
            hours = orders / 300 / 3600  # the synthetic run's length at its 300 orders/s
            table.add("scanning the log ahead while it was written (1 thread)",
                      f"{cpu_s:.1f} s CPU", "", f"{cpu_s / (hours * 3600):.1%} of one core "
                      f"over the run ({hours:.2f} h at 300 orders/s)")
        base = (cold or rows)[-1]  # the old and the streaming builders read the JSON
        if fallback and orders == small:  # the streaming fold (the fallback), same log
            stream = _json_lines(_timed([PY, "-c", child, str(run), "stream"])["out"])
            if stream:
                table.add(f"streaming fold (fallback), {orders:,} orders (same log)",
                          f"{stream[-1]['s']:.1f} s, {stream[-1]['rss_mb']:,.0f} MB", "",
                          f"columnar/streaming time {base['s'] / stream[-1]['s']:.2f}")
        if old and orders == small:
            ref = _timed([PY, "-c", child, str(run), "old"])
            ref_rows = _json_lines(ref["out"])
            if ref_rows:
                table.add(f"old builder, {orders:,} orders (same log)",
                          f"{ref_rows[-1]['s']:.1f} s, {ref_rows[-1]['rss_mb']:,.0f} MB", "",
                          f"new/old time {base['s'] / ref_rows[-1]['s']:.2f}, "
                          f"RSS {base['rss_mb'] / ref_rows[-1]['rss_mb']:.2f}")
    if small in results and large in results and large > small:
        per = [results[n]["s"] / n for n in (small, large)]
        table.add(f"build scaling {small:,} → {large:,} (both scanned ahead)",
                  f"{per[1] / per[0]:.2f} × time per order", "≤ 1 (linear or better)",
                  _verdict(per[1] / per[0] <= 1.1))
    if large in results:
        run = tmp / f"run-{large}"
        trialbench = str(Path(PY).parent / "trialbench")
        # the first analysis after the build: the columnar build kept whether the run
        # finished (harness.events.run_complete), so no analysis reads the log again
        for command, when, target, limit_s in (
                ("rank", " (first analysis after the build)", "≤ 10 s, ≤ 2,048 MB", 10.0),
                ("rank", " (again)", "≤ 10 s, ≤ 2,048 MB", 10.0),
                ("report", "", "≤ 15 s", 15.0)):
            if command not in commands:
                continue
            args = [trialbench, command, str(run)]
            if command == "report":
                args += ["--out", str(tmp / "report.html")] if _has_flag("report", "--out") \
                    else []
            done = _peak_rss(args)
            if done["rc"] != 0:
                table.add(f"{command}, {large:,} orders{when}",
                          f"FAILED (exit {done['rc']}): "
                          + done["err"].strip().splitlines()[-1][:120] if done["err"].strip()
                          else "FAILED", target)
                continue
            ok = done["s"] <= limit_s and (command != "rank" or done["rss_mb"] <= 2048)
            table.add(f"{command}, {large:,} orders{when}", f"{done['s']:.1f} s, "
                      f"{done['rss_mb']:,.0f} MB", target, _verdict(ok))


def _write_scanning_ahead(out: Path, orders: int, min_bytes: int) -> tuple[Path, float]:
    """``synth_run.write_run`` while a thread scans the log ahead as a burst's child does
    (``tables_columnar.fold_ahead``, ``min_bytes`` at a time); the run and the thread's CPU
    seconds."""
    import threading

    from synth_run import write_run

    from harness.tables_columnar import fold_ahead

    done = threading.Event()
    cpu = [0.0]

    # the writing here is far faster than a burst's (300 orders/s: 0.7 MB/s), which the
    # child keeps up with: at the end, catch up, leaving what a burst's end can leave at
    # most: just under a stretch per shard (plus what the last 10 s wrote, ~7 MB at 300/s)
    def scan() -> None:
        while not done.wait(1.0):
            if out.is_dir():
                fold_ahead(out, min_bytes=min_bytes, keep_bytes=min_bytes - 1)
        fold_ahead(out, min_bytes=1, max_bytes=4 * min_bytes, keep_bytes=min_bytes - 1)
        cpu[0] = time.thread_time()

    scanner = threading.Thread(target=scan)
    scanner.start()
    try:
        run = write_run(out, orders, 10, 2)
    finally:
        done.set()
        scanner.join()
    return run, cpu[0]


def _covered(shard: Path) -> int:
    from harness.tables_columnar import FOLD_DIR, _segments

    return _segments(shard, shard.parent / FOLD_DIR)[1]


def _has_flag(command: str, flag: str) -> bool:
    trialbench = str(Path(PY).parent / "trialbench")
    done = subprocess.run([trialbench, command, "--help"], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    return flag in done.stdout


def bench_bootstrap(table: Table, smoke: bool) -> None:
    import numpy as np

    from harness.ranking import _p95_of_block_draws

    rng = np.random.default_rng(1)
    n_blocks, per_block, draws = (20, 30, 200) if smoke else (222, 150, 4000)
    blocks = [rng.lognormal(3, 1, per_block) for _ in range(n_blocks)]
    picks = rng.integers(0, n_blocks, (draws, n_blocks))
    started = time.perf_counter()
    looped = np.array([np.percentile(np.concatenate([blocks[i] for i in row]), 95)
                       for row in picks])
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    fast = _p95_of_block_draws(blocks, picks)
    fast_s = time.perf_counter() - started
    same = bool(np.array_equal(looped, fast))
    table.add(f"latency-growth bootstrap, {draws:,} draws × {n_blocks * per_block:,} orders",
              f"{fast_s:.2f} s (loop {loop_s:.2f} s)", "same answers",
              f"{loop_s / fast_s:.0f}× faster, {'identical' if same else 'DIFFERENT'}")


def bench_burst(table: Table, smoke: bool) -> None:
    # 150/s: the second half holds ~4,000 orders, enough that the allocator's steps (a few
    # hundred KB) do not read as growth per order; one worker holds twice that rate
    rate, duration = (20, 10) if smoke else (150, 80)
    warmup = 3 if smoke else 25
    done = _timed([PY, str(HERE / "burst_memory.py"), "--rate", str(rate), "--duration-s",
                   str(duration), "--workers", "1", "--sample-s", "2" if smoke else "5",
                   "--warmup-s", str(warmup)], timeout=duration * 2 + 300)
    rows = {r["run"]: r for r in _json_lines(done["out"]) if "run" in r}
    if "trialbench" not in rows or "plain-locust" not in rows:
        table.add("burst memory and CPU", f"FAILED: {done['err'][-200:]}")
        return
    for name, row in rows.items():
        orders = row["orders"]
        for role in ("workers", "master"):
            grow = row[role]["kb_per_1000_orders_second_half"]
            table.add(f"{name}: {role} RSS growth, 2nd half ({orders[0]:,}→{orders[1]:,} "
                      f"orders)", f"{grow:.0f} B/order" if grow == grow else "n/a",
                      "< 50 B/order" if name == "trialbench" else "",
                      _verdict(grow < 50) if name == "trialbench" and grow == grow else "")
    scan = rows["trialbench"].get("scan_ahead_rss_mb_first_peak")
    if scan:
        table.add("trialbench: the scan-ahead child's RSS, first sample / peak",
                  f"{scan[0]:,.0f} / {scan[1]:,.0f} MB", "", "the same at any run length "
                  "(a stretch at a time)")
    tb, plain = rows["trialbench"].get("cpu_ms_per_order"), \
        rows["plain-locust"].get("cpu_ms_per_order")
    if tb and plain:
        # not the same work: trialbench also receives 2 callbacks, polls and checks every
        # code; the like-for-like comparison (same HTTP work per order) is bench_capacity's
        table.add(f"CPU per order at {rate}/s, 1 worker (master + worker + scan-ahead; "
                  "plain Locust: 1 POST + 1 GET, less work)",
                  f"trialbench {tb:.2f} ms, plain Locust {plain:.2f} ms", "",
                  f"plain/trialbench {plain / tb:.2f}")
    bench_capacity(table, smoke)


def bench_capacity(table: Table, smoke: bool) -> None:
    """``bench/burst_capacity.py``: orders/s held on schedule, trialbench (1 and 2 workers)
    against plain Locust doing the same HTTP work per order, same simulator, one run."""
    args = ["--runs", "tb1,plain1", "--at", "20", "--duration-s", "2"] if smoke else \
        ["--runs", "tb1,plain1,tb2", "--duration-s", "5", "--start", "200", "--factor", "1.5",
         "--refine", "1", "--max-rate", "3200"]  # about 15 runs of ~20 s; steps of ±~10%
    done = _timed([PY, str(HERE / "burst_capacity.py"), *args], timeout=1200)
    lines = _json_lines(done["out"])
    summary = next((r["summary"] for r in lines if "summary" in r), None)
    if summary is None:
        table.add("burst capacity", f"FAILED: {done['err'][-200:]}")
        return
    held = summary["held"]
    steps = [r for r in lines if "run" in r]

    def text(rate: float | None) -> str:
        return f"{rate:,.0f}/s" if rate else "none"

    ratio = summary.get("tb1_over_plain1")
    table.add(f"orders/s held on schedule, 1 worker (≥ 99 % within {summary['late_ms']:.0f} ms)",
              f"trialbench {text(held.get('tb1'))}, plain Locust {text(held.get('plain1'))}",
              "≥ 0.8", f"{ratio:.2f} " + _verdict(ratio >= 0.8) if ratio else "n/a")
    if "tb2" in held:
        two = summary.get("tb2_over_tb1")
        table.add("orders/s held on schedule, trialbench 2 workers vs 1",
                  text(held.get("tb2")), f"≥ 1.7 ({summary['cpus']} cores)",
                  f"{two:.2f} " + _verdict(two >= 1.7) if two else "n/a")
    first = {r["run"]: r for r in reversed(steps) if r.get("rate") == steps[0].get("rate")}
    tb, plain = first.get("tb1", {}), first.get("plain1", {})
    tb_ms, plain_ms = tb.get("worker_cpu_ms_per_order"), plain.get("worker_cpu_ms_per_order")
    if tb_ms and plain_ms:
        table.add(f"worker CPU per order at {tb['rate']:,.0f}/s (worker only)",
                  f"trialbench {tb_ms:.2f} ms, plain Locust {plain_ms:.2f} ms", "",
                  f"plain/trialbench {plain_ms / tb_ms:.2f}")
    sims = [r["sim_cores"] for r in steps if r.get("held") and r.get("sim_cores") is not None]
    if sims:
        table.add("simulator cores while a rate was held (same 2 cores)",
                  f"up to {max(sims):.2f}", "", "")


def bench_stall(table: Table, smoke: bool) -> None:
    """``bench/stall_bench.py``: a 2 s stall mid-burst, trialbench against the true latency
    from the intended start, plain Locust beside it."""
    done = _timed([PY, str(HERE / "stall_bench.py"), *(["--smoke"] if smoke else [])],
                  timeout=300)
    rows = {r["part"]: r for r in _json_lines(done["out"]) if "part" in r}
    burst = rows.get("trialbench")
    if burst is None:
        table.add("stall mid-burst", f"FAILED: {done['err'][-200:]}")
        return
    stall = f"{burst['stall_s']:.0f} s stall"
    table.add(f"{stall}, trialbench p99 vs intended-start reference (supplier clock)",
              f"{burst['p99_ms']:.0f} vs {burst['ref_p99_ms']:.0f} "
              f"({burst['truth_p99_ms']:.0f}) ms", "within 5 %",
              f"{burst['p99_error']:+.1%} ({burst['p99_error_vs_truth']:+.1%}) "
              + _verdict(abs(burst["p99_error"]) <= 0.05))
    table.add(f"{stall}, trialbench orders started late (stall_cover_s = the stall)",
              f"{burst['slips']} of {burst['orders']}", "0", _verdict(burst["slips"] == 0))
    plain = rows.get("plain Locust")
    if plain is not None:
        table.add(f"{stall}, plain Locust ({plain['users']} users) p95 / p99 vs reference",
                  f"{plain['p95_ms']:.0f} / {plain['p99_ms']:.0f} vs {plain['ref_p95_ms']:.0f}"
                  f" / {plain['ref_p99_ms']:.0f} ms; sent {plain['requests']} of "
                  f"{plain['scheduled']}", "",
                  f"{plain['ref_over_p95']:.0f}× / {plain['ref_over_p99']:.0f}× too low")


def bench_latency(table: Table, smoke: bool) -> None:
    if not smoke:
        done = _timed([PY, str(HERE / "latency_50ms.py")], timeout=600)
        rows = {r["client"]: r for r in _json_lines(done["out"]) if "client" in r}
        bare = rows.get("bare keep-alive")
        if bare is None:
            table.add("fixed 50 ms endpoint", f"FAILED: {done['err'][-200:]}")
        else:
            for client in ("trial", "burst (Locust)"):
                row = rows.get(client)
                if row is None:
                    continue
                d50, d99 = row["p50_ms"] - bare["p50_ms"], row["p99_ms"] - bare["p99_ms"]
                table.add(f"50 ms endpoint, {client} − bare client, p50 / p99",
                          f"{d50:+.2f} / {d99:+.2f} ms", "within 2 ms",
                          _verdict(abs(d50) <= 2 and abs(d99) <= 2))
    bench_stall(table, smoke)
    n = "10" if smoke else "100"
    done = _timed([PY, str(HERE / "latency_parity.py"), "--n", n, "--clients",
                   "bare,trial,fast1", "--acks", "quick", "--spacings", "100"], timeout=600)
    rows = [r for r in _json_lines(done["out"]) if "server" in r and "error" not in r]
    if not rows:
        table.add("split-write server", f"FAILED: {done['err'][-200:]}")
        return
    for server in ("split", "unsplit"):
        parts = {r["client"]: r for r in rows if r["server"] == server}
        text = ", ".join(f"{c} {parts[c].get('p50_ms', float('nan')):.1f}"
                         for c in ("bare", "trial", "fast1") if c in parts)
        table.add(f"{server}-write 50 ms server, p50 ms by client (quick ACK)", text,
                  "trial = burst (fast1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long, tiny sizes")
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--parts", default="tables,bootstrap,burst,latency")
    parser.add_argument("--fallback", action="store_true",
                        help="also time the streaming fold (the fallback) at --small: ~20 s")
    parser.add_argument("--old", action="store_true",
                        help="also time the builder before issue 13 at --small: ~30 s")
    parser.add_argument("--cold", action="store_true",
                        help="also build the --large log not scanned ahead: ~45 s")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    small, large = (500, 2000) if args.smoke else (args.small, args.large)
    table = Table()
    started = time.perf_counter()
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="trialbench-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if "tables" in parts:
            bench_tables(table, tmp, small, large, old=args.old or args.smoke,
                         commands=("rank",) if args.smoke else ("rank", "report"),
                         fallback=args.fallback or args.smoke,
                         cold_large=args.cold or args.smoke)
        if "bootstrap" in parts:
            bench_bootstrap(table, args.smoke)
        if "burst" in parts:
            bench_burst(table, args.smoke)
        if "latency" in parts:
            bench_latency(table, args.smoke)
    table.add("whole benchmark", f"{time.perf_counter() - started:.0f} s", "< 900 s")
    print(table.render())


if __name__ == "__main__":
    main()
