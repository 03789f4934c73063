"""The ``trialbench`` command: one subcommand per job, each a thin call into its stage.

Heavy modules are imported inside each command, so ``trialbench sim`` never imports
pandas and nothing but ``burst``/``worker`` ever imports Locust (which patches the
process with gevent on import).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError

EXIT_CODES = """exit codes:
  0    done (also a burst stopped by Ctrl-C or the web UI's STOP once every order it
       sent reached a final state: the run is complete up to the stop)
  1    a burst abort condition fired (or an SLA breach)
  2    bad input: a scenario, profile, run folder or argument (the message names the
       file and line), or a missing extra (bursts need `pip install 'trialbench[burst]'`)
  3    the run could not do its job: no supplier reachable, nothing accepted, a burst
       worker lost (the run folder keeps what was recorded; see `trialbench resume`)
  130  interrupted (Ctrl-C, or a burst's STOP with orders still unsettled): finish the
       run with `trialbench resume RUN`"""

DONE, ABORTED, BAD_INPUT, FAILED, INTERRUPTED = 0, 1, 2, 3, 130


def _run_exit(run_dir: Path) -> int:
    """The exit code of a finished run folder: 130 interrupted, 3 if it could not do its
    job, 1 on a burst abort, else 0 (each reason printed to stderr)."""
    import json

    from harness.results import load_runs

    manifest = json.loads((run_dir / "manifest.json").read_text())
    if manifest.get("interrupted"):
        return INTERRUPTED
    if manifest.get("failed"):
        print(f"trialbench: the run failed: {manifest['failed']}", file=sys.stderr)
        return FAILED
    orders = load_runs([run_dir], allow_partial=True).orders
    sent = orders[orders["state"] != "skipped"]
    if sent.empty or not sent["accepted_at"].notna().any():
        if orders.empty:
            why = (f"no order was planned or recorded: see {run_dir / 'events.jsonl'} for "
                   "what stopped the run before its first order")
        elif sent.empty:
            why = (f"no order was sent: the spending cap allowed none of {len(orders)} "
                   "(`spend_blocked` in the event log; raise the scenario's spending_cap)")
        else:
            why = (f"no supplier accepted any of {len(sent)} orders: check the base URLs "
                   "and credentials (the run folder has every error)")
        print(f"trialbench: {why}", file=sys.stderr)
        return FAILED
    return ABORTED if manifest.get("burst_aborted") else DONE


def _cmd_sim(args: argparse.Namespace) -> int:
    from harness.simulator.server import serve

    serve(Path(args.profiles), host=args.host, port=args.port, seed=args.seed)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from harness.schemas import json_schema

    text = json_schema(args.kind)
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"trialbench: error: {args.out}: cannot write: {exc.strerror}",
                  file=sys.stderr)
            return 2
    return 0


def _cmd_trial(args: argparse.Namespace) -> int:
    from harness.run.trial import run_trial

    _use_lang(args)
    if args.dry_run:
        from harness.run.trial import print_plan
        from harness.scenario import load_scenario

        print_plan(load_scenario(Path(args.scenario)))
        return 0
    options = {"results_root": Path(args.results), "show_progress": not args.no_progress,
               "callback_url": args.callback_url}
    if args.simulate is None:
        run_dir = run_trial(Path(args.scenario), **options)
    else:  # the simulator on a free loopback port, and its credentials in the environment
        import os

        from harness.demo import fleet_env
        from harness.simulator.process import start_simulator
        from harness.simulator.profiles import load_fleet

        fleet = load_fleet(Path(args.simulate))
        with start_simulator(Path(args.simulate), seed=args.seed) as sim:
            print(f"simulator: {sim.url} ({len(fleet.suppliers)} suppliers)")
            env = {**os.environ, **fleet_env(fleet, sim.url)}
            run_dir = run_trial(Path(args.scenario), env=env, **options)
    print(f"run folder: {run_dir}")
    print(f"report:     {run_dir / 'report.md'}")
    return _run_exit(run_dir)


def _cmd_init(args: argparse.Namespace) -> int:
    from harness.shipped import STARTER_FLEET, STARTER_SCENARIO, init_folder

    folder = Path(args.folder)
    for path in init_folder(folder, force=args.force):
        print(f"wrote {path}")
    print(f"next: trialbench trial {folder / STARTER_SCENARIO} --simulate "
          f"{folder / STARTER_FLEET}\n(edit {STARTER_SCENARIO} for your suppliers; the "
          "schemas beside it let an editor complete and check it)")
    return DONE


def _cmd_export(args: argparse.Namespace) -> int:
    from harness.export import export_run

    out = Path(args.out) if args.out else None
    for path in export_run(Path(args.run), args.format, out, tables=args.table):
        print(f"wrote {path}")
    return DONE


def _cmd_dialects(args: argparse.Namespace) -> int:
    from harness.drivers.dialect import dialect_json_schema, installed_drivers, load_dialect

    if args.schema:
        sys.stdout.write(dialect_json_schema())
        return DONE
    if args.check is not None:
        dialect = load_dialect(Path(args.check))  # a DialectError names file:line: key
        print(f"{args.check}: dialect {dialect.name!r} ({dialect.title}) is valid")
        return DONE
    if args.probe is not None:
        return _probe_suppliers(Path(args.probe))
    for driver in installed_drivers():
        print(f"{driver.name:<12} {driver.title}")
        if driver.modelled_on:
            print(f"{'':<12} modelled on: {driver.modelled_on}")
        print(f"{'':<12} from: {driver.source}")
    return DONE


def _probe_suppliers(scenario_path: Path) -> int:
    """Sign and send only the read-only calls (catalog, balance) to every supplier of the
    scenario and show what came back, parsed: a dialect checked before anything is bought."""
    import asyncio

    from harness.drivers.base import Credentials, Failure
    from harness.drivers.reference import build_driver
    from harness.run.async_transport import AsyncTransport
    from harness.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    timeout_s = scenario.trial.request_timeout_s if scenario.trial is not None else 10.0

    async def probe() -> bool:
        transport = AsyncTransport(timeout_s)
        every_one_answered = True
        try:
            for supplier in scenario.suppliers:
                driver = build_driver(supplier.driver, supplier.base_url, Credentials(
                    supplier.credentials.api_key.get_secret_value(),
                    supplier.credentials.secret.get_secret_value()))
                print(f"{supplier.name} ({supplier.driver}) at {supplier.base_url}")
                for what, request, parse in (("catalog", driver.catalog, driver.parse_catalog),
                                             ("balance", driver.balance, driver.parse_balance)):
                    response = await transport.send(request())
                    try:
                        parsed = parse(response)
                    except Exception as exc:  # a supplier's answer is data, even here
                        parsed = Failure("bad_response", response.status, str(exc)[:200])
                    if isinstance(parsed, Failure):
                        every_one_answered = False
                        print(f"  {what}: FAILED {parsed.kind} (HTTP {response.status}) "
                              f"{parsed.message[:160]}")
                    elif isinstance(parsed, list):
                        print(f"  {what}: {len(parsed)} products")
                        for product in parsed[:20]:
                            print(f"    {product.sku:<20} {product.kind:<6} face "
                                  f"{product.face_value} price {product.price} stock "
                                  f"{'undisclosed' if product.stock is None else product.stock}")
                    else:
                        print(f"  {what}: {parsed}")
        finally:
            await transport.aclose()
        return every_one_answered

    ok = asyncio.run(probe())
    print("only read-only calls were sent (catalog, balance); nothing was bought")
    return DONE if ok else FAILED


def _cmd_resume(args: argparse.Namespace) -> int:
    from harness.run.resume import resume_run

    _use_lang(args)
    run_dir = Path(args.run)
    if not (run_dir / "manifest.json").is_file():
        print(f"trialbench: error: {run_dir}: not a run folder (no manifest.json); see "
              "`ls results/`", file=sys.stderr)
        return BAD_INPUT
    progress = resume_run(run_dir, show_progress=not args.no_progress)
    print(f"resumed {run_dir}: asked about {len(progress.unsettled())} unsettled orders and "
          f"{len(progress.open_refunds())} open refunds")
    return _run_exit(run_dir)


def _cmd_demo(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    _use_lang(args)
    run_demo(results_root=Path(args.results), seed=args.seed,
             show_progress=not args.no_progress)
    return 0


def _use_lang(args: argparse.Namespace) -> str:
    """The language of ``--lang`` (else $TRIALBENCH_LANG, else the locale); a command that
    runs a trial hands it on through $TRIALBENCH_LANG to the summary it prints."""
    import os

    from harness.i18n import LANG_ENV, resolve_lang

    lang = resolve_lang(args.lang)
    if args.lang:
        os.environ[LANG_ENV] = lang
    return lang


def _cmd_rank(args: argparse.Namespace) -> int:
    from harness.analysis import analyse_runs, write_analysis_csv
    from harness.i18n import resolve_lang, text
    from harness.report import print_analysis

    lang = resolve_lang(args.lang)
    runs = [Path(r) for r in args.runs]
    analysis = analyse_runs(runs, allow_partial=args.allow_partial)
    _name_partial_runs(analysis.tables.manifests)
    print_analysis(analysis, lang=lang)  # the same headline as the report and the demo
    path = write_analysis_csv(analysis, Path(args.out) if args.out else runs[0])
    print(text("terminal.ranking_path", lang, path=path))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.analysis import analyse_runs
    from harness.i18n import resolve_lang, text
    from harness.report import write_report
    from harness.wording import headline

    lang = resolve_lang(args.lang)
    analysis = analyse_runs([Path(r) for r in args.runs], allow_partial=args.allow_partial)
    _name_partial_runs(analysis.tables.manifests)
    path = write_report(analysis, Path(args.out) if args.out else None, lang=lang,
                        history=Path(args.history) if args.history else None)
    print(headline(analysis, lang))
    print(text("terminal.report_path", lang, path=path))
    return 0


def _name_partial_runs(manifests: Sequence[dict[str, object]]) -> None:
    for manifest in manifests:
        if manifest.get("partial"):
            print(f"trialbench: warning: run {manifest.get('run_id')} was interrupted; its "
                  "figures are partial", file=sys.stderr)


def _cmd_burst(args: argparse.Namespace) -> int:
    import os

    _use_lang(args)  # the summary it prints and writes (report.md)
    if args.dry_run:  # arithmetic on the scenario: no Locust, nothing sent
        from harness.run.schedule import print_burst_plan
        from harness.scenario import load_scenario

        print_burst_plan(load_scenario(Path(args.scenario)))
        return DONE
    if not _have_locust():
        return BAD_INPUT
    from harness.run.burst import run_burst, terminal  # imports Locust (gevent patches)

    options = {"results_root": Path(args.results), "workers": args.workers,
               "remote_workers": args.remote_workers, "master_bind": args.master_bind,
               "web_ui": args.web_ui, "live": not args.no_live,
               "callback_url": args.callback_url}
    if args.simulate is None:
        run_dir = run_burst(Path(args.scenario), **options)
    else:  # the simulator on a free loopback port, and its credentials in the environment
        from harness.demo import fleet_env
        from harness.simulator.process import start_simulator
        from harness.simulator.profiles import load_fleet

        out = terminal()
        fleet = load_fleet(Path(args.simulate))
        with start_simulator(Path(args.simulate), seed=args.seed) as sim:
            out.print(f"simulator: {sim.url} ({len(fleet.suppliers)} suppliers)")
            env = {**os.environ, **fleet_env(fleet, sim.url)}
            run_dir = run_burst(Path(args.scenario), env=env, console=out, **options)
    return _run_exit(run_dir)


def _have_locust() -> bool:
    """Bursts need the optional Locust extra; say how to install it when it is missing."""
    import importlib.util

    if importlib.util.find_spec("locust") is not None and \
            importlib.util.find_spec("ddsketch") is not None:
        return True
    print("trialbench: error: bursts run on Locust, which is not installed; install the "
          "burst extra: pip install 'trialbench[burst]' (from a checkout: pip install -e "
          "'.[burst]'; `make` installs it)", file=sys.stderr)
    return False


def _cmd_worker(args: argparse.Namespace) -> int:
    if not _have_locust():
        return BAD_INPUT
    from harness.run.worker import run_worker  # imports Locust: gevent patches this process

    host, _, port = args.master.rpartition(":")
    if not host or not port.isdigit():
        print(f"trialbench: error: --master {args.master!r}: write HOST:PORT", file=sys.stderr)
        return 2
    return run_worker(host, int(port), local_child=args.local_child)


def _cmd_check(args: argparse.Namespace) -> int:
    from harness.check.command import run_check

    return run_check(args.runs, baseline=args.baseline, history=args.history, sla=args.sla,
                     junit=args.junit, summary=args.summary, strict=args.strict,
                     lang=args.lang)


def _cmd_history(args: argparse.Namespace) -> int:
    from harness.check.command import run_history

    return run_history(args.folder, lang=args.lang)


def _add_lang(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--lang zh|en`` option, saying what it words."""
    parser.add_argument("--lang", choices=("zh", "en"), default=None,
                        help=f"language of {what}: zh or en (default: $TRIALBENCH_LANG, "
                             "else the locale, else en)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every subcommand is documented here and in the README."""
    parser = argparse.ArgumentParser(
        prog="trialbench",
        description="Benchmark digital-goods suppliers: trials, bursts, code checks, ranking.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trialbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser("sim", help="serve the simulated suppliers and issuer over HTTP")
    sim.add_argument("--profiles", required=True, metavar="FILE",
                     help="fleet of behaviour profiles (YAML), e.g. scenarios/fleet-demo.yaml")
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=0,
                     help="port to bind; 0 picks a free one and prints the URL (default 0)")
    sim.add_argument("--seed", type=int, default=None,
                     help="random seed (default: the profile file's seed)")
    sim.set_defaults(func=_cmd_sim)

    trial = sub.add_parser("trial", help="run a scenario's trial batch against its suppliers")
    trial.epilog, trial.formatter_class = EXIT_CODES, argparse.RawDescriptionHelpFormatter
    trial.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file")
    trial.add_argument("--results", default="results", metavar="DIR",
                       help="where run folders go (default results/)")
    trial.add_argument("--no-progress", action="store_true", help="no live progress table")
    trial.add_argument("--dry-run", action="store_true",
                       help="print the plan and its worst-case cost; send nothing")
    trial.add_argument("--callback-url", default=None, metavar="URL",
                       help="the public URL suppliers send callbacks to (a tunnel or reverse "
                            "proxy forwarding to the receiver); replaces the scenario's "
                            "callback.public_url")
    trial.add_argument("--simulate", default=None, metavar="FLEET",
                       help="start the built-in simulator with this fleet first and point "
                            "the scenario at it (e.g. scenarios/fleet-demo.yaml)")
    trial.add_argument("--seed", type=int, default=None,
                       help="simulator seed with --simulate (default: the fleet's)")
    _add_lang(trial, "the summary (terminal and report.md)")
    trial.set_defaults(func=_cmd_trial)

    init = sub.add_parser("init", help="copy a starter scenario, the demo fleet and the "
                                       "schemas into a folder to edit",
                          epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("folder", metavar="DIR", help="the folder (created if missing)")
    init.add_argument("--force", action="store_true",
                      help="overwrite files of the same names already there")
    init.set_defaults(func=_cmd_init)

    dialects = sub.add_parser("dialects", help="list the supplier dialects installed (shipped "
                                               "YAML dialects and trialbench.drivers plugins)")
    dialects.add_argument("--schema", action="store_true",
                          help="print the JSON Schema of a dialect file instead")
    dialects.add_argument("--check", default=None, metavar="FILE",
                          help="validate a dialect file (errors name the file, line and key)")
    dialects.add_argument("--probe", default=None, metavar="SCENARIO",
                          help="sign and send only read-only calls (catalog, balance) to every "
                               "supplier of SCENARIO and show what came back, parsed; nothing "
                               "is bought")
    dialects.set_defaults(func=_cmd_dialects)

    demo = sub.add_parser("demo", help="run the demo trial against the built-in simulator")
    demo.add_argument("--results", default="results", metavar="DIR",
                      help="where run folders go (default results/)")
    demo.add_argument("--seed", type=int, default=None, help="simulator seed (default: fleet's)")
    demo.add_argument("--no-progress", action="store_true", help="no live progress table")
    _add_lang(demo, "the summary, ranking and report")
    demo.set_defaults(func=_cmd_demo)

    rank = sub.add_parser("rank", help="rank the suppliers of one or more runs; write "
                                       "ranking.csv")
    rank.add_argument("runs", nargs="+", metavar="RUN",
                      help="run folders (e.g. a trial and a burst); the first run's scenario "
                           "gives the ranking: settings and fees")
    rank.add_argument("--out", metavar="DIR", default=None,
                      help="where ranking.csv, ranking_beats.csv and findings.csv go "
                           "(default: the first run folder)")
    rank.add_argument("--allow-partial", action="store_true",
                      help="also use interrupted runs (named as partial); by default they "
                           "are refused until `trialbench resume` finishes them")
    _add_lang(rank, "the table, order and headline (the CSVs stay English)")
    rank.set_defaults(func=_cmd_rank)

    report = sub.add_parser("report", help="write a self-contained HTML report of one or "
                                           "more runs")
    report.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders (e.g. a trial and a burst); the first run's scenario "
                             "gives the ranking: settings and fees")
    report.add_argument("--out", metavar="DIR", default=None,
                        help="where report.html goes (default: the first run folder)")
    report.add_argument("--allow-partial", action="store_true",
                        help="also use interrupted runs (named as partial in the report)")
    _add_lang(report, "the report (text, tables, figure labels) and what is printed")

    resume = sub.add_parser("resume", help="finish an interrupted run: ask each supplier "
                                           "about every unsettled order and refund, then "
                                           "complete the plan (a trial) without buying twice",
                            epilog=EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    resume.add_argument("run", metavar="RUN", help="the run folder, e.g. results/<run-id>")
    resume.add_argument("--no-progress", action="store_true", help="no live progress table")
    _add_lang(resume, "the summary")
    resume.set_defaults(func=_cmd_resume)
    report.add_argument("--history", metavar="DIR", default=None,
                        help="also show each supplier's trend over the history of runs in DIR "
                             "(the folder `trialbench check --history` keeps)")
    report.set_defaults(func=_cmd_report)

    burst = sub.add_parser("burst", help="run a scenario's peak-load burst on Locust (open "
                                         "model, latency from intended start)")
    burst.epilog, burst.formatter_class = EXIT_CODES, argparse.RawDescriptionHelpFormatter
    burst.add_argument("scenario", metavar="SCENARIO", help="scenario YAML file with a burst:")
    burst.add_argument("--results", default="results", metavar="DIR",
                       help="where run folders go (default results/)")
    burst.add_argument("--workers", type=int, default=None, metavar="N",
                       help="start a Locust master and N local worker processes "
                            "(default: the scenario's burst.workers; 1 = one process)")
    burst.add_argument("--remote-workers", type=int, default=0, metavar="M",
                       help="also wait for M workers started elsewhere with "
                            "`trialbench worker --master HOST:PORT` (default 0)")
    burst.add_argument("--master-bind", default=None, metavar="HOST:PORT",
                       help="where the master listens for workers (default 127.0.0.1 and "
                            "a free port; give e.g. 0.0.0.0:5557 for remote workers)")
    burst.add_argument("--web-ui", default=None, metavar="127.0.0.1:PORT",
                       help="also serve Locust's live web page there (loopback only)")
    burst.add_argument("--simulate", default=None, metavar="FLEET",
                       help="start the built-in simulator with this fleet first and point "
                            "the scenario at it (e.g. scenarios/fleet-demo.yaml)")
    burst.add_argument("--seed", type=int, default=None,
                       help="simulator seed with --simulate (default: the fleet's)")
    burst.add_argument("--no-live", action="store_true", help="no live terminal view")
    burst.add_argument("--callback-url", default=None, metavar="URL",
                       help="the public address suppliers send callbacks to (a tunnel or "
                            "reverse proxy in front of this machine); replaces the "
                            "scenario's callback.public_url; with several workers each gets "
                            "URL/<worker-id>")
    burst.add_argument("--dry-run", action="store_true",
                       help="print the schedule and its worst-case cost; send nothing")
    _add_lang(burst, "the summary (terminal and report.md)")
    burst.set_defaults(func=_cmd_burst)

    worker = sub.add_parser("worker", help="join a burst's Locust master as a worker "
                                           "(credentials come from this machine's env)")
    worker.add_argument("--master", required=True, metavar="HOST:PORT",
                        help="the master's address, as printed by `trialbench burst`")
    worker.add_argument("--local-child", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(func=_cmd_worker)

    export = sub.add_parser("export", help="write a run's tables as CSV, JSON or Parquet "
                                           "(money as exact decimal strings in CSV and JSON)",
                            epilog=EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("run", metavar="RUN", help="the run folder, e.g. results/<run-id>")
    export.add_argument("--format", required=True, choices=("csv", "json", "parquet"),
                        help="csv or json (one file per table; times ISO 8601 UTC, money as "
                             "decimal strings), or parquet (the tables' own types)")
    export.add_argument("--out", metavar="DIR", default=None,
                        help="where the files go (default RUN/export/)")
    export.add_argument("--table", action="append", default=None, metavar="NAME",
                        help="only this table (orders, codes, refunds, suppliers, timeline); "
                             "repeat for several (default: every table)")
    export.set_defaults(func=_cmd_export)

    schema = sub.add_parser("schema", help="write the JSON Schema of a kind of file you write "
                                           "(scenario, fleet of simulator profiles, dialect, "
                                           "SLA)",
                            epilog=EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    schema.add_argument("--kind", default="scenario",
                        choices=("scenario", "fleet", "profile", "dialect", "sla"),
                        help="scenario (default; shipped as scenarios/scenario.schema.json), "
                             "fleet or profile (simulator profiles: scenarios/"
                             "fleet.schema.json), dialect (harness/drivers/dialects/"
                             "dialect.schema.json), sla (check --sla FILE: scenarios/"
                             "sla.schema.json)")
    schema.add_argument("--out", metavar="FILE", default=None,
                        help="write to FILE instead of stdout")
    schema.set_defaults(func=_cmd_schema)
    check = sub.add_parser("check", help="judge runs on SLA thresholds, against a baseline "
                                         "and over a history; write JUnit and Markdown",
                           epilog="exit codes:\n  0    every check that could be judged "
                                  "passed\n  1    a breach or a regression\n  2    bad "
                                  "input (the message names the file and line)\n  3    "
                                  "cannot be judged: interrupted or failed run, no orders, a "
                                  "supplier that accepted nothing, or no check had enough data",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("runs", nargs="+", metavar="RUN", help="run folders, judged together")
    check.add_argument("--baseline", nargs="+", default=None, metavar="RUN",
                       help="baseline run folders to compare with")
    check.add_argument("--history", default=None, metavar="DIR",
                       help="history folder (run folders and/or index.jsonl): compare with "
                            "its last green run, look for change points, and record this run")
    check.add_argument("--sla", default=None, metavar="FILE",
                       help="SLA file (default: the sla: section of the run's scenario)")
    check.add_argument("--junit", default=None, metavar="PATH", help="write JUnit XML here")
    check.add_argument("--summary", default=None, metavar="PATH",
                       help="append a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    check.add_argument("--strict", action="store_true",
                       help="exit 3 when any check was skipped for too little data")
    _add_lang(check, "the terminal text, JUnit messages and summary")
    check.set_defaults(func=_cmd_check)

    history = sub.add_parser("history", help="print each supplier's trend over a history "
                                             "folder: tier, key metrics, change points")
    history.add_argument("folder", metavar="DIR", help="history folder (as for check)")
    _add_lang(history, "the trend")
    history.set_defaults(func=_cmd_history)
    for command in sub.choices.values():  # every command's --help lists the exit codes
        if not command.epilog:
            command.epilog = EXIT_CODES
            command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trialbench`` and ``python -m harness``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except HarnessError as exc:
        print(f"trialbench: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("trialbench: interrupted; `trialbench resume RUN` finishes the run",
              file=sys.stderr)
        return INTERRUPTED
    return code
