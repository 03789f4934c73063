"""Gates, honest counts and the one verdict, on small hand-built tables (no simulator).

Each money-losing fault is planted on one supplier of a hand-built fleet; the clean
suppliers beside it must stay ungated, and every gated one must rank below every clean one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_metrics import empty, make_codes, make_orders, make_refunds, make_suppliers

from harness.analysis import RunAnalysis
from harness.events import error_bucket, format_error_counts, parse_error_counts
from harness.metrics import rate_intervals, supplier_metrics
from harness.ranking import FINDINGS_COLUMNS, rank_suppliers
from harness.ranking_config import GATED, INSUFFICIENT, RankingConfig
from harness.report import render_html
from harness.results import (
    REFUNDS_COLUMNS,
    SUPPLIERS_COLUMNS,
    RunTables,
    build_tables,
    burst_error_text,
    burst_summary,
    write_tables,
)
from harness.run.trial import detectable_rate, print_plan
from harness.scenario import parse_scenario
from harness.wording import (
    above_statements,
    evidence_limits,
    headline,
    order_statement,
    verdict_sentences,
)

CONFIG = RankingConfig(draws=1000)
N = 200  # orders per supplier: enough for tiers on a clean record


def _clean(name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return (make_orders(name, N, amount=9.7), make_codes(name, {"valid": N}),
            make_refunds(name, [("completed", True)] * 10))


def _fleet() -> dict[str, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """Two clean suppliers and one per fault, each fault planted once or a few times."""
    fleet = {name: _clean(name) for name in ("clean", "twin")}
    for name, verdict in (("fake", "not_minted"), ("resold", "resold"),
                          ("dupe", "duplicate"), ("face", "wrong_face_value")):
        orders, _, refunds = _clean(name)
        fleet[name] = (orders, make_codes(name, {"valid": N - 3, verdict: 3}), refunds)
    orders, codes, _ = _clean("phantom")
    fleet["phantom"] = (orders, codes,
                        make_refunds("phantom", [("completed", True)] * 7
                                     + [("completed", False)] * 3))
    oversold = make_orders("oversold", N, amount=9.7, failed=2)  # failed for stock, accepted
    oversold.loc[0, ["state", "codes_delivered"]] = ["partial", 0]
    fleet["oversold"] = (oversold, make_codes("oversold", {"valid": N}),
                         make_refunds("oversold", [("completed", True)] * 10))
    fleet["feeish"] = _clean("feeish")
    return fleet


def _tables(fleet: dict[str, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]],
            suppliers: pd.DataFrame | None = None) -> RunTables:
    return RunTables(
        orders=pd.concat([f[0] for f in fleet.values()], ignore_index=True),
        codes=pd.concat([f[1] for f in fleet.values()], ignore_index=True),
        refunds=pd.concat([f[2] for f in fleet.values()], ignore_index=True),
        suppliers=suppliers if suppliers is not None else empty(SUPPLIERS_COLUMNS),
        manifests=[{"run_id": "run-1", "scenario": {"name": "hand"}}])


def _analysis(tables: RunTables, config: RankingConfig = CONFIG) -> RunAnalysis:
    ranking = rank_suppliers(tables.orders, tables.codes, tables.refunds, tables.suppliers,
                             None, config)
    metrics = rate_intervals(supplier_metrics(tables.orders, tables.codes, tables.refunds,
                                              tables.suppliers,
                                              refund_deadline_s=config.refund_deadline_s))
    return RunAnalysis(run_dirs=[Path("run-1")], tables=tables, config=config, fees={},
                       metrics=metrics.set_index("supplier", drop=False), ranking=ranking)


@pytest.fixture(scope="module")
def fleet_analysis() -> RunAnalysis:
    """The hand-built fleet, with feeish's hidden fee of 0.50 per order in the balance."""
    return _analysis(_tables(_fleet(), make_suppliers("feeish", 0.5 * N, N)))


EXPECTED = {"fake": "fake_codes", "resold": "resold_codes", "dupe": "duplicate_codes",
            "face": "wrong_face_value_codes", "phantom": "phantom_refunds",
            "oversold": "oversold_orders", "feeish": "hidden_fee"}


def test_each_fault_gates_its_supplier_and_no_clean_one(fleet_analysis: RunAnalysis) -> None:
    """Every planted fault gates exactly its supplier, for exactly that reason."""
    table = fleet_analysis.ranking.table.set_index("supplier")
    for name, kind in EXPECTED.items():
        assert table.loc[name, "gate_reasons"] == kind, name
        assert table.loc[name, "tier"] == GATED
    for name in ("clean", "twin"):
        assert not table.loc[name, "gated"] and table.loc[name, "gate_reasons"] == ""
        assert table.loc[name, "tier"] == "gold"


def test_findings_carry_count_share_and_interval(fleet_analysis: RunAnalysis) -> None:
    """Each finding is data: the right count and denominator, a share and its interval."""
    found = fleet_analysis.ranking.findings.set_index(["supplier", "kind"])
    assert list(fleet_analysis.ranking.findings.columns) == list(FINDINGS_COLUMNS)
    fake = found.loc[("fake", "fake_codes")]
    assert (fake["count"], fake["n"]) == (3, N) and fake["lo"] < 3 / N < fake["hi"]
    phantom = found.loc[("phantom", "phantom_refunds")]
    assert (phantom["count"], phantom["n"]) == (3, 10)
    oversold = found.loc[("oversold", "oversold_orders")]
    assert (oversold["count"], oversold["n"]) == (3, N)  # 2 failed for stock, 1 partial
    assert found.loc[("feeish", "hidden_fee"), "share"] == pytest.approx(0.5)
    assert not any(s in ("clean", "twin") for s, _ in found.index)


def test_a_gated_supplier_never_outranks_a_clean_one(fleet_analysis: RunAnalysis) -> None:
    """Every gated supplier ranks below every clean one, in the table, the rank intervals,
    the order statement and the headline, whatever its score."""
    ranking = fleet_analysis.ranking
    table = ranking.table.set_index("supplier")
    worst_clean = table.loc[["clean", "twin"], "rank"].max()
    assert (table.loc[list(EXPECTED), "rank"] > worst_clean).all()
    for name in EXPECTED:
        assert int(table.loc[name, "rank_interval"].split("–")[0]) > 2
    statement = order_statement(ranking)
    chain, gated = statement.split("; gated: ")
    assert set(gated.split(", ")) == set(EXPECTED)
    assert not any(name in chain for name in EXPECTED)
    text = headline(fleet_analysis)
    for name in EXPECTED:
        assert f"Gated: {name} (" in text
    assert "3 of 200 codes unknown to the issuer (fake)" in text
    assert "3 of 10 refunds marked completed but never credited" in text
    assert "an undisclosed fee of 0.50 per order" in text


def test_verdict_says_gated_not_a_tier(fleet_analysis: RunAnalysis) -> None:
    """A gated supplier's sentence starts "is gated" with its evidence, never a tier."""
    sentences = verdict_sentences(fleet_analysis)
    assert sentences["fake"].startswith("fake is gated: 3 of 200 codes unknown to the issuer")
    assert sentences["clean"].startswith("clean is gold")
    for name in EXPECTED:
        assert not any(t in sentences[name].split(":")[0] for t in ("gold", "silver", "bronze"))


def test_gate_thresholds_are_settable() -> None:
    """``gates.fake_codes: 4`` lets 3 fakes through; 0 turns the gate off; the validity floor
    still applies to its own evidence."""
    tables = _tables({"clean": _clean("clean"), "fake": _fleet()["fake"]})
    loose = RankingConfig(draws=1000, gates={"fake_codes": 4})
    assert not _analysis(tables, loose).ranking.table.set_index("supplier").loc["fake", "gated"]
    off = RankingConfig(draws=1000, gates={"fake_codes": 0})
    found = _analysis(tables, off).ranking.findings
    assert not found["gates"].any() and list(found["kind"]) == ["fake_codes"]


def test_identical_clean_suppliers_tie_and_the_tie_has_a_settle_line(
        fleet_analysis: RunAnalysis) -> None:
    """clean and twin tie; the report says more orders would not split them (alike)."""
    ranking = fleet_analysis.ranking
    assert sorted(ranking.groups[0]) == ["clean", "twin"]
    limits = evidence_limits(fleet_analysis)
    assert any("would not separate" in line and "perform alike" in line for line in limits)


def test_price_alone_never_decides() -> None:
    """Burst rows only (no codes, no refunds, no trial): cost and load errors carry too
    little of the policy's weight, so no tier and no "above", and the headline says why."""
    orders = pd.concat([make_orders("cheap", 300, mode="burst", amount=9.0),
                        make_orders("dear", 300, mode="burst", amount=9.9)], ignore_index=True)
    tables = RunTables(orders=orders, codes=make_codes("x", {}), refunds=empty(REFUNDS_COLUMNS),
                       suppliers=empty(SUPPLIERS_COLUMNS), manifests=[{"scenario": {}}])
    analysis = _analysis(tables)
    ranking = analysis.ranking
    assert not ranking.decided
    assert set(ranking.table["tier"]) == {INSUFFICIENT}
    assert above_statements(ranking, 0.95) == [] and len(ranking.groups) == 1
    assert ranking.table.loc[0, "missing_criteria"] == "sla_share, validity, refunds"
    assert headline(analysis).startswith("No verdict")
    assert ranking.beats.loc["cheap", "dear"] > 0.95  # the price gap is real, yet decides nothing


def test_slow_refunds_lower_the_refunds_criterion_and_are_named() -> None:
    """Refunds slower than refund_deadline_s count against the refunds criterion and the
    verdict names them; they do not gate."""
    slow = make_refunds("slow", [("completed", True)] * 10)  # each took 30 s
    fast = make_refunds("fast", [("completed", True)] * 10).assign(latency_s=1.0)
    tables = _tables({"slow": (make_orders("slow", N), make_codes("slow", {"valid": N}), slow),
                      "fast": (make_orders("fast", N), make_codes("fast", {"valid": N}), fast)})
    analysis = _analysis(tables, RankingConfig(draws=1000, refund_deadline_s=10))
    table = analysis.ranking.table.set_index("supplier")
    assert table.loc["slow", "refunds_estimate"] == 0.0 and table.loc["fast",
                                                                      "refunds_estimate"] == 1.0
    assert not table.loc["slow", "gated"]
    assert "10 of 10 refunds slower than the 10 s refund deadline" in \
        verdict_sentences(analysis)["slow"]


def test_blocked_orders_are_counted_and_said() -> None:
    """Orders the spending cap blocked are counted apart from those sent, and named."""
    orders = make_orders("capped", 40, skipped=25)
    tables = _tables({"capped": (orders, make_codes("capped", {"valid": 15}),
                                 empty(REFUNDS_COLUMNS))})
    analysis = _analysis(tables)
    row = analysis.metrics.loc["capped"]
    assert (row["orders_skipped"], row["sla_share_n"]) == (25, 15)
    assert "25 orders not sent: the spending cap blocked them" in \
        verdict_sentences(analysis)["capped"]


def test_error_bucket_names_every_class() -> None:
    """Every failed request gets a class; the catch-all names its kind; counts round-trip."""
    assert error_bucket("http_402_insufficient_balance", 402) == "balance"
    assert error_bucket("transport_error:ConnectError", 0) == "connect"
    assert error_bucket("http_404_order_not_found", 404) == "not_found"
    assert error_bucket("http_409_refund_not_allowed", 409) == "refused"
    assert error_bucket("http_409_out_of_stock", 409) == "out_of_stock"
    assert error_bucket("weird", 99) == "other(weird)"
    counts = {"503": 2, "other(weird)": 1, "balance": 3}
    text = format_error_counts(counts)
    assert text == "503:2 balance:3 other(weird):1"
    assert parse_error_counts(text) == counts and format_error_counts({}) == "-"


def _write_log(run_dir: Path, events: list[dict[str, object]]) -> None:
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_dir.name,
                                                       "scenario": {"name": "log"}}))
    with (run_dir / "events.jsonl").open("w") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")


def test_refund_latency_runs_from_the_logged_request(tmp_path: Path) -> None:
    """An instant refund's latency is measured from its refund_attempt (written before the
    request), so it is never negative; supplier errors leave out 404s to the harness's GETs."""
    key = {"supplier": "s", "client_order_id": "o1"}
    _write_log(tmp_path / "run", [
        {"t": 100.0, "type": "trial_started"},
        {"t": 100.0, "type": "order_planned", **key, "mode": "trial", "sku": "c",
         "quantity": 1, "intended_at": 100.0, "deadline_s": 10, "listed_price": "9",
         "sale_price": "10", "face_value": "10"},
        {"t": 100.1, "type": "order_error", **key, "kind": "http_503", "status": 503,
         "phase": "place"},
        {"t": 100.2, "type": "order_error", **key, "kind": "http_404", "status": 404,
         "phase": "resolve"},
        {"t": 101.0, "type": "refund_attempt", **key, "reason": "unused"},
        {"t": 101.5, "type": "refund_requested", **key, "reason": "unused", "status": 201,
         "state": "completed", "amount": "9"},
        {"t": 101.5, "type": "refund_final", **key, "state": "completed", "final": True,
         "amount": "9", "resolved_seen_at": 101.4, "credited_amount": "9", "credited": True},
        {"t": 102.0, "type": "trial_finished"},
    ])
    tables = build_tables(tmp_path / "run")
    refund = tables.refunds.iloc[0]
    assert refund["latency_s"] == pytest.approx(0.4)
    order = tables.orders.iloc[0]
    assert (order["errors"], order["supplier_errors"]) == (2, 1)
    assert order["error_classes"] == "503:1 not_found:1"


def test_every_burst_error_class_is_in_the_timeline(tmp_path: Path) -> None:
    """402s and refused connections land in the timeline (err_balance, err_connect): the
    timeline's error columns and the burst summary count every failed request the log
    holds, by the same classes."""
    key = {"supplier": "s", "client_order_id": "b1"}
    _write_log(tmp_path / "burst", [
        {"t": 100.0, "type": "burst_started", "t0": 100.0, "scheduled_per_second": {"s": [1]}},
        {"t": 100.0, "type": "order_planned", **key, "mode": "burst", "sku": "c",
         "quantity": 1, "intended_at": 100.0, "deadline_s": 10, "listed_price": "9",
         "sale_price": "10", "face_value": "10"},
        {"t": 100.1, "type": "order_error", **key, "kind": "http_402", "status": 402,
         "phase": "place"},
        {"t": 100.2, "type": "order_error", **key, "kind": "connect", "status": 0,
         "phase": "resolve"},
        {"t": 100.3, "type": "order_error", **key, "kind": "x", "status": 99, "phase": "place"},
        {"t": 101.0, "type": "burst_finished"},
    ])
    tables = build_tables(tmp_path / "burst")
    timeline = tables.timeline
    errors = timeline[[c for c in timeline.columns if c.startswith("err_")]].sum()
    assert errors.sum() == 3
    assert (errors["err_balance"], errors["err_connect"], errors["err_other"]) == (1, 1, 1)
    write_tables(tmp_path / "burst", tables)
    summary = burst_summary(tmp_path / "burst").set_index("supplier")
    assert summary.loc["s", "errors"] == "connect:1 balance:1 other(x):1"  # the live view's too
    assert summary.loc["s", "supplier errors"] == 3
    row = burst_summary(tmp_path / "burst").to_dict("records")[0]
    assert burst_error_text(row) == "connect:1 balance:1 other(x):1"


def test_rank_table_never_shows_a_tier_for_a_gated_supplier(
        fleet_analysis: RunAnalysis) -> None:
    """The tier column is "gated" exactly where a gate holds."""
    table = fleet_analysis.ranking.table
    assert ((table["tier"] == GATED) == table["gated"].astype(bool)).all()


def test_dry_run_says_what_the_plan_detects_and_warns_past_the_cap(
        capsys: pytest.CaptureFixture[str]) -> None:
    """20 orders of one card detect a bad-code rate of 13.9% with 95% probability, and a
    worst case past the cap is a warning, not a clamped figure."""
    data = {"name": "x", "suppliers": [{
        "name": "a", "base_url": "http://127.0.0.1:1/a",
        "credentials": {"api_key": "${K}", "secret": "${S}"},
        "products": [{"sku": "c", "face_value": "100.00", "sale_price": "99.00"}]}],
        "trial": {"orders_per_supplier": 20, "quantity": 1, "spending_cap": 1000, "deadline_s": 5,
                  "after_sales": {"refund_unused": 5}}}
    print_plan(parse_scenario(data, {"K": "k", "S": "s"}))
    out = capsys.readouterr().out
    assert "a bad-code rate of 13.9% or more (at least 20 codes" in out
    assert "a phantom-refund rate of 45.1% or more (5 refunds" in out
    assert "warning: the worst case 2000.00 exceeds the spending cap 1000" in out
    assert detectable_rate(20) == pytest.approx(1 - 0.05 ** (1 / 20))


def test_a_fee_that_unknown_orders_explain_does_not_gate() -> None:
    """A balance gap no larger than what orders left unknown may hold is reported, not
    gated; the same gap with every order settled gates."""
    orders = make_orders("murky", N, amount=9.7)
    orders.loc[:9, ["state", "amount"]] = ["unknown", 0.0]  # 10 orders at 9.70 may be held
    tables = _tables({"murky": (orders, make_codes("murky", {"valid": N}),
                                make_refunds("murky", [("completed", True)] * 10))},
                     make_suppliers("murky", 90.0, N))
    found = _analysis(tables).ranking.findings.set_index("kind")
    assert found.loc["hidden_fee", "share"] == pytest.approx(90.0 / N)
    assert not found.loc["hidden_fee", "gates"]
    settled = _tables({"murky": _clean("murky")}, make_suppliers("murky", 90.0, N))
    assert _analysis(settled).ranking.findings.set_index("kind").loc["hidden_fee", "gates"]


def test_report_shows_load_behaviour_per_supplier() -> None:
    """With burst rows the report's load table gives each supplier its acceptance under
    load, oversold share and failed requests by class."""
    burst = make_orders("busy", 300, mode="burst", amount=9.7, unaccepted=30)
    burst["error_classes"] = ["503:1"] * 30 + ["-"] * 270
    burst["supplier_errors"] = [1] * 30 + [0] * 270
    burst.loc[:29, "supplier_order_id"] = ""  # never accepted: no supplier id
    trial_orders = make_orders("busy", N, amount=9.7)
    tables = _tables({"busy": (pd.concat([trial_orders, burst], ignore_index=True),
                               make_codes("busy", {"valid": N}),
                               make_refunds("busy", [("completed", True)] * 10))})
    analysis = _analysis(tables)
    html = render_html(analysis, figs={})
    load = html[html.index("<table id=load>"):]
    load = load[:load.index("</table>")]
    assert "270/300 [0.86, 0.93]" in load and "0/270" in load and "503:30" in load
