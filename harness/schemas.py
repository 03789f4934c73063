"""The JSON Schemas of every file a user writes, generated from the models that load them.

==========  ===============================  ==========================================
kind        file                             shipped as
==========  ===============================  ==========================================
scenario    a scenario (``trialbench trial``  ``scenarios/scenario.schema.json``
            / ``burst``)
fleet       simulator profiles (``trialbench  ``scenarios/fleet.schema.json``
            sim --profiles``, ``--simulate``)
dialect     a supplier dialect                ``harness/drivers/dialects/dialect.schema.json``
sla         an SLA for ``trialbench check``   ``scenarios/sla.schema.json``
            (``--sla FILE``)
==========  ===============================  ==========================================

``trialbench schema --kind KIND`` prints one (``--out FILE`` writes it); the shipped copies
are checked against this output by a test, so they cannot drift from the models. Every
shipped YAML file names its schema on its first line (``# yaml-language-server:
$schema=...``), so an editor with the YAML language server completes and checks it.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

SchemaKind = Literal["scenario", "fleet", "dialect", "sla"]
KINDS: tuple[str, ...] = get_args(SchemaKind)
ALIASES = {"profile": "fleet", "profiles": "fleet"}
"""Other names users reach for: a fleet file holds simulator *profiles*."""

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(kind: str) -> str:
    """The JSON Schema of one kind of file, as the text ``trialbench schema`` writes."""
    kind = ALIASES.get(kind, kind)
    if kind == "scenario":
        from harness.scenario import scenario_json_schema

        return scenario_json_schema()
    if kind == "dialect":
        from harness.drivers.dialect import dialect_json_schema

        return dialect_json_schema()
    if kind == "fleet":
        return fleet_json_schema()
    if kind == "sla":
        return sla_json_schema()
    raise ValueError(f"no schema of kind {kind!r}; one of {', '.join(KINDS)}")


def fleet_json_schema() -> str:
    """The JSON Schema of a fleet (simulator profiles) file; every key carries its
    description from :mod:`harness.simulator.profiles`."""
    from harness.simulator.profiles import NAME_PATTERN, Fleet

    schema: dict[str, Any] = {"$schema": DRAFT, "title": "trialbench fleet (simulator "
                              "profiles)", **Fleet.model_json_schema()}
    schema["properties"]["suppliers"]["propertyNames"] = {"pattern": NAME_PATTERN}
    return json.dumps(markdown_descriptions(schema), indent=2, ensure_ascii=False) + "\n"


def sla_json_schema() -> str:
    """The JSON Schema of an SLA file (``trialbench check --sla FILE``; the same mapping
    as a scenario's ``sla:``)."""
    from harness.check.sla import SlaConfig

    schema: dict[str, Any] = {"$schema": DRAFT, **SlaConfig.model_json_schema(),
                              "title": "trialbench SLA (thresholds for trialbench check)"}
    return json.dumps(markdown_descriptions(schema), indent=2, ensure_ascii=False) + "\n"


def markdown_descriptions(node: Any) -> Any:
    """Turn reST double backticks into Markdown single ones: editors render Markdown."""
    if isinstance(node, dict):
        return {key: value.replace("``", "`") if key == "description" and isinstance(value, str)
                else markdown_descriptions(value) for key, value in node.items()}
    if isinstance(node, list):
        return [markdown_descriptions(item) for item in node]
    return node


def profile_key_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every key of a supplier profile, dotted
    (``delivery.slow_share``), in file order: the README's table of profile keys."""
    from harness.simulator.profiles import Fleet

    schema = Fleet.model_json_schema()
    defs: dict[str, Any] = schema["$defs"]
    rows: list[tuple[str, str, str, str]] = []

    def target(prop: dict[str, Any]) -> dict[str, Any] | None:
        for option in [prop, *prop.get("anyOf", [])]:
            ref = option.get("$ref")
            if ref is not None:
                found: dict[str, Any] = defs[ref.rsplit("/", 1)[-1]]
                return found
        return None

    def type_of(prop: dict[str, Any]) -> str:
        options = prop.get("anyOf", [prop])
        names = []
        for option in options:
            if "$ref" in option:
                names.append("mapping")
            elif "enum" in option:
                names.append(" \\| ".join(map(str, option["enum"])))
            elif option.get("type") == "array":
                names.append("list")
            else:
                names.append(str(option.get("type", "string")))
        return " or ".join(names)

    def walk(prefix: str, model: dict[str, Any]) -> None:
        for key, prop in model.get("properties", {}).items():
            name = f"{prefix}{key}"
            inner = target(prop)
            items = target(prop.get("items", {})) if prop.get("type") == "array" else None
            if "default" in prop:
                default = "none" if prop["default"] is None else json.dumps(prop["default"])
            else:
                default = "required"
            if inner is not None and default not in ("required", "none"):
                default = "see below"
            description = " ".join(str(prop.get("description", "")).split()).replace("``", "`")
            rows.append((name, type_of(prop), default, description))
            if inner is not None:
                walk(f"{name}.", inner)
            elif items is not None:
                walk(f"{name}[].", items)

    walk("", defs["SupplierProfile"])
    return rows


def profile_keys_markdown() -> str:
    """The README's table of supplier-profile keys (a test keeps the README's copy current)."""
    lines = ["| key | type | default | what it plants |", "|---|---|---|---|"]
    for key, kind, default, description in profile_key_rows():
        cell = description.replace("|", "\\|")
        shown = default if default in ("required", "none", "see below") else f"`{default}`"
        lines.append(f"| `{key}` | {kind} | {shown} | {cell} |")
    return "\n".join(lines) + "\n"


__all__ = ["ALIASES", "KINDS", "SchemaKind", "fleet_json_schema", "json_schema",
           "markdown_descriptions", "profile_key_rows", "profile_keys_markdown"]
