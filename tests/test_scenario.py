"""Scenario files: loading, defaults, located one-line errors, secrets, and the JSON Schema."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness import yamlfile
from harness.errors import ConfigError, MissingEnvError, ProfileError, ScenarioError
from harness.scenario import (
    KNOWN_DRIVERS,
    EnvSecret,
    Scenario,
    load_scenario,
    parse_scenario,
    scenario_hash,
    scenario_json_schema,
)
from harness.simulator.profiles import load_fleet

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "scenarios"
SCHEMA_FILE = ROOT / "scenarios" / "scenario.schema.json"

ENV = {
    "TRIALBENCH_SIM_URL": "http://127.0.0.1:9999",
    "ACME_API_KEY": "ak-acme-7c1e0f",
    "ACME_SECRET": "sk-acme-93b2d4",
    "BOLT_API_KEY": "ak-bolt-5a8e61",
    "BOLT_SECRET": "sk-bolt-c40f17",
    "ISSUER_API_KEY": "ik-issuer-2d9b7a",
}
SECRET_VALUES = [value for name, value in ENV.items() if name != "TRIALBENCH_SIM_URL"]

# Line numbers matter: the error tests replace one line of this text and assert the line.
BASE = """\
name: errors
suppliers:
  - name: acme
    base_url: http://127.0.0.1:8080/suppliers/acme
    credentials:
      api_key: ${ACME_API_KEY}
      secret: ${ACME_SECRET}
    products:
      - sku: steam-50
        face_value: 50
        sale_price: 52.5
        code_pattern: ^[A-Z0-9]{16}$
      - sku: steam-100
        face_value: 100
        sale_price: 104
  - name: bolt
    base_url: http://localhost:8081
    credentials:
      api_key: ${BOLT_API_KEY}
      secret: ${BOLT_SECRET}
    products:
      - sku: steam-50
        face_value: 50
        sale_price: 52
trial:
  deadline_s: 1800
  spending_cap: 500
  product_mix:
    steam-50: 3
    steam-100: 1
"""


def _write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _replace_line(number: int, new: str, text: str = BASE) -> str:
    lines = text.splitlines(keepends=True)
    lines[number - 1] = new + "\n"
    return "".join(lines)


def _error(tmp_path: Path, text: str, line: int, key: str | None,
           env: dict[str, str] | None = None, kind: type[Exception] = ScenarioError) -> str:
    """Load ``text``; assert it fails with one line naming the file, ``line`` and ``key``."""
    path = _write(tmp_path, text)
    with pytest.raises(kind) as caught:
        load_scenario(path, ENV if env is None else env)
    message = str(caught.value)
    assert "\n" not in message
    prefix = f"{path}:{line}: " + (f"{key}: " if key else "")
    assert message.startswith(prefix), message
    return message


def test_base_text_is_valid(tmp_path: Path) -> None:
    """The text the error tests start from loads, so each error comes from its one change."""
    scenario = load_scenario(_write(tmp_path, BASE), ENV)
    assert [s.name for s in scenario.suppliers] == ["acme", "bolt"]


def test_full_scenario_loads_with_types_and_values(tmp_path: Path) -> None:
    """A scenario with every section set loads with Decimal money and the written values."""
    scenario = load_scenario(DATA / "full.yaml", ENV)
    acme, bolt = scenario.suppliers
    assert scenario.seed == 42 and scenario.allow_non_loopback is False
    assert acme.base_url == "http://127.0.0.1:9999/suppliers/acme"  # ${VAR}, no trailing /
    assert bolt.base_url == "http://localhost:8081"
    card, direct = acme.products
    assert card.sale_price == Decimal("52.50") and isinstance(card.sale_price, Decimal)
    assert isinstance(card.face_value, Decimal) and card.face_value == 50
    assert card.kind == "card" and card.code_pattern == "^[A-Z0-9]{16}$"
    assert direct.kind == "direct" and direct.account == "13800000000"
    assert acme.fees.fixed_per_order == Decimal("0.10")
    assert acme.fees.platform_pct == Decimal("1.5") and acme.fees.withdrawal_pct == 0
    assert bolt.driver == "reference" and bolt.fees.platform_pct == 0
    assert acme.credentials.api_key.get_secret_value() == ENV["ACME_API_KEY"]
    assert scenario.issuer is not None
    assert scenario.issuer.api_key.get_secret_value() == ENV["ISSUER_API_KEY"]
    trial = scenario.trial
    assert trial is not None
    assert trial.spending_cap == Decimal("750.00") and isinstance(trial.spending_cap, Decimal)
    assert (trial.orders_per_supplier, trial.quantity, trial.concurrency) == (12, 2, 3)
    assert trial.delivery == "poll" and trial.poll.backoff_factor == 2
    assert trial.after_sales.refund_unused == 2 and trial.after_sales.refund_bad_codes is False
    assert trial.keep_plain_codes is True and scenario.burst is None


def test_minimal_scenario_gets_the_defaults() -> None:
    """Everything left out of a scenario takes the documented default."""
    scenario = load_scenario(DATA / "minimal.yaml", ENV)
    assert scenario.description == "" and scenario.seed == 0 and scenario.issuer is None
    supplier = scenario.suppliers[0]
    assert supplier.driver == KNOWN_DRIVERS[0] == "reference"
    assert supplier.fees.platform_pct == supplier.fees.fixed_per_order == Decimal(0)
    assert supplier.products[0].kind == "card" and supplier.products[0].account is None
    trial = scenario.trial
    assert trial is not None
    assert (trial.orders_per_supplier, trial.quantity, trial.concurrency) == (15, 1, 4)
    assert trial.delivery == "both" and trial.product_mix is None
    assert (trial.poll.initial_interval_s, trial.poll.max_interval_s,
            trial.poll.backoff_factor) == (0.2, 2.0, 1.5)
    assert trial.request_timeout_s == 5 and trial.unknown_outcome_window_s == 10
    assert trial.after_sales.refund_unused == 1 and trial.after_sales.refund_bad_codes
    assert trial.after_sales.refund_follow_s == 30
    assert trial.redeem_sample == 1 and trial.expiry_margin_days == 30
    assert trial.keep_plain_codes is False


def test_models_are_frozen() -> None:
    """A loaded scenario cannot be changed by accident."""
    scenario = load_scenario(DATA / "minimal.yaml", ENV)
    with pytest.raises(ValueError, match="frozen"):
        scenario.seed = 1


def test_default_environment_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit env, ``${VAR}`` is resolved from the process environment."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    scenario = load_scenario(DATA / "minimal.yaml")
    assert scenario.suppliers[0].credentials.secret.get_secret_value() == ENV["ACME_SECRET"]


def test_unknown_key(tmp_path: Path) -> None:
    """An unknown key is an error at its own line, suggesting the schema."""
    message = _error(tmp_path, BASE + "  concurency: 8\n", 31, "trial.concurency")
    assert "unknown key" in message and "trialbench schema" in message


def test_wrong_type(tmp_path: Path) -> None:
    """A value of the wrong type names the key's line."""
    message = _error(tmp_path, _replace_line(26, "  deadline_s: soon"), 26, "trial.deadline_s")
    assert "valid number" in message


def test_missing_required_key(tmp_path: Path) -> None:
    """A missing required key is reported at the line of the mapping that lacks it."""
    text = _replace_line(15, "        code_pattern: null")
    message = _error(tmp_path, text, 13, "suppliers[0].products[1].sale_price")
    assert "required key is missing; add it" in message


def test_missing_env_var(tmp_path: Path) -> None:
    """An unset ``${VAR}`` raises MissingEnvError naming the line, key and variable."""
    env = {name: value for name, value in ENV.items() if name != "BOLT_SECRET"}
    message = _error(tmp_path, BASE, 20, "suppliers[1].credentials.secret", env=env,
                     kind=MissingEnvError)
    assert "BOLT_SECRET is not set" in message and "export BOLT_SECRET" in message


def test_missing_env_var_inside_a_url(tmp_path: Path) -> None:
    """``${VAR}`` inside a longer string is resolved, and its absence is located too."""
    text = _replace_line(17, "    base_url: ${BOLT_URL}/v1")
    _error(tmp_path, text, 17, "suppliers[1].base_url", kind=MissingEnvError)
    scenario = load_scenario(_write(tmp_path, text), {**ENV, "BOLT_URL": "http://[::1]:81"})
    assert scenario.suppliers[1].base_url == "http://[::1]:81/v1"


def test_literal_secret(tmp_path: Path) -> None:
    """A literal credential is refused, and the message does not repeat it."""
    text = _replace_line(7, "      secret: hunter2-literal")
    message = _error(tmp_path, text, 7, "suppliers[0].credentials.secret")
    assert "write ${ENV_VAR}: secrets never appear in scenario files" in message
    assert "hunter2" not in message


def test_secret_must_be_exactly_one_reference(tmp_path: Path) -> None:
    """A credential that mixes a reference with other text is a literal too."""
    text = _replace_line(6, "      api_key: key-${ACME_API_KEY}")
    message = _error(tmp_path, text, 6, "suppliers[0].credentials.api_key")
    assert "secrets never appear in scenario files" in message
    assert ENV["ACME_API_KEY"] not in message


def test_empty_secret(tmp_path: Path) -> None:
    """A credential variable that is set but empty is an error."""
    message = _error(tmp_path, BASE, 6, "suppliers[0].credentials.api_key",
                     env={**ENV, "ACME_API_KEY": ""})
    assert "set but empty" in message


def test_malformed_reference(tmp_path: Path) -> None:
    """Only the ``${NAME}`` form is a reference; ``${`` without it is an error."""
    text = _replace_line(17, "    base_url: ${BOLT URL}")
    message = _error(tmp_path, text, 17, "suppliers[1].base_url")
    assert "malformed reference" in message


def test_non_loopback_url_needs_opt_in(tmp_path: Path) -> None:
    """A supplier off loopback is refused without allow_non_loopback, and accepted with it."""
    text = _replace_line(17, "    base_url: https://api.bolt.example/v2")
    message = _error(tmp_path, text, 17, "suppliers[1].base_url")
    assert "api.bolt.example is not loopback" in message
    assert "allow_non_loopback: true" in message
    scenario = load_scenario(_write(tmp_path, "allow_non_loopback: true\n" + text), ENV)
    assert scenario.suppliers[1].base_url == "https://api.bolt.example/v2"


def test_non_loopback_issuer(tmp_path: Path) -> None:
    """The issuer's URL is held to the same loopback rule."""
    text = BASE + "issuer:\n  base_url: http://10.0.0.5\n  api_key: ${ISSUER_API_KEY}\n"
    _error(tmp_path, text, 32, "issuer.base_url")


def test_url_must_be_http(tmp_path: Path) -> None:
    """A base URL that is not http(s) says what to write."""
    text = _replace_line(4, "    base_url: 127.0.0.1:8080")
    message = _error(tmp_path, text, 4, "suppliers[0].base_url")
    assert "write e.g. http://127.0.0.1:8080" in message


def test_duplicate_supplier_name(tmp_path: Path) -> None:
    """A second supplier with the same name is blamed at its name's line."""
    message = _error(tmp_path, _replace_line(16, "  - name: acme"), 16, "suppliers[1].name")
    assert "'acme' is used twice" in message


def test_duplicate_sku(tmp_path: Path) -> None:
    """A sku listed twice at one supplier is blamed at the second one."""
    text = _replace_line(13, "      - sku: steam-50")
    _error(tmp_path, text, 13, "suppliers[0].products[1].sku")


def test_unknown_sku_in_mix(tmp_path: Path) -> None:
    """A sku in the product mix that no supplier offers is blamed at its line in the mix."""
    text = _replace_line(30, "    steam-500: 1")
    message = _error(tmp_path, text, 30, "trial.product_mix.steam-500")
    assert "not offered by any supplier" in message


def test_mix_must_cover_every_supplier(tmp_path: Path) -> None:
    """A mix with no sku a supplier offers leaves that supplier without orders: an error."""
    text = _replace_line(29, "    steam-100: 3")
    text = _replace_line(30, "", text)
    message = _error(tmp_path, text, 28, "trial.product_mix")
    assert "supplier 'bolt'" in message and "steam-50" in message


def test_mix_weights_per_supplier(tmp_path: Path) -> None:
    """Each supplier draws from the mix restricted to its skus, renormalised."""
    scenario = load_scenario(_write(tmp_path, BASE), ENV)
    assert scenario.trial is not None
    acme, bolt = scenario.suppliers
    assert scenario.trial.weights_for(acme) == {"steam-50": 0.75, "steam-100": 0.25}
    assert scenario.trial.weights_for(bolt) == {"steam-50": 1.0}
    minimal = load_scenario(DATA / "minimal.yaml", ENV)
    assert minimal.trial is not None
    assert minimal.trial.weights_for(minimal.suppliers[0]) == {"steam-50": 1.0}


def test_bad_regex(tmp_path: Path) -> None:
    """A code pattern that does not compile says so at its line."""
    text = _replace_line(12, '        code_pattern: "[A-Z"')
    message = _error(tmp_path, text, 12, "suppliers[0].products[0].code_pattern")
    assert "not a valid regular expression" in message


def test_unknown_driver_lists_known_ones(tmp_path: Path) -> None:
    """An unknown driver names the drivers there are."""
    text = _replace_line(17, "    driver: fulu")
    message = _error(tmp_path, text, 17, "suppliers[1].driver")
    assert "unknown driver 'fulu'; write one of: reference, concat_md5, gateway" in message


def test_bad_supplier_name(tmp_path: Path) -> None:
    """A supplier name that is not a slug says what a slug is."""
    message = _error(tmp_path, _replace_line(3, "  - name: Acme Cards"), 3, "suppliers[0].name")
    assert "lowercase letters, digits" in message


def test_direct_product_needs_account(tmp_path: Path) -> None:
    """A direct top-up without an account is blamed at the product."""
    text = _replace_line(12, "        kind: direct")
    message = _error(tmp_path, text, 9, "suppliers[0].products[0].account")
    assert "add account:" in message


def test_card_product_has_no_account(tmp_path: Path) -> None:
    """A card product with an account is blamed at the account's line."""
    text = _replace_line(12, "        account: '13800000000'")
    _error(tmp_path, text, 12, "suppliers[0].products[0].account")


def test_money_must_be_positive_with_two_places(tmp_path: Path) -> None:
    """Money fields refuse zero and more than two decimal places."""
    _error(tmp_path, _replace_line(10, "        face_value: 0"), 10,
           "suppliers[0].products[0].face_value")
    message = _error(tmp_path, _replace_line(27, "  spending_cap: 10.005"), 27,
                     "trial.spending_cap")
    assert "2 decimal places" in message


def test_range_limits(tmp_path: Path) -> None:
    """Bounded integers such as concurrency are refused outside their range, which is named."""
    message = _error(tmp_path, BASE + "  concurrency: 1000\n", 31, "trial.concurrency")
    assert message.endswith("1000 is not a sane count; write a whole number between 1 and 256")


def test_refunds_cannot_exceed_orders(tmp_path: Path) -> None:
    """More unused-refund requests than orders is an error at refund_unused."""
    text = BASE + "  orders_per_supplier: 2\n  after_sales:\n    refund_unused: 3\n"
    _error(tmp_path, text, 33, "trial.after_sales.refund_unused")


def test_redeem_sample_needs_an_issuer(tmp_path: Path) -> None:
    """Asking for redemptions without an issuer is an error; the default is not."""
    _error(tmp_path, BASE + "  redeem_sample: 2\n", 31, "trial.redeem_sample")
    assert load_scenario(_write(tmp_path, BASE), ENV).trial is not None


def test_burst_without_phases_names_the_missing_key(tmp_path: Path) -> None:
    """A burst section without phases is refused with the key to add, not ignored."""
    message = _error(tmp_path, BASE + "burst:\n  workers: 2\n", 31, "burst.phases")
    assert "required key is missing" in message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    """A key written twice in one mapping is an error, not a silent override."""
    text = _replace_line(15, "        face_value: 101")
    message = _error(tmp_path, text, 15, "suppliers[0].products[1].face_value")
    assert "written twice" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    """A YAML syntax error is a ScenarioError at the line of the problem."""
    message = _error(tmp_path, _replace_line(10, "        face_value: 50: x"), 10, None)
    assert "not valid YAML" in message


def test_empty_file(tmp_path: Path) -> None:
    """An empty file says so."""
    path = _write(tmp_path, "# nothing yet\n")
    with pytest.raises(ScenarioError, match="the file is empty"):
        load_scenario(path, ENV)


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist is a ScenarioError, also a ConfigError and ValueError."""
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "nope.yaml", ENV)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------- input bombs

# The classic "billion laughs": nine levels of nine aliases, 9**9 items once expanded.
LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True))

BURST = """\
burst:
  phases: [{duration_s: 10, rate_per_s: 5}]
  deadline_s: 5
  spending_cap: 100
"""
"""A valid burst section to append to ``BASE``: its keys are at lines 31-34, the next at 35."""


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """A billion-laughs alias bomb is one ScenarioError at the alias that crosses the limit."""
    message = _error(tmp_path, LAUGHS, 5, None)
    assert message.endswith("aliases expand to more than 10,000 nodes (a YAML alias bomb?); "
                            "write the values out instead")


def test_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    """Merge keys (<<) that repeat an alias are counted as what they expand to, like aliases."""
    text = "m0: &m0 {k0: 1, k1: 2, k2: 3}\n" + "".join(
        f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}\n" for i in range(1, 12))
    message = _error(tmp_path, text, 5, None)
    assert "alias bomb" in message


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    """An alias inside the node it names (an endless structure) is refused at its line."""
    message = _error(tmp_path, "name: loop\ndescription: &d [1, [*d]]\n", 2, None)
    assert "alias *d is inside the node it names" in message


def test_aliases_and_merge_keys_within_limits_still_load(tmp_path: Path) -> None:
    """Ordinary anchors, aliases and merge keys keep working, with explicit keys winning."""
    path = _write(tmp_path, """\
name: anchors
suppliers:
  - name: acme
    base_url: http://127.0.0.1:8080
    credentials: {api_key: "${ACME_API_KEY}", secret: "${ACME_SECRET}"}
    products: &products
      - &card {sku: steam-50, face_value: 50, sale_price: 52.5}
      - {<<: *card, sku: steam-100, face_value: 100}
  - name: bolt
    base_url: http://127.0.0.1:8081
    credentials: {api_key: "${BOLT_API_KEY}", secret: "${BOLT_SECRET}"}
    products: *products
""")
    acme, bolt = load_scenario(path, ENV).suppliers
    assert [(p.sku, p.face_value, p.sale_price) for p in acme.products] == [
        ("steam-50", 50, Decimal("52.5")), ("steam-100", 100, Decimal("52.5"))]
    assert bolt.products == acme.products


def test_deep_nesting_is_refused_at_its_line(tmp_path: Path) -> None:
    """5,000 levels of nesting are one ScenarioError at their line, not a RecursionError."""
    text = "name: deep\ndescription: " + "[" * 5000 + "]" * 5000 + "\n"
    message = _error(tmp_path, text, 2, None)
    assert message.endswith("nested more than 64 levels deep; flatten it")


def test_nesting_through_aliases_is_bounded_too(tmp_path: Path) -> None:
    """An alias that would nest the file past the limit is refused where it is used."""
    text = "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    message = _error(tmp_path, text, 2, None)
    assert "alias *a nests the file more than 64 levels deep" in message


def test_oversized_file_is_refused_with_its_size_and_the_limit(tmp_path: Path) -> None:
    """A file over 256 KiB is refused unparsed, with its size and the limit in the message."""
    path = _write(tmp_path, BASE + "#" * 300_000 + "\n")
    size = path.stat().st_size
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, ENV)
    assert str(caught.value) == (
        f"{path}: the file is {size:,} bytes, more than the limit of 262,144 bytes (256 KiB); "
        "scenarios and profiles are a few KiB, check the path")


def test_too_many_nodes_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with more nodes than the limit is refused at the node that crosses it."""
    monkeypatch.setattr(yamlfile, "MAX_NODES", 100)  # the real limit takes ~1 s to reach
    text = "name: many\ndescription:\n" + "  - x\n" * 200
    message = _error(tmp_path, text, 98, None)
    assert "more than 100 keys, values and items" in message
    assert load_scenario(_write(tmp_path, "\n".join(BASE.splitlines()[:24]) + "\n"), ENV)


@pytest.mark.parametrize(("value", "expected"), [
    ("1" * 5000, "a number written with 5,000 characters, more than 100; write a shorter "
                 "number (or quote text)"),
    ("1" + ":1" * 100_000, "a number written with 200,001 characters"),
    ("2026-13-45", "YAML cannot build this value (month must be in 1..12); fix it, or quote "
                   "it if it is text"),
])
def test_scalars_yaml_cannot_build_cheaply_are_refused(tmp_path: Path, value: str,
                                                       expected: str) -> None:
    """Huge numbers (which PyYAML would compute digit by digit) and bad dates are refused."""
    message = _error(tmp_path, BASE + f"seed: {value}\n", 31, None)
    assert expected in message


# --------------------------------------------------------------------------- sane numbers

BODY, MAX_BODY = "body cap in bytes", 64 * 1_048_576
COUNTS = [  # (text appended to BASE with {} for the value, line, key, low, high, noun)
    ("  orders_per_supplier: {}\n", 31, "trial.orders_per_supplier", 1, 1000, "count"),
    ("  quantity: {}\n", 31, "trial.quantity", 1, 100, "count"),
    ("  concurrency: {}\n", 31, "trial.concurrency", 1, 256, "count"),
    ("  redeem_sample: {}\n", 31, "trial.redeem_sample", 0, 100_000, "count"),
    ("  expiry_margin_days: {}\n", 31, "trial.expiry_margin_days", 0, 3650, "number of days"),
    ("  retries:\n    reserve: {}\n", 32, "trial.retries.reserve", 0, 1000, "count"),
    ("  retries:\n    max_reposts: {}\n", 32, "trial.retries.max_reposts", 0, 10, "count"),
    ("  retries:\n    max_resolve_gets: {}\n", 32, "trial.retries.max_resolve_gets", 1, 20,
     "count"),
    ("  after_sales:\n    refund_unused: {}\n", 32, "trial.after_sales.refund_unused", 0, 1000,
     "count"),
    ("  max_body_bytes: {}\n", 31, "trial.max_body_bytes", 1024, MAX_BODY, BODY),
    (BURST + "  workers: {}\n", 35, "burst.workers", 1, 64, "count"),
    (BURST + "  quantity: {}\n", 35, "burst.quantity", 1, 100, "count"),
    (BURST + "  max_concurrency: {}\n", 35, "burst.max_concurrency", 1, 20_000, "count"),
    (BURST + "  max_orders: {}\n", 35, "burst.max_orders", 1, 1_000_000, "count"),
    (BURST + "  max_body_bytes: {}\n", 35, "burst.max_body_bytes", 1024, MAX_BODY, BODY),
    (BURST + "  abort:\n    min_orders: {}\n", 36, "burst.abort.min_orders", 1, 1_000_000, "count"),
]


@pytest.mark.parametrize(("template", "line", "key", "low", "high", "noun"), COUNTS)
def test_booleans_and_fractions_are_not_counts(tmp_path: Path, template: str, line: int,
                                               key: str, low: int, high: int, noun: str
                                               ) -> None:
    """``true`` and ``2.0`` are refused where a count is meant, with the count's range."""
    fix = f"write a whole number between {low} and {high}"
    message = _error(tmp_path, BASE + template.replace("{}", "true"), line, key)
    assert message.endswith(f"true is not a {noun}; {fix}")
    message = _error(tmp_path, BASE + template.replace("{}", "2.0"), line, key)
    assert message.endswith(f"2.0 is not a whole number; {fix}")
    message = _error(tmp_path, BASE + template.replace("{}", str(high + 1)), line, key)
    assert message.endswith(f"{high + 1} is not a sane {noun}; {fix}")


def test_seed_is_a_whole_number_not_a_boolean(tmp_path: Path) -> None:
    """``seed: true`` is refused like a count; any whole number from 0 up is a seed."""
    message = _error(tmp_path, BASE + "seed: true\n", 31, "seed")
    assert message.endswith("true is not a seed; write a whole number between 0 and "
                            f"{2**63 - 1}")
    assert load_scenario(_write(tmp_path, BASE + "seed: 123456789\n"), ENV).seed == 123456789


def test_counts_may_still_come_from_the_environment(tmp_path: Path) -> None:
    """A count written as ``${VAR}`` is parsed from the variable's text, as before."""
    scenario = load_scenario(_write(tmp_path, BASE + "  orders_per_supplier: ${N}\n"),
                             {**ENV, "N": "12"})
    assert scenario.trial is not None and scenario.trial.orders_per_supplier == 12


@pytest.mark.parametrize(("text", "line", "key", "expected"), [
    (_replace_line(27, "  spending_cap: 1e400"), 27, "trial.spending_cap",
     "1e400 is not a sane amount; write a number between 0.01 and 10000000"),
    (_replace_line(27, "  spending_cap: .inf"), 27, "trial.spending_cap",
     "inf is not a sane amount; write a number between 0.01 and 10000000"),
    (_replace_line(27, "  spending_cap: -5"), 27, "trial.spending_cap",
     "-5 is not a sane amount; write a number between 0.01 and 10000000"),
    (_replace_line(27, "  spending_cap: 10000000.01"), 27, "trial.spending_cap",
     "10000000.01 is not a sane amount; write a number between 0.01 and 10000000"),
    (_replace_line(10, "        face_value: 1e400"), 10, "suppliers[0].products[0].face_value",
     "1e400 is not a sane amount; write a number between 0.01 and 10000000"),
    (_replace_line(11, "        sale_price: 1.0e+300"), 11,
     "suppliers[0].products[0].sale_price",
     "1e+300 is not a sane amount; write a number between 0.01 and 10000000"),
    (_replace_line(24, "        sale_price: 52\n    fees: {fixed_per_order: 1e400}"), 25,
     "suppliers[1].fees.fixed_per_order",
     "1e400 is not a sane amount; write a number between 0 and 10000000"),
    (_replace_line(24, "        sale_price: 52\n    fees: {platform_pct: 1e400}"), 25,
     "suppliers[1].fees.platform_pct",
     "1e400 is not a sane percentage; write a number between 0 and 100"),
    (BASE + BURST + "  abort: {spend: 1e400}\n", 35, "burst.abort.spend",
     "1e400 is not a sane amount; write a number between 0.01 and 10000000"),
])
def test_absurd_money_is_refused_with_the_sane_range(tmp_path: Path, text: str, line: int,
                                                     key: str, expected: str) -> None:
    """Money that is infinite, negative or absurdly large is refused with the sane range."""
    message = _error(tmp_path, text, line, key)
    assert message.endswith(expected)


def test_money_at_the_bound_loads(tmp_path: Path) -> None:
    """A spending cap of exactly 10,000,000 is sane and loads as that Decimal."""
    scenario = load_scenario(_write(tmp_path, _replace_line(27, "  spending_cap: 10000000")),
                             ENV)
    assert scenario.trial is not None and scenario.trial.spending_cap == Decimal(10_000_000)


@pytest.mark.parametrize(("text", "line", "key", "expected"), [
    (BASE + BURST.replace("rate_per_s: 5", "rate_per_s: 1.0e+9"), 32,
     "burst.phases[0].rate_per_s",
     "1000000000.0 is not a sane rate (orders per second); write a number between 0 and 5000"),
    (BASE + BURST.replace("rate_per_s: 5", "to_rate_per_s: .nan"), 32,
     "burst.phases[0].to_rate_per_s",
     "nan is not a sane rate (orders per second); write a number between 0 and 5000"),
    (_replace_line(26, "  deadline_s: .inf"), 26, "trial.deadline_s",
     "inf is not a sane duration in seconds; write a number above 0 and at most 86400"),
    (_replace_line(26, "  deadline_s: true"), 26, "trial.deadline_s",
     "true is not a duration in seconds; write a number above 0 and at most 86400"),
    (BASE + "  request_timeout_s: 1e30\n", 31, "trial.request_timeout_s",
     "1e30 is not a sane timeout in seconds; write a number above 0 and at most 120"),
    (BASE + "  poll: {max_interval_s: 1.0e+12}\n", 31, "trial.poll.max_interval_s",
     "1000000000000.0 is not a sane window in seconds; write a number above 0 and at most "
     "3600"),
    (_replace_line(29, "    steam-50: 1.0e+308"), 29, "trial.product_mix.steam-50",
     "1e+308 is not a sane weight; write a number above 0 and at most 1000000"),
])
def test_absurd_rates_and_durations_are_refused(tmp_path: Path, text: str, line: int, key: str,
                                                expected: str) -> None:
    """Rates, durations and weights that are not finite or absurdly large say the sane range."""
    message = _error(tmp_path, text, line, key)
    assert message.endswith(expected)


def test_body_cap_has_a_default_and_a_sane_range(tmp_path: Path) -> None:
    """Both plans cap a response body at 1 MiB by default; 1 KiB to 64 MiB may be written."""
    scenario = load_scenario(_write(tmp_path, BASE + BURST), ENV)
    assert scenario.trial is not None and scenario.burst is not None
    assert scenario.trial.max_body_bytes == scenario.burst.max_body_bytes == 1_048_576
    text = BASE + "  max_body_bytes: 2097152\n" + BURST + "  max_body_bytes: 1024\n"
    scenario = load_scenario(_write(tmp_path, text), ENV)
    assert scenario.trial is not None and scenario.burst is not None
    assert (scenario.trial.max_body_bytes, scenario.burst.max_body_bytes) == (2_097_152, 1024)
    message = _error(tmp_path, BASE + "  max_body_bytes: 512\n", 31, "trial.max_body_bytes")
    assert message.endswith("512 is not a sane body cap in bytes; write a whole number "
                            "between 1024 and 67108864")


def test_fleet_files_get_the_same_limits(tmp_path: Path) -> None:
    """Simulator profiles go through the same loader, so a bomb there is a ProfileError."""
    path = _write(tmp_path, LAUGHS, "fleet.yaml")
    with pytest.raises(ProfileError, match=rf"^{path}:5: aliases expand to more than"):
        load_fleet(path)


def test_secrets_never_leak() -> None:
    """No resolved secret appears in repr, str, model_dump or the manifest dict."""
    scenario = load_scenario(DATA / "full.yaml", ENV)
    manifest = scenario.manifest_dict()
    texts = [repr(scenario), str(scenario), str(scenario.model_dump()),
             json.dumps(manifest), scenario.model_dump_json()]
    for text in texts:
        for value in SECRET_VALUES:
            assert value not in text
    acme = manifest["suppliers"][0]
    assert acme["credentials"] == {"api_key": "${ACME_API_KEY}", "secret": "${ACME_SECRET}"}
    assert manifest["issuer"]["api_key"] == "${ISSUER_API_KEY}"
    assert acme["products"][0]["sale_price"] == "52.50"  # money stays exact in JSON
    assert str(scenario.suppliers[0].credentials.api_key) == "${ACME_API_KEY}"


def test_secrets_do_not_leak_into_error_messages(tmp_path: Path) -> None:
    """An error elsewhere in the file does not echo resolved secrets, even in its cause."""
    # credentials first, so pydantic's (truncated) copy of the supplier's input starts there
    path = _write(tmp_path, """\
name: leak
suppliers:
  - credentials: {api_key: "${ACME_API_KEY}", secret: "${ACME_SECRET}"}
    name: acme
    base_url: http://127.0.0.1:8080
    products:
      - {sku: a, face_value: 1, sale_price: 1}
      - {sku: a, face_value: 1, sale_price: 1}
""")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, ENV)
    cause = caught.value.__cause__
    assert isinstance(cause, ValidationError)
    shown = repr(cause.errors()[0]["input"])
    assert "${ACME_API_KEY}" in shown  # pydantic shows inputs as written, not resolved
    for value in SECRET_VALUES:
        assert value not in str(caught.value) and value not in str(cause)
        assert value not in shown


def test_manifest_round_trips(tmp_path: Path) -> None:
    """The manifest dict, re-read with the same environment, gives the same scenario."""
    scenario = load_scenario(DATA / "full.yaml", ENV)
    assert parse_scenario(scenario.manifest_dict(), ENV) == scenario


def test_env_secret_repr_and_equality() -> None:
    """EnvSecret shows its reference and compares by reference and value."""
    secret = EnvSecret("${X}", "v")
    assert repr(secret) == "EnvSecret('${X}')" and secret.variable == "X"
    assert secret == EnvSecret("${X}", "v") and secret != EnvSecret("${X}", "w")


def test_parse_scenario_without_file() -> None:
    """Data built in Python validates too; errors then name the source instead of a file."""
    with pytest.raises(ScenarioError, match=r"^<scenario>: suppliers: "):
        parse_scenario({"name": "x", "suppliers": []}, ENV)


def test_scenario_hash_is_sha256_of_bytes() -> None:
    """The scenario hash is the SHA-256 of the file exactly as written."""
    path = DATA / "full.yaml"
    assert scenario_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_test_scenario_loads() -> None:
    """Every scenario under tests/data/scenarios is valid."""
    paths = sorted(DATA.glob("*.yaml"))
    assert paths
    for path in paths:
        assert isinstance(load_scenario(path, ENV), Scenario)


def test_schema_command_matches_shipped_file(tmp_path: Path) -> None:
    """``python -m harness schema`` writes exactly the shipped scenario.schema.json."""
    shipped = SCHEMA_FILE.read_text(encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "harness", "schema"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == shipped, "regenerate: trialbench schema --out " + str(SCHEMA_FILE)
    out = tmp_path / "schema.json"
    result = subprocess.run([sys.executable, "-m", "harness", "schema", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == shipped == scenario_json_schema()


def test_schema_describes_the_file_as_written() -> None:
    """The schema forbids unknown keys and wants credentials as ``${VAR}`` references."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False
    credentials = schema["$defs"]["Credentials"]
    assert credentials["properties"]["secret"]["pattern"] == r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$"
    assert set(schema["required"]) == {"name", "suppliers"}


def test_schema_states_the_sane_ranges() -> None:
    """The schema gives editors the same bounds the loader enforces, body caps included."""
    defs = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))["$defs"]
    cap = defs["TrialPlan"]["properties"]["spending_cap"]["anyOf"][0]
    assert (cap["minimum"], cap["maximum"]) == (0.01, 10_000_000)
    for plan in ("TrialPlan", "BurstPlan"):
        body = defs[plan]["properties"]["max_body_bytes"]
        assert (body["type"], body["default"]) == ("integer", 1_048_576)
        assert (body["minimum"], body["maximum"]) == (1024, 64 * 1_048_576)
        assert body["description"].startswith("Most bytes read of one response body")
