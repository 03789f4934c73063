"""``trialbench demo``: the main job against the built-in simulated suppliers.

Starts the simulator on a free loopback port with the shipped ``fleet-demo.yaml``, hands
the simulator's URL and the fleet's (fake, simulator-only) credentials to the demo
scenario through environment variables, as a real merchant would hand over real ones,
runs the shipped ``demo.yaml``, stops the simulator, then prints the trial summary and
the ranking and writes ``ranking.csv`` and the HTML report (``report.html``) into the run
folder. Both files are package data (:mod:`harness.shipped`; ``scenarios/`` in a source
checkout), so an installed ``trialbench demo`` works from any folder.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console

from harness.shipped import installed_path
from harness.simulator.process import start_simulator
from harness.simulator.profiles import Fleet, load_fleet

DEMO_FLEET = installed_path("fleet-demo.yaml")
DEMO_SCENARIO = installed_path("demo.yaml")


def env_name(supplier: str, what: str) -> str:
    """``TRIALBENCH_DEMO_<SUPPLIER>_<WHAT>``, the variables ``demo.yaml`` refers to."""
    return f"TRIALBENCH_DEMO_{re.sub(r'[^A-Za-z0-9]', '_', supplier).upper()}_{what}"


def fleet_env(fleet: Fleet, url: str) -> dict[str, str]:
    """Environment that points a scenario at a running simulator of ``fleet``."""
    env = {"TRIALBENCH_SIM_URL": url, "TRIALBENCH_DEMO_ISSUER_API_KEY": fleet.issuer.api_key}
    for name, profile in fleet.suppliers.items():
        env[env_name(name, "API_KEY")] = profile.api_key
        env[env_name(name, "SECRET")] = profile.secret
    return env


def run_demo(*, fleet_path: Path = DEMO_FLEET, scenario_path: Path = DEMO_SCENARIO,
             results_root: Path = Path("results"), seed: int | None = None,
             show_progress: bool = True, environ: Mapping[str, str] | None = None) -> Path:
    """Run the demo; return the run folder."""
    from harness.run.trial import run_trial

    console = Console()
    fleet = load_fleet(fleet_path)
    started = time.monotonic()
    with start_simulator(fleet_path, seed=seed) as sim:
        console.print(f"simulator: {sim.url} ({len(fleet.suppliers)} suppliers: "
                      f"{', '.join(fleet.suppliers)})")
        env = {**(environ if environ is not None else os.environ), **fleet_env(fleet, sim.url)}
        run_dir = run_trial(scenario_path, results_root=results_root, env=env,
                            show_progress=show_progress)
    from harness.analysis import analyse_runs, write_analysis_csv
    from harness.i18n import resolve_lang
    from harness.report import print_analysis, write_report

    lang = resolve_lang(None)  # --lang reaches here as $TRIALBENCH_LANG, as in the summary
    analysis = analyse_runs([run_dir])
    print_analysis(analysis, console, lang=lang)
    write_analysis_csv(analysis, run_dir)
    report = write_report(analysis, lang=lang)
    console.print(f"run folder: {run_dir}")
    console.print(f"summary:    {run_dir / 'report.md'}")
    console.print(f"report:     {report}")
    console.print(f"demo took {time.monotonic() - started:.1f} s")
    return run_dir
