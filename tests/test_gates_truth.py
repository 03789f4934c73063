"""Gates against ground truth: a trial on a fleet with each money-losing fault planted on
one supplier (``tests/data/fleet-gates.yaml``, see its header).

One trial of ``tests/data/scenario-gates.yaml`` runs in a subprocess (keeps the trial's
event loop out of pytest; about 25 s), shared by every test here. Every fault must be
gated on its supplier, for its reason, at about its planted size, and on no clean one;
clean and twin (one profile under two names) are an A/A pair inside the run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from harness.analysis import RunAnalysis, analyse_runs
from harness.ranking_config import GATED
from harness.wording import headline, settle_sentences

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent

_RUN = """
import sys
from pathlib import Path
from harness.demo import run_demo
run_demo(fleet_path=Path(sys.argv[1]), scenario_path=Path(sys.argv[2]),
         results_root=Path(sys.argv[3]), show_progress=False)
"""

PLANTED = {  # supplier: (gate kind, planted share, or None where the count is exact)
    "fake": ("fake_codes", 0.2),
    "resold": ("resold_codes", 0.2),
    "dupe": ("duplicate_codes", None),  # 20% of codes after the first copy an earlier one
    "face": ("wrong_face_value_codes", 0.2),
    "phantom": ("phantom_refunds", 0.7),
    "fee": ("hidden_fee", None),
    "oversold": ("oversold_orders", None),
}
CLEAN = ("clean", "twin", "slowref")


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunAnalysis, str]:
    """One ground-truth trial, analysed, and what it printed."""
    root = tmp_path_factory.mktemp("gates")
    result = subprocess.run(
        [sys.executable, "-c", _RUN, str(DATA / "fleet-gates.yaml"),
         str(DATA / "scenario-gates.yaml"), str(root)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in root.iterdir() if (p / "manifest.json").is_file()]
    assert len(runs) == 1
    return analyse_runs(runs), result.stdout


def test_every_planted_fault_is_gated_on_its_supplier(truth: tuple[RunAnalysis, str]) -> None:
    """Each faulty supplier is gated for its planted fault (low validity may join a bad-code
    fault, nothing else does) and its tier is "gated"."""
    table = truth[0].ranking.table.set_index("supplier")
    for name, (kind, _) in PLANTED.items():
        reasons = set(str(table.loc[name, "gate_reasons"]).split("; "))
        assert kind in reasons, (name, reasons)
        assert reasons <= {kind, "low_validity"}, (name, reasons)
        assert table.loc[name, "tier"] == GATED


def test_no_clean_supplier_is_gated(truth: tuple[RunAnalysis, str]) -> None:
    """clean, twin and slowref (slow refunds are scored, not gated) carry no gate finding."""
    found = truth[0].ranking.findings
    assert not found[found["supplier"].isin(CLEAN) & found["gates"].astype(bool)].shape[0]
    table = truth[0].ranking.table.set_index("supplier")
    assert not table.loc[list(CLEAN), "gated"].any()


def test_findings_have_the_planted_size(truth: tuple[RunAnalysis, str]) -> None:
    """Counts sit inside the 99.9% binomial range of the planted share; the fee is 1.50 per
    order to the cent; exactly the 3 oversold orders (6 units beyond a stock of 10) count."""
    found = truth[0].ranking.findings.set_index(["supplier", "kind"])
    for name, (kind, share) in PLANTED.items():
        row = found.loc[(name, kind)]
        if share is not None:
            lo, hi = stats.binom.ppf([0.0005, 0.9995], int(row["n"]), share)
            assert lo <= row["count"] <= hi, (name, row["count"], row["n"])
            # closed: at count 0 or n the Jeffreys bound is 0 or 1 itself (Brown et al.)
            assert row["lo"] <= row["count"] / row["n"] <= row["hi"]
    assert found.loc[("fee", "hidden_fee"), "share"] == pytest.approx(1.50, abs=0.005)
    assert found.loc[("oversold", "oversold_orders"), "count"] == 3
    assert found.loc[("dupe", "duplicate_codes"), "count"] >= 3


def test_gated_suppliers_rank_below_every_clean_one(truth: tuple[RunAnalysis, str]) -> None:
    """A money-losing supplier never outranks an honest one, even with a higher score."""
    table = truth[0].ranking.table.set_index("supplier")
    assert table.loc[list(PLANTED), "rank"].min() > table.loc[list(CLEAN), "rank"].max()
    assert truth[0].ranking.gated == [n for n in table.index if n in PLANTED]


def test_slow_refunds_are_scored_and_named(truth: tuple[RunAnalysis, str]) -> None:
    """slowref's refunds (3.5 s against a 2 s deadline) are a finding and cost it the refunds
    criterion; the clean twins' are in time."""
    table = truth[0].ranking.table.set_index("supplier")
    found = truth[0].ranking.findings.set_index(["supplier", "kind"])
    assert found.loc[("slowref", "slow_refunds"), "count"] == 8
    assert table.loc["slowref", "refunds_estimate"] == 0.0
    assert table.loc["clean", "refunds_estimate"] == table.loc["twin", "refunds_estimate"] == 1.0


def test_a_a_pair_lands_in_one_tier_and_ties(truth: tuple[RunAnalysis, str]) -> None:
    """clean and twin, one profile under two names, share a tier and a tie group, and the
    report says more orders would not split them."""
    analysis = truth[0]
    table = analysis.ranking.table.set_index("supplier")
    assert table.loc["clean", "tier"] == table.loc["twin", "tier"]
    assert table.loc["clean", "tie_group"] == table.loc["twin", "tie_group"]
    assert any("clean" in line and "twin" in line and "alike" in line
               for line in settle_sentences(analysis.ranking))


def test_headline_names_each_gate_with_evidence(truth: tuple[RunAnalysis, str]) -> None:
    """The headline printed by the run (as by ``rank`` and the report) names every gated
    supplier with its evidence."""
    analysis, printed = truth
    text = headline(analysis)
    for name in PLANTED:
        assert f"Gated: {name} (" in text
    assert "undisclosed fee of 1.50 per order" in text
    assert "refunds marked completed but never credited" in text
    assert " ".join(text.split()) in " ".join(printed.split())
