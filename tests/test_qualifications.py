"""Supplier qualifications in scenarios, and the findings the analysis makes of them."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from harness.analysis import qualification_findings
from harness.errors import ScenarioError
from harness.scenario import parse_scenario
from harness.wording import finding_short, finding_text

TODAY = date(2026, 11, 27)
ENV = {"K": "key"}


def _scenario(**top: Any) -> dict[str, Any]:
    supplier = {"name": "xingchen", "display_name": "星辰卡盟",
                "base_url": "http://127.0.0.1:9/suppliers/x",
                "credentials": {"api_key": "${K}", "secret": "${K}"},
                "products": [{"sku": "steam-50", "face_value": 50, "sale_price": 52},
                             {"sku": "qq-30", "face_value": 30, "sale_price": 31}],
                "qualifications": {
                    "registration_number": "91330100MA2XXXXX0X",
                    "icp_filing": "浙ICP备12345678号", "platform_grade": "gold",
                    "authorisations": [{"brand": "Steam", "products": ["steam-50"],
                                        "expires": "2026-12-20"}]}}
    return {"name": "q", "suppliers": [supplier], **top}


def _findings(scenario: Any, today: date = TODAY) -> list[dict[str, Any]]:
    manifest = scenario.manifest_dict()
    quals = {s["name"]: s["qualifications"] for s in manifest["suppliers"]}
    sold = {s.name: [p.sku for p in s.products] for s in scenario.suppliers}
    checks = scenario.qualification_checks
    return qualification_findings(quals, sold, today=today, peak_date=scenario.peak_date,
                                  window_days=checks.expiry_window_days, gates=checks.gate)


def test_qualifications_and_display_name_load() -> None:
    """A scenario carries a display name in any script, the paperwork and a peak date."""
    scenario = parse_scenario(_scenario(peak_date="2026-12-31"), ENV)
    supplier = scenario.suppliers[0]
    assert (supplier.name, supplier.display_name) == ("xingchen", "星辰卡盟")
    assert supplier.qualifications.authorisations[0].expires == date(2026, 12, 20)
    assert supplier.qualifications.platform_grade == "gold"
    assert scenario.peak_date == date(2026, 12, 31)
    assert scenario.qualification_checks.expiry_window_days == 60


def test_authorisation_expiring_before_the_peak_is_flagged() -> None:
    """Steam's authorisation ends 2026-12-20, before the 12-31 peak: flagged (and gating
    when the scenario says so); qq-30 has no authorisation at all: flagged as missing."""
    data = _scenario(peak_date="2026-12-31",
                     qualification_checks={"gate": ["authorisation_lapses_before_peak"]})
    found = {f["kind"]: f for f in _findings(parse_scenario(data, ENV))}
    lapse = found["authorisation_lapses_before_peak"]
    assert lapse["gates"] and lapse["brand"] == "Steam" and lapse["days_left"] == 23
    assert lapse["products"] == "steam-50" and lapse["peak_date"] == "2026-12-31"
    missing = found["missing_authorisation"]
    assert not missing["gates"] and missing["products"] == "qq-30"
    assert "2026-12-20" in finding_text(lapse, "en") and "before the peak" in \
        finding_text(lapse, "en")
    assert "早于大促日 2026-12-31" in finding_text(lapse, "zh")
    assert finding_short(missing, "zh") == "缺少品牌授权：qq-30"


def test_window_and_expiry_without_a_peak() -> None:
    """Without a peak date, an authorisation within the window is "expiring", one past its
    date "expired", and one beyond the window is not flagged."""
    scenario = parse_scenario(_scenario(), ENV)
    assert [f["kind"] for f in _findings(scenario)] == ["missing_authorisation",
                                                        "authorisation_expiring"]
    assert [f["kind"] for f in _findings(scenario, date(2027, 1, 2))][1] == \
        "authorisation_expired"
    narrow = parse_scenario(_scenario(qualification_checks={"expiry_window_days": 10}), ENV)
    assert [f["kind"] for f in _findings(narrow)] == ["missing_authorisation"]


def test_a_supplier_without_paperwork_is_judged_only_when_asked() -> None:
    """No authorisations recorded: nothing is flagged unless missing_authorisation gates."""
    data = _scenario()
    del data["suppliers"][0]["qualifications"]
    assert _findings(parse_scenario(data, ENV)) == []
    data["qualification_checks"] = {"gate": ["missing_authorisation"]}
    found = _findings(parse_scenario(data, ENV))
    assert [(f["kind"], f["count"], f["gates"]) for f in found] == [
        ("missing_authorisation", 2, True)]


def test_bad_qualifications_name_the_key() -> None:
    """A bad date or an unknown gate is an error naming the key."""
    data = _scenario()
    data["suppliers"][0]["qualifications"]["authorisations"][0]["expires"] = "soon"
    with pytest.raises(ScenarioError, match=r"authorisations\[0\]\.expires"):
        parse_scenario(data, ENV)
    with pytest.raises(ScenarioError, match=r"qualification_checks\.gate"):
        parse_scenario(_scenario(qualification_checks={"gate": ["expiring"]}), ENV)
