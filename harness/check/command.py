"""The ``check`` and ``history`` subcommands, called by :mod:`harness.cli`."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.check.evaluate import BAD_INPUT, check_runs, load_measures
from harness.check.history import load_trend, record
from harness.check.junit import write_junit
from harness.check.sla import load_sla
from harness.check.summary import markdown, terminal_text, trend_text
from harness.i18n import resolve_lang


def run_check(runs: list[str], *, baseline: list[str] | None = None,
              history: str | None = None, sla: str | None = None, junit: str | None = None,
              summary: str | None = None, strict: bool = False, record_run: bool = True,
              lang: str | None = None) -> int:
    """Judge the runs, print the result, write JUnit/Markdown if asked, keep the history
    index up to date; return the exit code (bad input raises HarnessError: exit 2)."""
    if baseline and history:
        print("trialbench: error: give --baseline or --history, not both", file=sys.stderr)
        return BAD_INPUT
    lang = resolve_lang(lang)
    run_dirs = [Path(r) for r in runs]
    report = check_runs(run_dirs, sla=load_sla(Path(sla)) if sla else None,
                        baseline_dirs=[Path(b) for b in baseline or []],
                        history_dir=Path(history) if history else None, strict=strict)
    print(terminal_text(report, lang))
    if junit:
        print(f"junit:      {write_junit(report, Path(junit), lang)}")
    if summary:
        path = Path(summary)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:  # a CI summary file is appended to
            handle.write(markdown(report, lang))
        print(f"summary:    {path}")
    if history and record_run and not any(r.reason in ("interrupted", "run_failed")
                                           for r in report.results):
        record(Path(history), run_dirs, load_measures(run_dirs)[1], report.exit_code)
        print(f"history:    {Path(history) / 'index.jsonl'} (run recorded)")
    return report.exit_code


def run_history(folder: str, lang: str | None = None) -> int:
    """Print each supplier's trend over the history in ``folder``."""
    print(trend_text(load_trend(Path(folder)), folder, resolve_lang(lang)))
    return 0
