"""A JSON Schema for every file a user writes: generated from the models, shipped, named by
every shipped YAML file's modeline, and accepting every shipped file (as an editor would)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from harness.cli import main
from harness.errors import ProfileError
from harness.schemas import json_schema, profile_keys_markdown
from harness.shipped import is_fleet_file, schema_for, shipped_names
from harness.simulator.profiles import load_fleet

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = ROOT / "harness" / "drivers" / "dialects"
SHIPPED_SCHEMAS = {"scenario": ROOT / "scenarios" / "scenario.schema.json",
                   "fleet": ROOT / "scenarios" / "fleet.schema.json",
                   "dialect": DIALECTS / "dialect.schema.json",
                   "sla": ROOT / "scenarios" / "sla.schema.json"}
SHIPPED_YAML = sorted([*(ROOT / "scenarios").glob("*.yaml"), *DIALECTS.glob("*.yaml")])
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


@pytest.mark.parametrize("kind", sorted(SHIPPED_SCHEMAS))
def test_shipped_schema_is_what_the_models_generate(kind: str, tmp_path: Path) -> None:
    """Each shipped schema is exactly ``trialbench schema --kind KIND`` (no drift)."""
    out = tmp_path / "schema.json"
    assert main(["schema", "--kind", kind, "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == json_schema(kind)
    assert SHIPPED_SCHEMAS[kind].read_text(encoding="utf-8") == json_schema(kind), \
        f"regenerate: trialbench schema --kind {kind} --out {SHIPPED_SCHEMAS[kind]}"


@pytest.mark.parametrize("path", SHIPPED_YAML, ids=lambda p: p.name)
def test_every_shipped_yaml_names_its_schema_and_validates(path: Path) -> None:
    """The first line names the right schema beside the file, and that schema finds zero
    errors in the file (fleets get the fleet schema, never the scenario one)."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{path.name}: first line must be a yaml-language-server modeline"
    expected = "dialect.schema.json" if path.parent == DIALECTS else schema_for(path.name)
    assert match.group(1) == expected
    schema = json.loads((path.parent / expected).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    assert errors == []


def test_the_scenario_schema_would_reject_a_fleet() -> None:
    """Fleet files are told apart by name, because the scenario schema rejects them."""
    fleets = [name for name in shipped_names() if is_fleet_file(name)]
    assert fleets
    schema = json.loads(SHIPPED_SCHEMAS["scenario"].read_text(encoding="utf-8"))
    data = yaml.safe_load((ROOT / "scenarios" / fleets[0]).read_text(encoding="utf-8"))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data))


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"Fleet.{k}", v) for k, v in schema["properties"].items()]
    for name, model in schema["$defs"].items():
        out += [(f"{name}.{k}", v) for k, v in model.get("properties", {}).items()]
    return out


def test_every_profile_key_is_described() -> None:
    """Every key of a fleet file has a description in the schema and a row in the README."""
    schema = json.loads(json_schema("fleet"))
    undescribed = [name for name, prop in _properties(schema)
                   if not prop.get("description", "").strip()]
    assert undescribed == []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- profile-keys -->\n", 1)[1].split("<!-- /profile-keys -->", 1)[0]
    assert table == profile_keys_markdown(), \
        "README's profile-key table is stale: paste harness.schemas.profile_keys_markdown()"


def test_profile_errors_point_to_the_fleet_schema(tmp_path: Path) -> None:
    """A misspelt profile key names its line and the fleet schema's command, not the
    scenario schema's."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("issuer: {api_key: k}\nsuppliers:\n  a:\n    api_key: a\n    secret: s\n"
                     "    balance: '1.00'\n    products: [{sku: x, name: X, face_value: '1', "
                     "price: '1'}]\n    delivery: {median_msec: 3}\n", encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_fleet(fleet)
    message = str(info.value)
    assert f"{fleet}:8: suppliers.a.delivery.median_msec" in message
    assert "`trialbench schema --kind fleet`" in message


def test_shipped_sla_loads_and_its_errors_point_to_the_sla_schema(tmp_path: Path) -> None:
    """The shipped SLA (``scenarios/sla-demo.yaml``) loads, and a bad key in an SLA file
    names the SLA schema's command."""
    from harness.check.sla import SlaError, load_sla

    assert load_sla(ROOT / "scenarios" / "sla-demo.yaml").all
    bad = tmp_path / "sla.yaml"
    bad.write_text("all:\n  - validity_rate >= 0.99\nmargin:\n  validity_rate: 0.01\n",
                   encoding="utf-8")
    with pytest.raises(SlaError) as caught:
        load_sla(bad)
    assert "sla.yaml" in str(caught.value) and "trialbench schema --kind sla" in str(caught.value)
