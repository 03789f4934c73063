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

from harness.errors import ConfigError, MissingEnvError, ScenarioError
from harness.scenario import (
    KNOWN_DRIVERS,
    EnvSecret,
    Scenario,
    load_scenario,
    parse_scenario,
    scenario_hash,
    scenario_json_schema,
)

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
    text = _replace_line(17, "    driver: gateway")
    message = _error(tmp_path, text, 17, "suppliers[1].driver")
    assert "unknown driver 'gateway'; write one of: reference" in message


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
    """Bounded integers such as concurrency are checked against their range."""
    message = _error(tmp_path, BASE + "  concurrency: 1000\n", 31, "trial.concurrency")
    assert "less than or equal to 256" in message


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
