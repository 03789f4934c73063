"""trialbench check: SLA loading, threshold rules, regressions, JUnit/Markdown, exit codes."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped
from scipy import stats

from harness.check.evaluate import (
    REGRESSION_METRICS,
    CheckResult,
    apply_holm,
    check_runs,
    judge_threshold,
    regression_check,
)
from harness.check.junit import junit_xml
from harness.check.metrics import METRICS, Measure
from harness.check.sla import SlaConfig, SlaError, Threshold, load_sla
from harness.check.stats import quantile_interval
from harness.check.summary import markdown
from harness.demo import fleet_env
from harness.drivers.base import Failure as Failure_
from harness.errors import ScenarioError
from harness.results import load_runs
from harness.scenario import parse_scenario
from harness.simulator.process import start_simulator
from harness.simulator.profiles import load_fleet

PROFILE = """    api_key: x-key
    secret: x-secret
    balance: "100000.00"
    products:
      - {sku: card-100, name: Card 100, kind: card, face_value: "100.00", price: "90.00",
         serial_prefix: XX}
    delivery: {median_ms: 40, sigma: 0.3, sync_share: 0.3, processing_after_ms: 5}
"""
SCENARIO = """name: check-pair
seed: 3
issuer: {base_url: "${TRIALBENCH_SIM_URL}/issuer", api_key: "${TRIALBENCH_DEMO_ISSUER_API_KEY}"}
suppliers:
  - name: x
    base_url: ${TRIALBENCH_SIM_URL}/suppliers/x
    credentials: {api_key: "${TRIALBENCH_DEMO_X_API_KEY}", secret: "${TRIALBENCH_DEMO_X_SECRET}"}
    products: [{sku: card-100, face_value: "100.00", sale_price: "99.00"}]
trial:
  orders_per_supplier: 20
  quantity: 2
  concurrency: 8
  deadline_s: 2
  delivery: poll
  poll: {initial_interval_s: 0.05, max_interval_s: 0.3, backoff_factor: 1.5}
  unknown_outcome_window_s: 2
  after_sales: {refund_unused: 0, refund_bad_codes: false}
  redeem_sample: 0
  spending_cap: 10000
sla:
  all:
    - oversold_orders == 0
    - {expr: within_sla_rate > 0.5, min_samples: 20}
  margins: {delivery_p50_s: 1.0}   # loopback timings on a busy shared CI box drift more
"""


def _fleet(tmp: Path, name: str, extra: str = "") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"seed: 11\nissuer: {{api_key: i-key}}\nsuppliers:\n  x:\n{PROFILE}{extra}")
    return path


def _trial(fleet: Path, scenario: Path, results: Path) -> Path:
    from harness.run.trial import run_trial

    with start_simulator(fleet, seed=5) as sim:
        env = {**os.environ, **fleet_env(load_fleet(fleet), sim.url)}
        return run_trial(scenario, results_root=results, env=env, show_progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Two short trials of the same supplier with the same seed, and one where its profile
    was degraded (half its codes never minted)."""
    tmp = tmp_path_factory.mktemp("check")
    scenario = tmp / "scenario.yaml"
    scenario.write_text(SCENARIO)
    good = _fleet(tmp, "good")
    bad = _fleet(tmp, "bad", "    codes: {not_minted: 0.5}\n")
    yield {"a": _trial(good, scenario, tmp / "r"), "b": _trial(good, scenario, tmp / "r"),
           "bad": _trial(bad, scenario, tmp / "r")}


def test_same_seed_rerun_passes(runs: dict[str, Path]) -> None:
    """A rerun with the same seed raises no regression and meets the scenario's SLA: exit 0."""
    report = check_runs([runs["b"]], baseline_dirs=[runs["a"]])
    assert report.exit_code == 0, [r for r in report.results if r.status != "pass"]
    assert any(r.layer == "regression" and r.status == "pass" for r in report.results)
    assert any(r.layer == "threshold" and r.status == "pass" for r in report.results)


def test_degraded_supplier_fails_and_is_named_everywhere(
        runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A degraded run exits 1 naming the supplier and metric on the terminal, in the JUnit
    file (read with junitparser) and in the Markdown summary."""
    from harness.cli import main

    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    code = main(["check", str(runs["bad"]), "--baseline", str(runs["a"]), "--junit", str(junit),
                 "--summary", str(summary), "--lang", "en"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "x validity_rate" in out
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(junit))}
    failed = [case for case in suites["x"] if any(isinstance(r, Failure) for r in case.result)]
    assert any("validity_rate" in case.name and "baseline 1 " in case.result[0].message
               for case in failed)
    text = summary.read_text()
    assert "x validity_rate" in text and "REGRESSION" in text


def test_threshold_without_samples_is_skipped_not_passed(runs: dict[str, Path]) -> None:
    """A threshold on a metric the run has no samples for (no burst) is skipped and
    reported; with nothing else to judge, check exits 3, never 0."""
    sla = SlaConfig.model_validate({"all": ["burst_error_rate < 0.02"]})
    report = check_runs([runs["a"]], sla=sla)
    (result,) = [r for r in report.results if r.layer == "threshold"]
    assert (result.status, result.reason) == ("skipped", "no_samples")
    assert report.exit_code == 3
    assert "no samples for burst_error_rate" in markdown(report)
    cases = [c for s in JUnitXml.fromstring(junit_xml(report)) for c in s]
    assert any(isinstance(r, Skipped) for c in cases for r in c.result)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_supplier_exits_3(tmp_path: Path) -> None:
    """A trial against a port nothing listens on fails its orders at once as never sent (no
    unknown outcome to resolve), and check judges it 'cannot be judged' (exit 3) with a JUnit
    error, not a pass."""
    from harness.run.trial import run_trial

    scenario = tmp_path / "dead.yaml"
    scenario.write_text(SCENARIO.replace("${TRIALBENCH_SIM_URL}",
                                         f"http://127.0.0.1:{closed_port()}")
                        .replace("orders_per_supplier: 20", "orders_per_supplier: 2")
                        .replace("unknown_outcome_window_s: 2",
                                 "unknown_outcome_window_s: 0.3\n  request_timeout_s: 1"))
    env = {**os.environ, "TRIALBENCH_DEMO_X_API_KEY": "k", "TRIALBENCH_DEMO_X_SECRET": "s",
           "TRIALBENCH_DEMO_ISSUER_API_KEY": "i"}
    started = time.monotonic()
    run_dir = run_trial(scenario, results_root=tmp_path / "r", env=env, show_progress=False)
    orders = load_runs([run_dir], allow_partial=True).orders
    # a refused connection is "not sent": failed at once, never asked about as unknown
    assert set(orders["resolution"]) == {"refused:not_sent:ConnectError"}
    assert set(orders["resolve_gets"]) == {0}
    assert time.monotonic() - started < 15
    report = check_runs([run_dir])
    assert report.exit_code == 3
    errors = [c for s in JUnitXml.fromstring(junit_xml(report)) for c in s
              if any(isinstance(r, Error) for r in c.result)]
    assert errors


def test_typo_in_metric_fails_at_load_with_did_you_mean(tmp_path: Path) -> None:
    """A misspelt metric in an SLA file or a scenario's sla: is a load error naming the file,
    the line and the closest metric."""
    path = tmp_path / "sla.yaml"
    path.write_text("all:\n  - within_sla_rate > 0.9\n  - delivry_p95_s < 1800\n")
    with pytest.raises(SlaError, match=r"sla.yaml:3: all\[1\].*did you mean 'delivery_p95_s'"):
        load_sla(path)
    path.write_text("sla:\n  all: ['validity_rate => 0.9']\n")
    with pytest.raises(SlaError, match=r"sla.yaml:2: .*write 'metric op number'"):
        load_sla(path)
    data = {"name": "t", "suppliers": [{
        "name": "a", "base_url": "http://127.0.0.1:1/a",
        "credentials": {"api_key": "${K}", "secret": "${K}"},
        "products": [{"sku": "c", "face_value": "1", "sale_price": "1"}]}],
        "sla": {"suppliers": {"a": ["validty_rate >= 0.99"]}}}
    with pytest.raises(ScenarioError, match="did you mean 'validity_rate'"):
        parse_scenario(data, {"K": "x"})
    data["sla"] = {"suppliers": {"b": ["validity_rate >= 0.99"]}}
    with pytest.raises(ScenarioError, match="supplier 'b' is not in suppliers"):
        parse_scenario(data, {"K": "x"})


def test_rates_are_judged_on_their_interval() -> None:
    """20 of 20 does not show a rate above 0.95 (inconclusive, not a pass), 12 of 20 shows it
    is below (breach), and a zero-tolerance rule is judged on the count."""
    def judge(expr: str, k: int, n: int) -> str:
        result = judge_threshold("s", Threshold(expr=expr), Measure("m", k / n, n, k))
        return f"{result.status}/{result.reason}"

    assert judge("within_sla_rate > 0.95", 20, 20) == "skipped/inconclusive"
    assert judge("within_sla_rate > 0.95", 12, 20) == "fail/breach"
    assert judge("within_sla_rate > 0.9", 300, 300) == "pass/met"
    assert judge("refund_credited_rate >= 1", 5, 5) == "pass/met"
    assert judge("refund_credited_rate >= 1", 4, 5) == "fail/breach"
    assert judge("validity_rate >= 0.99", 5, 10) == "skipped/too_few"


def test_refused_connection_is_not_an_unknown_outcome() -> None:
    """A write the transport never sent (connection refused) bought nothing; any other
    missing answer leaves the outcome unknown."""
    assert not Failure_("not_sent:ConnectError", 0).outcome_unknown
    assert Failure_("connect_error:ReadError", 0).outcome_unknown
    assert Failure_("timeout", 0).outcome_unknown


def test_percentile_interval_needs_enough_orders() -> None:
    """A p95 from 20 orders has no upper bound, so '< x' cannot pass on it."""
    samples = np.random.default_rng(0).lognormal(0, 0.5, 20)
    assert quantile_interval(samples, 0.95)[1] == float("inf")


# ---------------------------------------------------------------- statistics by simulation

def _supplier(rng: np.random.Generator, *, slow: float = 1.0, bad: float = 0.0,
              n_burst: int = 2000, n_codes: int = 1000) -> dict[str, Measure]:
    """Measures of one supplier drawn from fixed distributions (the project's shapes)."""
    delivery = rng.lognormal(np.log(0.5), 0.6, n_burst) * slow
    accept = rng.lognormal(np.log(0.05), 0.4, n_burst) * slow
    out = {}
    for name, spec in METRICS.items():
        if spec.kind == "quantile":
            s = accept if name.startswith("acceptance") else delivery
            out[name] = Measure(name, float(np.quantile(s, spec.quantile)), len(s), samples=s)
    for name, p, n in (("within_sla_rate", 0.97, 200), ("success_rate", 0.98, 200),
                       ("validity_rate", 0.995 - bad, n_codes),
                       ("burst_error_rate", 0.01, n_burst), ("refund_ok_rate", 0.9, 30),
                       ("oversold_rate", 0.005, 200)):
        k = int(rng.binomial(n, p))
        out[name] = Measure(name, k / n, n, k)
    out["hidden_fee_per_order"] = Measure("hidden_fee_per_order", 0.0, 200)
    return out


def _compare(old: dict[str, Measure], new: dict[str, Measure]) -> list[CheckResult]:
    sla = SlaConfig()
    results = [regression_check("s", m, old[m], new[m], sla) for m in REGRESSION_METRICS]
    apply_holm(results, sla.alpha)
    return results


def test_unchanged_reruns_raise_few_false_alarms() -> None:
    """Over 30 A/A comparisons (same distributions), comparisons with any regression stay
    within what alpha (family-wise, Holm) allows (the closing note has N=1000)."""
    rng = np.random.default_rng(12)
    trials = 30
    alarms = sum(any(r.status == "fail" for r in _compare(_supplier(rng), _supplier(rng)))
                 for _ in range(trials))
    assert alarms <= stats.binom.ppf(0.999, trials, 0.01)


def test_slower_bursts_and_bad_codes_are_caught() -> None:
    """A supplier 20% slower in bursts is flagged on a latency metric, one given 5% bad codes
    on validity (2,000 codes, as a burst checks), each in at least 9 of 10 comparisons."""
    rng = np.random.default_rng(13)
    slow_hits = codes_hits = 0
    for _ in range(10):
        base = _supplier(rng)
        slow = {r.metric for r in _compare(base, _supplier(rng, slow=1.2)) if r.status == "fail"}
        slow_hits += bool(slow & {"delivery_p95_s", "delivery_p50_s", "acceptance_p95_s"})
        bad = {r.metric for r in _compare(base, _supplier(rng, bad=0.05, n_codes=2000))
               if r.status == "fail"}
        codes_hits += "validity_rate" in bad
    assert slow_hits >= 9 and codes_hits >= 9


def test_check_with_history_compares_with_the_last_green_run_and_records(
        runs: dict[str, Path], tmp_path: Path) -> None:
    """With --history, check takes the history's run folder as the baseline, records each
    checked run in index.jsonl (green or red), and a red run is never the next baseline."""
    import shutil

    from harness.check.command import run_check
    from harness.check.history import read_history

    history = tmp_path / "history"
    shutil.copytree(runs["a"], history / "runs" / runs["a"].name)
    assert run_check([str(runs["bad"])], history=str(history)) == 1
    assert run_check([str(runs["b"])], history=str(history)) == 0
    entries = read_history(history)
    status = {e.run_id: e.status for e in entries}
    assert status == {runs["a"].name: "unchecked", runs["b"].name: "green",
                      runs["bad"].name: "red"}
    bad = next(e for e in entries if e.run_id == runs["bad"].name)
    assert bad.suppliers["x"]["validity_rate"] < 1
    report = check_runs([runs["bad"]], history_dir=history)  # newest green run: b
    assert report.baseline_runs == [runs["b"].name]


def test_interrupted_run_cannot_be_judged(runs: dict[str, Path], tmp_path: Path) -> None:
    """A run whose log lacks its finish event is reported as interrupted (a JUnit error) and
    check exits 3, whatever its thresholds would say."""
    import shutil

    run_dir = tmp_path / runs["a"].name
    shutil.copytree(runs["a"], run_dir)
    for shard in run_dir.glob("events*.jsonl"):
        lines = shard.read_text().splitlines(keepends=True)
        shard.write_text("".join(x for x in lines if '"type":"trial_finished"' not in x))
    report = check_runs([run_dir])
    assert report.exit_code == 3
    assert [r.reason for r in report.results] == ["interrupted"]
