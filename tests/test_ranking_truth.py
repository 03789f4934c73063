"""Ranking against ground truth: a trial on a fleet whose order is known by construction.

``tests/data/fleet-rank.yaml`` plants best = twin > mid > bad (see its header); one trial of
``tests/data/scenario-rank.yaml`` runs against it in a subprocess (keeps the trial's event
loop and any gevent out of pytest), shared by every test here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.analysis import (
    RunAnalysis,
    analyse_runs,
    fees_from_manifests,
    ranking_config_from_manifest,
)
from harness.errors import ScenarioError
from harness.ranking_config import RankingConfig
from harness.scenario import load_scenario, parse_scenario

pytestmark = pytest.mark.serial  # ground-truth trials whose latencies decide ties: run alone

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent

_RUN = """
import sys
from pathlib import Path
from harness.demo import run_demo
run_demo(fleet_path=Path(sys.argv[1]), scenario_path=Path(sys.argv[2]),
         results_root=Path(sys.argv[3]), show_progress=False)
"""


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> RunAnalysis:
    """One ground-truth trial (about 10 s), analysed."""
    root = tmp_path_factory.mktemp("truth")
    result = subprocess.run(
        [sys.executable, "-c", _RUN, str(DATA / "fleet-rank.yaml"),
         str(DATA / "scenario-rank.yaml"), str(root)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in root.iterdir() if (p / "manifest.json").is_file()]
    assert len(runs) == 1
    return analyse_runs(runs)


def test_true_order_where_separable(truth: RunAnalysis) -> None:
    """The tie groups are exactly {best, twin} > {mid}, with bad gated below them."""
    groups = [sorted(group) for group in truth.ranking.groups]
    assert groups == [["best", "twin"], ["mid"]]
    assert truth.ranking.gated == ["bad"]


def test_identical_suppliers_tie(truth: RunAnalysis) -> None:
    """Two suppliers with the same profile are never called apart (P near one half)."""
    p = float(truth.ranking.beats.loc["best", "twin"])
    assert 0.2 < p < 0.8
    table = truth.ranking.table.set_index("supplier")
    assert table.loc["best", "tie_group"] == table.loc["twin", "tie_group"]


def test_dominant_pair_beats_the_rest(truth: RunAnalysis) -> None:
    """best and twin beat mid, and mid beats bad, each with P ≥ 0.95."""
    beats = truth.ranking.beats
    for a, b in (("best", "mid"), ("twin", "mid"), ("mid", "bad"), ("best", "bad")):
        assert beats.loc[a, b] >= 0.95, (a, b, beats.loc[a, b])


def test_bad_codes_are_gated(truth: RunAnalysis) -> None:
    """bad is gated for its fake and resold codes and low validity: its tier is "gated"."""
    row = truth.ranking.table.set_index("supplier").loc["bad"]
    assert row["gated"]
    assert {"fake_codes", "resold_codes", "low_validity"} <= set(row["gate_reasons"].split("; "))
    assert row["tier"] == "gated"
    assert not truth.ranking.table.set_index("supplier").loc[["best", "twin", "mid"],
                                                              "gated"].any()


def test_scenario_ranking_section_is_used(truth: RunAnalysis) -> None:
    """The run's scenario ``ranking:`` section (seed 1) and its fees reach the ranking."""
    assert truth.config.seed == 1
    assert truth.fees["best"]["platform_pct"] == 1.0


def test_manifest_loaders_defaults_and_precedence() -> None:
    """No ``ranking:`` gives the defaults; fees come from the first manifest naming a supplier."""
    assert ranking_config_from_manifest({"scenario": {"ranking": None}}) == RankingConfig()
    assert ranking_config_from_manifest({}) == RankingConfig()
    custom = ranking_config_from_manifest(
        {"scenario": {"ranking": {"anchors": {"cost": [[0.95, 1], [1.0, 0]]}}}})
    assert custom.anchors.cost == [(0.95, 1.0), (1.0, 0.0)]
    first = {"scenario": {"suppliers": [{"name": "a", "fees": {"platform_pct": "2.5"}}]}}
    second = {"scenario": {"suppliers": [{"name": "a", "fees": {"platform_pct": "9"}},
                                         {"name": "b", "fees": {}}]}}
    assert fees_from_manifests([first, second]) == {"a": {"platform_pct": 2.5}, "b": {}}


def test_ranking_section_errors_are_located() -> None:
    """A bad key under ``ranking:`` is a ScenarioError naming the key path."""
    data = {"name": "x", "suppliers": [{
        "name": "a", "base_url": "http://127.0.0.1:1/a",
        "credentials": {"api_key": "${K}", "secret": "${S}"},
        "products": [{"sku": "c", "face_value": "1.00", "sale_price": "1.00"}]}],
        "ranking": {"weights": {"speed": 1}}}
    with pytest.raises(ScenarioError, match=r"ranking\.weights\.speed"):
        parse_scenario(data, {"K": "k", "S": "s"})


def test_demo_ranking_section_states_the_defaults() -> None:
    """scenarios/demo.yaml's ``ranking:`` writes out the defaults but the scaled refund
    deadline, as its comment says: keep that true."""
    env = {name: "x" for name in _demo_variables()}
    env["TRIALBENCH_SIM_URL"] = "http://127.0.0.1:1"
    scenario = load_scenario(ROOT / "scenarios" / "demo.yaml", env)
    assert scenario.ranking == RankingConfig(refund_deadline_s=3)


def _demo_variables() -> list[str]:
    from harness.demo import env_name

    names = ["TRIALBENCH_DEMO_ISSUER_API_KEY"]
    for supplier in ("acme", "slowpoke", "shady", "feeder", "flaky", "tiny"):
        names += [env_name(supplier, "API_KEY"), env_name(supplier, "SECRET")]
    return names
