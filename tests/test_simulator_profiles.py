"""Fleet profiles: validation errors name file, line and key; shipped fleets load and serve."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from harness.errors import ConfigError, ProfileError, SimulatorStartError
from harness.protocol import signed_headers
from harness.simulator.process import start_simulator
from harness.simulator.profiles import load_fleet

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "fleet-demo.yaml"

GOOD = """\
seed: 1
issuer: {api_key: k}
suppliers:
  a:
    api_key: a-key
    secret: a-secret
    balance: "10.00"
    products:
      - {sku: s1, name: S1, kind: card, face_value: "1.00", price: "0.90"}
"""


def write(tmp_path: Path, text: str) -> Path:
    """Write a fleet file and return its path."""
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize(("extra", "line", "key", "words"), [
    ("    outcomes: {failure_rate: 1.5}\n", 10, "suppliers.a.outcomes.failure_rate",
     "less than or equal to 1"),
    ("    outcomes: {failure_rate: 0.7, partial_rate: 0.6}\n", 10, "suppliers.a.outcomes",
     "must not exceed 1"),
    ("    codes: {resold: 0.6, not_minted: 0.6}\n", 10, "suppliers.a.codes",
     "must not exceed 1"),
    ("    refunds: {phantom: 0.9, slow: 0.2}\n", 10, "suppliers.a.refunds",
     "must not exceed 1"),
    ("    latency: {median_ms: 5}\n", 10, "suppliers.a.latency", "unknown key"),
    ("    rate_limit: {rate_per_s: 0}\n", 10, "suppliers.a.rate_limit.rate_per_s",
     "greater than 0"),
    ("      - {sku: s1, name: again, face_value: \"1.00\", price: \"1.00\"}\n", 10,
     "suppliers.a.products[1].sku", "appears twice"),
    ("    callbacks: {retry_schedule_s: [1, -2]}\n", 10,
     "suppliers.a.callbacks.retry_schedule_s", "negative"),
])
def test_profile_errors_name_file_line_key(tmp_path: Path, extra: str, line: int, key: str,
                                           words: str) -> None:
    """An invalid profile raises ProfileError naming the file, the line and the key."""
    path = write(tmp_path, GOOD + extra)
    with pytest.raises(ProfileError) as info:
        load_fleet(path)
    err = info.value
    assert isinstance(err, ConfigError) and isinstance(err, ValueError)
    assert (err.path, err.line, err.key) == (str(path), line, key)
    assert words in str(err) and str(err).startswith(f"{path}:{line}: {key}: ")


def test_bad_money_and_oversell_without_stock(tmp_path: Path) -> None:
    """Money with three places and oversell without stock are refused with the fix."""
    path = write(tmp_path, GOOD.replace('"0.90"', '"0.905"'))
    with pytest.raises(ProfileError, match=r"products\[0\].price: .*two decimal places"):
        load_fleet(path)
    path = write(tmp_path, GOOD.replace('price: "0.90"}', 'price: "0.90", oversell_units: 3}'))
    with pytest.raises(ProfileError, match="needs a finite stock"):
        load_fleet(path)


def test_supplier_names_and_keys_unique(tmp_path: Path) -> None:
    """Supplier names must be URL-safe and api_keys distinct."""
    path = write(tmp_path, GOOD.replace("  a:\n", "  Bad Name:\n"))
    with pytest.raises(ProfileError, match="URL path segment"):
        load_fleet(path)
    second = GOOD.split("suppliers:\n")[1].replace("  a:", "  b:")
    path = write(tmp_path, GOOD + second)
    with pytest.raises(ProfileError, match=r"suppliers.b.api_key: another supplier"):
        load_fleet(path)


def test_start_simulator_reports_stderr(tmp_path: Path) -> None:
    """A simulator that cannot start raises SimulatorStartError carrying its stderr."""
    path = write(tmp_path, GOOD + "    bogus: 1\n")
    with pytest.raises(SimulatorStartError, match=r"exited.*fleet.yaml:10: suppliers.a.bogus"):
        start_simulator(path, timeout_s=20)


def test_demo_fleet_serves_every_supplier() -> None:
    """scenarios/fleet-demo.yaml loads, has six suppliers with a direct product, and serves."""
    fleet = load_fleet(DEMO)
    assert len(fleet.suppliers) >= 6
    assert any(p.kind == "direct" for s in fleet.suppliers.values() for p in s.products)
    with start_simulator(DEMO, seed=3) as sim, httpx.Client(trust_env=False) as http:
        assert sim.truth()["seed"] == 3
        for name, profile in fleet.suppliers.items():
            path = f"/suppliers/{name}/v1/products"
            headers = signed_headers(profile.api_key, profile.secret, "GET", path, b"")
            response = http.get(sim.url + path, headers=headers)
            assert response.status_code == 200, name
            skus = [p["sku"] for p in response.json()["products"]]
            assert skus == [p.sku for p in profile.products]
        assert sim.supplier_url("acme").endswith("/suppliers/acme")
        assert json.loads(http.get(sim.url + "/_sim/truth").text)["suppliers"].keys() == \
            fleet.suppliers.keys()


def test_package_exports_are_sorted_and_real() -> None:
    """harness.simulator's ``__all__`` is sorted and every name exists."""
    import harness.simulator as pkg

    assert pkg.__all__ == sorted(pkg.__all__)
    assert all(hasattr(pkg, name) for name in pkg.__all__)
