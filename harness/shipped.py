"""The files trialbench ships: scenarios, simulator fleets and the JSON Schemas of the
files a user writes, read as package data (:mod:`importlib.resources`), so an installed
copy finds them wherever it runs.

In a source checkout ``scenarios/`` (the repository's folder of shipped scenarios, the one
the README and the tests name) is canonical, and ``harness/scenarios`` is a symbolic link
to it; building the wheel copies the files into ``harness/scenarios/`` inside the
package (``[tool.setuptools.package-data]``), so an installed ``trialbench demo`` reads
them from site-packages.

Which file is which kind is told by its name: ``fleet-*.yaml`` are simulator fleets
(validated by ``fleet.schema.json``), ``sla-*.yaml`` SLAs for ``trialbench check``
(``sla.schema.json``), every other ``*.yaml`` a scenario (``scenario.schema.json``).
Each carries a ``# yaml-language-server: $schema=...`` modeline naming the schema beside
it, so an editor applies the right one.

``trialbench init DIR`` (:func:`init_folder`) copies a starter scenario, the demo fleet and
the schemas (scenario, fleet, SLA, dialect) into a folder for the user to edit.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from harness.errors import HarnessError

PACKAGE_FOLDER = "scenarios"
"""The shipped files' folder inside the ``harness`` package."""
SCENARIO_SCHEMA = "scenario.schema.json"
FLEET_SCHEMA = "fleet.schema.json"
DIALECT_SCHEMA = "dialect.schema.json"
SLA_SCHEMA = "sla.schema.json"
"""Shipped beside the dialects (``harness/drivers/dialects/``); ``init`` copies it too."""

STARTER_SCENARIO = "starter.yaml"
STARTER_FLEET = "fleet-demo.yaml"
INIT_FILES = (STARTER_SCENARIO, STARTER_FLEET, SCENARIO_SCHEMA, FLEET_SCHEMA, SLA_SCHEMA)


class InitError(HarnessError, FileExistsError):
    """``trialbench init`` would overwrite a file the user has."""


def shipped_folder() -> Traversable:
    """The folder of shipped scenarios, fleets and schemas inside the installed package."""
    return resources.files("harness") / PACKAGE_FOLDER


def shipped_file(name: str) -> Traversable:
    """One shipped file by name, e.g. ``"demo.yaml"``; KeyError naming what ships if absent."""
    item = shipped_folder() / name
    if not item.is_file():
        raise KeyError(f"{name!r} is not shipped; shipped: {', '.join(shipped_names())}")
    return item


def shipped_names() -> list[str]:
    """Names of every shipped YAML and schema file, sorted."""
    return sorted(item.name for item in shipped_folder().iterdir()
                  if item.is_file() and item.name.endswith((".yaml", ".json")))


def is_fleet_file(name: str) -> bool:
    """A shipped file named ``fleet-*.yaml`` is a simulator fleet, not a scenario."""
    return name.startswith("fleet-") and name.endswith(".yaml")


def is_sla_file(name: str) -> bool:
    """A shipped file named ``sla-*.yaml`` is an SLA for ``trialbench check --sla``."""
    return name.startswith("sla-") and name.endswith(".yaml")


def schema_for(name: str) -> str:
    """The schema a shipped YAML file is written against (the name of its modeline's file)."""
    return (FLEET_SCHEMA if is_fleet_file(name) else SLA_SCHEMA if is_sla_file(name)
            else SCENARIO_SCHEMA)


@contextlib.contextmanager
def shipped_path(name: str) -> Iterator[Path]:
    """A real file path for a shipped file (a temporary copy only if the package is zipped)."""
    with resources.as_file(shipped_file(name)) as path:
        yield path


def installed_path(name: str) -> Path:
    """The path of a shipped file in the installed package (pip and pipx install unzipped;
    a zipped package needs :func:`shipped_path`)."""
    item = shipped_file(name)
    if not isinstance(item, Path):
        raise HarnessError(f"{name}: the harness package is not on a file system ({item}); "
                           "install trialbench with pip or pipx")
    return item


def dialect_schema_file() -> Traversable:
    """The shipped JSON Schema of dialect files."""
    return resources.files("harness") / "drivers" / "dialects" / DIALECT_SCHEMA


def init_folder(folder: Path, *, force: bool = False) -> list[Path]:
    """Copy the starter scenario, the demo fleet and the schemas (scenario, fleet, dialect)
    into ``folder`` (created if needed); return the files written.

    Refuses to overwrite an existing file unless ``force``: the folder is the user's.
    """
    sources: dict[str, Traversable] = {name: shipped_file(name) for name in INIT_FILES}
    sources[DIALECT_SCHEMA] = dialect_schema_file()
    targets = {name: folder / name for name in sources}
    present = [str(path) for path in targets.values() if path.exists()]
    if present and not force:
        raise InitError(f"{', '.join(present)}: already there; trialbench init never "
                        "overwrites your files (give another folder, or --force)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in sources.items():
            with resources.as_file(source) as path:
                shutil.copyfile(path, targets[name])
    except OSError as exc:
        raise InitError(f"{folder}: cannot write: {exc.strerror}") from exc
    return list(targets.values())


__all__ = ["DIALECT_SCHEMA", "FLEET_SCHEMA", "INIT_FILES", "SCENARIO_SCHEMA",
           "SLA_SCHEMA", "STARTER_FLEET", "STARTER_SCENARIO", "InitError",
           "dialect_schema_file", "init_folder", "installed_path", "is_fleet_file",
           "is_sla_file", "schema_for", "shipped_file", "shipped_names", "shipped_path"]
