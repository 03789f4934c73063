"""The dialects on the command line: listing, the read-only probe, plugins, and the public
callback address, against the simulator on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from harness.demo import fleet_env
from harness.drivers import dialect as dialect_module
from harness.drivers.base import Credentials
from harness.drivers.dialect import installed_drivers, known_driver
from harness.drivers.reference import ReferenceDriver, build_driver
from harness.simulator.process import start_simulator
from harness.simulator.profiles import load_fleet

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "dialects.yaml"
FLEET = Path(__file__).parent / "data" / "fleet-dialects-test.yaml"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=180, env=env, cwd=ROOT, check=False)


def test_dialects_lists_the_installed_ones() -> None:
    """`trialbench dialects` names the reference, the three shipped dialects and their
    real-world models; `--schema` is the dialect file's JSON Schema."""
    done = _cli("dialects")
    assert done.returncode == 0, done.stderr
    for name in ("reference", "gateway", "concat_md5", "sync_trade", "Fulu", "Juhe",
                 "acg-faka"):
        assert name in done.stdout
    assert json.loads(_cli("dialects", "--schema").stdout)["title"] == "Dialect"


def test_a_broken_dialect_file_exits_2_with_one_located_line(tmp_path: Path) -> None:
    """`--check` refuses a broken file with the file, the line and the key."""
    path = tmp_path / "mine.yaml"
    path.write_text((ROOT / "harness/drivers/dialects/gateway.yaml").read_text()
                    .replace("states: {untreated: submitted", "states: {untreated: pending"))
    done = _cli("dialects", "--check", str(path))
    assert done.returncode == 2
    assert f"{path}:" in done.stderr and "states" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_plugin_registered_under_the_entry_point_is_a_driver(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A `trialbench.drivers` entry point names a factory(base_url, credentials): scenarios
    may name it, `trialbench dialects` lists it, build_driver builds it."""
    plugin = EntryPoint(name="acme_sdk", value="harness.drivers.reference:ReferenceDriver",
                        group=dialect_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(dialect_module, "_plugins", lambda: {"acme_sdk": plugin})
    assert known_driver("acme_sdk") is None
    assert "acme_sdk" in [d.name for d in installed_drivers()]
    built = build_driver("acme_sdk", "http://127.0.0.1:9/s", Credentials("k", "s"))
    assert isinstance(built, ReferenceDriver)
    assert "unknown driver 'nope'" in (known_driver("nope") or "")


@pytest.mark.slow
def test_probe_sends_only_read_only_calls_and_shows_them_parsed(tmp_path: Path) -> None:
    """`trialbench dialects --probe SCENARIO` signs catalog and balance for every supplier,
    in its dialect, prints them parsed, and buys nothing."""
    fleet = load_fleet(FLEET)
    with start_simulator(FLEET) as sim:
        env = {**os.environ, **fleet_env(fleet, sim.url)}
        done = _cli("dialects", "--probe", str(SCENARIO), env=env)
        truth = sim.truth()["suppliers"]
    assert done.returncode == 0, done.stdout + done.stderr
    for supplier in ("reference", "gateway", "concat", "trade"):
        assert f"{supplier} (" in done.stdout
        assert truth[supplier]["orders_created"] == 0
        assert truth[supplier]["unauthorized_401"] == 0
    assert done.stdout.count("catalog: 3 products") == 4
    assert done.stdout.count("balance: Balance(amount=Decimal('50000") == 4
    assert "nothing was bought" in done.stdout


@pytest.mark.slow
def test_suppliers_are_given_the_public_callback_url(tmp_path: Path) -> None:
    """`--callback-url` is what suppliers are told (here an address that refuses, so every
    callback fails and the orders still settle by polling); the receiver stays on loopback."""
    scenario = tmp_path / "small.yaml"
    scenario.write_text(SCENARIO.read_text().replace("orders_per_supplier: 40",
                                                     "orders_per_supplier: 4"))
    public = "http://127.0.0.1:9/tunnel"
    fleet = load_fleet(FLEET)
    results = tmp_path / "results"
    with start_simulator(FLEET) as sim:
        env = {**os.environ, **fleet_env(fleet, sim.url)}
        done = _cli("trial", str(scenario), "--results", str(results), "--no-progress",
                    "--callback-url", public, env=env)
        truth = sim.truth()["suppliers"]
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = [p for p in results.iterdir() if (p / "manifest.json").is_file()]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (started,) = [e for e in events if e["type"] == "trial_started"]
    assert started["callback_url"] == public
    for supplier in ("reference", "concat"):  # the dialects with callbacks sent them there
        callbacks = truth[supplier]["callbacks"]
        assert callbacks["sent"] > 0 and callbacks["acked"] == 0
    assert not [e for e in events if e["type"] == "callback_received"]
    assert {e["state"] for e in events if e["type"] == "order_final"} <= {"success", "failed",
                                                                         "unknown"}
