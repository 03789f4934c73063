"""End-to-end trials: the CLI against the simulator, checked against its ground truth.

The trial runs as a subprocess (``python -m harness trial``) on a simulator subprocess
bound to 127.0.0.1; the checks compare what the harness *measured* (its run folder)
with what the simulator *planted* (``/_sim/truth``, which the harness never reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.demo import DEMO_FLEET, DEMO_SCENARIO, fleet_env
from harness.events import read_events
from harness.results import SCHEMAS, load_runs
from harness.simulator.process import start_simulator
from harness.simulator.profiles import load_fleet

pytestmark = pytest.mark.serial  # SLA shares and unknown-outcome windows are timed: run alone

SEED = 20261125
PLANTED_KINDS = ("bad_pattern", "not_minted", "resold", "wrong_face_value", "expiring")


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 240
            ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m harness ARGS`` with ``env`` added to this environment."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=timeout_s, check=False)


@dataclass
class DemoTrial:
    run_dir: Path
    truth: dict[str, Any]
    stdout: str
    orders: pd.DataFrame
    codes: pd.DataFrame
    refunds: pd.DataFrame
    suppliers: pd.DataFrame


@pytest.fixture(scope="module")
def demo_trial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTrial]:
    """The demo scenario's trial against the demo fleet, with a fixed simulator seed,
    shortened (24 orders a supplier, a 4 s SLA) so the suite stays quick; every planted
    fault is still there to find (``make demo`` runs the full one)."""
    results = tmp_path_factory.mktemp("results")
    fleet = load_fleet(DEMO_FLEET)
    text = DEMO_SCENARIO.read_text(encoding="utf-8")
    for old, new in (("orders_per_supplier: 60", "orders_per_supplier: 24"),
                     ("deadline_s: 10 ", "deadline_s: 4 "),
                     ("refund_unused: 8", "refund_unused: 4"),
                     ("refund_follow_s: 15", "refund_follow_s: 8")):
        assert old in text, old
        text = text.replace(old, new)
    scenario = tmp_path_factory.mktemp("scenario") / "demo-short.yaml"
    scenario.write_text(text, encoding="utf-8")
    with start_simulator(DEMO_FLEET, seed=SEED) as sim:
        done = run_cli(["trial", str(scenario), "--results", str(results),
                        "--no-progress"], fleet_env(fleet, sim.url))
        assert done.returncode == 0, done.stderr
        truth = sim.truth()
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    tables = load_runs([run_dir])
    yield DemoTrial(run_dir, truth, done.stdout, tables.orders, tables.codes, tables.refunds,
                    tables.suppliers)


def _truth(trial: DemoTrial, supplier: str) -> dict[str, Any]:
    result: dict[str, Any] = trial.truth["suppliers"][supplier]
    return result


def test_bad_codes_reported_by_kind_for_the_right_supplier(demo_trial: DemoTrial) -> None:
    """Every planted bad code is found, with its kind, at the supplier that delivered it."""
    for supplier in demo_trial.truth["suppliers"]:
        issued = _truth(demo_trial, supplier)["codes_issued"]
        found = demo_trial.codes[demo_trial.codes["supplier"] == supplier]["verdict"]
        counts = found.value_counts().to_dict()
        for kind in PLANTED_KINDS:
            assert counts.get(kind, 0) == issued[kind], (supplier, kind, counts, issued)
        assert counts.get("valid", 0) <= issued["valid"]
        assert counts.get("duplicate", 0) == 0
    shady = demo_trial.codes[demo_trial.codes["supplier"] == "shady"]
    assert (shady["verdict"] != "valid").sum() >= 3  # the fleet plants about a third


def test_hidden_fees_measured_to_the_cent(demo_trial: DemoTrial) -> None:
    """The balance reconciliation finds exactly the hidden fees the simulator took."""
    for row in demo_trial.suppliers.itertuples():
        taken = Decimal(_truth(demo_trial, str(row.supplier))["hidden_fees_taken"])
        assert Decimal(str(row.hidden_fees)).quantize(Decimal("0.01")) == taken, row.supplier
    feeder = demo_trial.suppliers.set_index("supplier").loc["feeder"]
    assert feeder["hidden_fee_per_order"] == pytest.approx(1.50)


def test_refunds_marked_completed_without_money_are_caught(demo_trial: DemoTrial) -> None:
    """A refund that is 'completed' but never credited is measured as not credited."""
    refunds = demo_trial.refunds
    for supplier in demo_trial.truth["suppliers"]:
        truth = _truth(demo_trial, supplier)["refunds"]
        own = refunds[(refunds["supplier"] == supplier) & (refunds["state"] == "completed")]
        assert len(own) == truth["completed"], supplier
        not_credited = own[own["credited"].map(lambda v: v is False or v == 0)]
        assert len(not_credited) == truth["phantom"], supplier
        credited = own[own["credited"].map(lambda v: v is True or v == 1)]
        assert len(credited) == truth["credited"], supplier
    assert len(refunds[refunds["supplier"] == "shady"]) >= 1  # bad codes were sent back


def test_sla_misses_reported_for_the_slow_supplier(demo_trial: DemoTrial) -> None:
    """slowpoke's slow channel shows as SLA misses; acme's fast delivery shows none."""
    orders = demo_trial.orders
    misses = orders[~orders["within_deadline"].astype(bool)].groupby("supplier").size()
    assert misses.get("slowpoke", 0) >= 1
    assert misses.get("acme", 0) == 0
    late = orders[(orders["supplier"] == "slowpoke") & orders["delivered"].astype(bool)
                  & ~orders["within_deadline"].astype(bool)]
    assert (late["delivery_ms"] > late["deadline_s"] * 1000).all()


def test_every_simulated_order_recorded_once_and_nothing_bought_twice(
        demo_trial: DemoTrial) -> None:
    """Each order the simulator created is one row of the results; no id was bought twice."""
    orders = demo_trial.orders
    assert not orders["client_order_id"].duplicated().any()
    for supplier in demo_trial.truth["suppliers"]:
        truth = _truth(demo_trial, supplier)
        created = set(truth["client_order_ids"])
        assert len(created) == truth["orders_created"]
        own = orders[orders["supplier"] == supplier]
        assert created <= set(own["client_order_id"]), supplier
        accepted = set(own[own["supplier_order_id"] != ""]["client_order_id"])
        assert accepted == created, supplier


def test_every_order_logged_before_it_was_sent(demo_trial: DemoTrial) -> None:
    """``order_planned`` precedes the first request of every order in the event log."""
    planned: dict[str, float] = {}
    for event in read_events(demo_trial.run_dir):
        coid = event.get("client_order_id")
        if event["type"] == "order_planned":
            planned[coid] = event["t"]
        elif event["type"] == "order_attempt":
            assert coid in planned and planned[coid] <= event["t"]


def test_run_folder_holds_documented_tables_and_no_plain_codes(demo_trial: DemoTrial) -> None:
    """Manifest, log and every documented table are written; codes appear only hashed."""
    files = {p.name for p in demo_trial.run_dir.iterdir()}
    assert {"manifest.json", "events.jsonl", "report.md", "schema.json"} <= files
    assert {f"{name}.parquet" for name in SCHEMAS} <= files
    assert "codes-plain.jsonl" not in files
    for name, columns in SCHEMAS.items():
        table = pd.read_parquet(demo_trial.run_dir / f"{name}.parquet")
        assert list(table.columns) == list(columns), name
    manifest = json.loads((demo_trial.run_dir / "manifest.json").read_text())
    assert manifest["finished_at"] and manifest["scenario_sha256"]
    fleet = load_fleet(DEMO_FLEET)
    text = "".join(p.read_text(errors="replace") for p in demo_trial.run_dir.iterdir()
                   if p.suffix in (".json", ".jsonl", ".md"))
    for profile in fleet.suppliers.values():
        assert profile.secret not in text
    assert (demo_trial.codes["serial_masked"].str.count(r"\*") >= 4).all()
    serial_like = demo_trial.codes["serial_masked"].str.replace("*", "", regex=False)
    assert (serial_like.str.len() <= 8).all()


def test_summary_printed_per_supplier(demo_trial: DemoTrial) -> None:
    """The terminal summary and report.md name every supplier of the fleet."""
    report = (demo_trial.run_dir / "report.md").read_text()
    for supplier in demo_trial.truth["suppliers"]:
        assert supplier in demo_trial.stdout
        assert f"| {supplier} |" in report


TRIAL_FLEET = """\
# fake, simulator-only credentials
seed: 3
issuer: {api_key: issuer-key}
suppliers:
  good:
    api_key: good-key
    secret: good-secret
    balance: "1000.00"
    products:
      - {sku: card-10, name: Card 10, face_value: "10.00", price: "9.50", serial_prefix: GOOD}
    delivery: {median_ms: 50, sigma: 0.2, sync_share: 0.3}
  unsure:
    api_key: unsure-key
    secret: unsure-secret
    balance: "1000.00"
    products:
      - {sku: card-10, name: Card 10, face_value: "10.00", price: "9.50", serial_prefix: UNS}
    delivery: {median_ms: 100, sigma: 0.2}
    outcomes: {unknown_outcome_rate: 0.3, not_found_share: 0.5, not_found_window_ms: 600,
               silent_rate: 0.5, silent_hold_ms: 4000}
"""

SMALL_SCENARIO = """\
name: capped
seed: 1
issuer:
  base_url: ${{TRIALBENCH_SIM_URL}}/issuer
  api_key: ${{TRIALBENCH_DEMO_ISSUER_API_KEY}}
suppliers:
  - name: {supplier}
    base_url: ${{TRIALBENCH_SIM_URL}}/suppliers/{supplier}
    credentials:
      api_key: ${{TRIALBENCH_DEMO_{upper}_API_KEY}}
      secret: ${{TRIALBENCH_DEMO_{upper}_SECRET}}
    products:
      - {{sku: card-10, face_value: "10.00", sale_price: "10.00"}}
trial:
  orders_per_supplier: {orders}
  deadline_s: 5
  request_timeout_s: 1
  delivery: {delivery}
  spending_cap: {cap}
  redeem_sample: 0
  keep_plain_codes: {keep}
"""


def _scenario_text(*, cap: str = "30", delivery: str = "poll", keep: str = "false",
                   supplier: str = "good", orders: int = 10) -> str:
    return SMALL_SCENARIO.format(cap=cap, delivery=delivery, keep=keep, supplier=supplier,
                                 upper=supplier.upper(), orders=orders)


def _small_trial(tmp_path: Path, *, cap: str, delivery: str = "poll", keep: str = "false",
                 supplier: str = "good", orders: int = 10) -> tuple[Path, dict[str, Any]]:
    scenario = tmp_path / "capped.yaml"
    scenario.write_text(_scenario_text(cap=cap, delivery=delivery, keep=keep,
                                       supplier=supplier, orders=orders))
    fleet_path = tmp_path / "fleet.yaml"
    fleet_path.write_text(TRIAL_FLEET)
    with start_simulator(fleet_path) as sim:
        done = run_cli(["trial", str(scenario), "--results", str(tmp_path / "results"),
                        "--no-progress"], fleet_env(load_fleet(fleet_path), sim.url), 120)
        assert done.returncode == 0, done.stderr
        truth = sim.truth()["suppliers"][supplier]
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    return run_dir, truth


def test_spending_cap_never_exceeded(tmp_path: Path) -> None:
    """With a cap for 3 orders of 9.50, exactly 3 are bought and the rest are skipped."""
    run_dir, truth = _small_trial(tmp_path, cap="30")
    orders = load_runs([run_dir]).orders
    assert truth["orders_created"] == 3
    assert Decimal(truth["money_charged"]) <= Decimal(30)
    assert (orders["state"] == "skipped").sum() == 7
    events = [e for e in read_events(run_dir) if e["type"] == "spend_blocked"]
    assert len(events) == 7


def test_unknown_outcomes_resolved_by_asking_never_buying_twice(tmp_path: Path) -> None:
    """POSTs answered 500, or not answered in time, after the order was taken are resolved
    by GET, even through a not-found window; every order is recorded once, none twice."""
    run_dir, truth = _small_trial(tmp_path, cap="1000", supplier="unsure", orders=30)
    orders = load_runs([run_dir]).orders
    assert truth["unknown_outcomes"] >= 2 and truth["silent_outcomes"] >= 2  # ~9 and ~10
    timeouts = [e for e in read_events(run_dir)
                if e["type"] == "order_error" and e["kind"] == "timeout"]
    assert len(timeouts) == truth["silent_outcomes"]
    assert truth["orders_created"] == 30
    assert set(truth["client_order_ids"]) == set(orders["client_order_id"])
    assert (orders["state"] == "success").all()
    resolved = [e for e in read_events(run_dir)
                if e["type"] == "order_accepted" and e["via"] == "get"]
    assert len(resolved) == truth["unknown_outcomes"] + truth["silent_outcomes"]
    returned = Decimal(truth["refunds"]["completed_amount"])  # the plan's one unused refund
    assert Decimal(truth["money_charged"]) + returned == Decimal("9.50") * 30


def test_callbacks_only_and_plain_codes_file(tmp_path: Path) -> None:
    """Callback-only following delivers every order; plain codes go to one 0600 file."""
    run_dir, truth = _small_trial(tmp_path, cap="1000", delivery="callback", keep="true")
    orders = load_runs([run_dir]).orders
    assert (orders["state"] == "success").all()
    sources = {e["source"] for e in read_events(run_dir) if e["type"] == "order_observed"}
    assert "callback" in sources
    plain = run_dir / "codes-plain.jsonl"
    assert plain.stat().st_mode & 0o777 == 0o600
    assert len(plain.read_text().splitlines()) == truth["codes_issued"]["valid"]


@pytest.mark.parametrize(("edit", "expected", "key"), [
    ("delivery: poll", "delivery: sometimes", "delivery"),
    ("orders_per_supplier: 10", "orders_per_supplier: many", "orders_per_supplier"),
    ("deadline_s: 5", "deadline_s: 5\n  deadlin_s: 5", "deadlin_s"),
])
def test_bad_scenario_is_one_line_naming_where(tmp_path: Path, edit: str, expected: str,
                                               key: str) -> None:
    """A wrong value, a wrong type and an unknown key each give one line: file:line: key."""
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(_scenario_text().replace(edit, expected))
    env = {"TRIALBENCH_SIM_URL": "http://127.0.0.1:9", "TRIALBENCH_DEMO_ISSUER_API_KEY": "k",
           "TRIALBENCH_DEMO_GOOD_API_KEY": "k", "TRIALBENCH_DEMO_GOOD_SECRET": "s"}
    done = run_cli(["trial", str(scenario), "--results", str(tmp_path / "r")], env, 60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line_no = next(i for i, text in enumerate(scenario.read_text().splitlines(), 1)
                   if text.strip().startswith(key))
    assert f"bad.yaml:{line_no}: trial.{key}" in lines[0]
    assert not (tmp_path / "r").exists()  # nothing was run


def test_missing_env_var_is_one_line_naming_where(tmp_path: Path) -> None:
    """A credential whose variable is not set names the file, line, key and variable."""
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(_scenario_text())
    env = {"TRIALBENCH_SIM_URL": "http://127.0.0.1:9", "TRIALBENCH_DEMO_ISSUER_API_KEY": "k",
           "TRIALBENCH_DEMO_GOOD_API_KEY": "k"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIALBENCH_")}
    done = subprocess.run([sys.executable, "-m", "harness", "trial", str(scenario)],
                          capture_output=True, text=True, env={**clean, **env}, timeout=60,
                          check=False)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    line_no = next(i for i, text in enumerate(scenario.read_text().splitlines(), 1)
                   if text.strip().startswith("secret:"))
    assert f"bad.yaml:{line_no}: suppliers[0].credentials.secret" in line
    assert "TRIALBENCH_DEMO_GOOD_SECRET" in line


def test_dry_run_prints_plan_and_worst_case_without_sending(tmp_path: Path) -> None:
    """``--dry-run`` prints the plan and its worst-case cost and creates no run folder."""
    scenario = tmp_path / "plan.yaml"
    scenario.write_text(_scenario_text(cap="1000", orders=7))
    env = {"TRIALBENCH_SIM_URL": "http://127.0.0.1:9", "TRIALBENCH_DEMO_ISSUER_API_KEY": "k",
           "TRIALBENCH_DEMO_GOOD_API_KEY": "k", "TRIALBENCH_DEMO_GOOD_SECRET": "s"}
    done = run_cli(["trial", str(scenario), "--dry-run", "--results", str(tmp_path / "r")],
                   env, 60)
    assert done.returncode == 0, done.stderr
    assert "worst-case cost: 70.00" in done.stdout
    assert "good" in done.stdout and not (tmp_path / "r").exists()
