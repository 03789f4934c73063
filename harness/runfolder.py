"""A run folder being written: ``results/<run-id>/`` with its manifest and event log.

The manifest holds the scenario with credentials as their ``${VAR}`` references, its
hash, versions, host, seed, start and end; never a secret. Plain codes are written only
when the scenario asks (``keep_plain_codes``), to ``codes-plain.jsonl``, mode 0600.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from harness import __version__
from harness.drivers.base import Code
from harness.events import EventLog
from harness.protocol import format_epoch


def _versions() -> dict[str, str]:
    found = {"trialbench": __version__, "python": platform.python_version()}
    for package in ("httpx", "locust", "pandas", "pyarrow", "pydantic", "uvicorn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def new_run_id(scenario_name: str, mode: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{scenario_name}-{mode}-{secrets.token_hex(2)}"


class RunFolder:
    """Owns the run's directory, manifest, event log and the optional plain-code file."""

    def __init__(self, root: Path, path: Path, manifest: dict[str, Any],
                 keep_plain_codes: bool, log_name: str = "events.jsonl") -> None:
        self.root = root
        self.path = path
        self.manifest = manifest
        self.log = EventLog(path / log_name)
        self._keep_plain = keep_plain_codes
        self._plain: TextIO | None = None

    @classmethod
    def create(cls, root: Path, scenario: Any, scenario_path: Path, *, mode: str,
               run_id: str | None = None) -> RunFolder:
        """Make ``root/<run-id>/`` and write the opening manifest."""
        from harness.scenario import scenario_hash

        run_id = run_id or new_run_id(scenario.name, mode)
        path = root / run_id
        path.mkdir(parents=True, exist_ok=False)
        manifest = {
            "run_id": run_id, "mode": mode, "scenario_file": str(scenario_path),
            "scenario_sha256": scenario_hash(scenario_path),
            "scenario": scenario.manifest_dict(), "seed": scenario.seed,
            "host": socket.gethostname(), "platform": platform.platform(),
            "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
            "versions": _versions(), "started_at": format_epoch(time.time()),
            "finished_at": None,
        }
        keep = bool(getattr(scenario.trial, "keep_plain_codes", False))
        folder = cls(root, path, manifest, keep)
        folder.write_manifest()
        return folder

    @classmethod
    def reopen(cls, path: Path, scenario: Any, *, log_name: str) -> RunFolder:
        """An existing run folder, to resume it: its manifest, and a new log shard."""
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["finished_at"] = None
        keep = bool(getattr(scenario.trial, "keep_plain_codes", False))
        folder = cls(path.parent, path, manifest, keep, log_name=log_name)
        folder.write_manifest()
        return folder

    def write_manifest(self) -> None:
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str) + "\n")
        tmp.replace(self.path / "manifest.json")

    def keep_plain_code(self, supplier: str, client_order_id: str, code: Code,
                        digest: str) -> None:
        """Append a plain code to the owner-only file, if the scenario asked for it."""
        if not self._keep_plain:
            return
        if self._plain is None:
            fd = os.open(self.path / "codes-plain.jsonl",
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._plain = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        self._plain.write(json.dumps({"supplier": supplier, "client_order_id": client_order_id,
                                      "code_hash": digest, "serial": code.serial,
                                      "pin": code.pin}) + "\n")

    def close(self, *, interrupted: bool = False) -> None:
        """Finish the manifest, close the log, and build the tables from it."""
        from harness.events import run_complete
        from harness.results import build_tables, write_tables

        self.manifest["finished_at"] = format_epoch(time.time())
        self.manifest["interrupted"] = interrupted
        self.write_manifest()
        self.log.close()
        if self._plain is not None:
            self._plain.close()
        write_tables(self.path, build_tables(self.path))
        # the log is final now: keep whether the run completed, so rank and report answer
        # it from a few stat calls (the columnar build has kept it already; after the
        # streaming fold this is a byte search for the start and finish lines)
        run_complete(self.path)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(interrupted=exc_type is not None)


def earlier_code_hashes(root: Path, exclude: Path | None = None) -> set[str]:
    """Hashes of every code in earlier runs under ``root`` (their ``codes.parquet``)."""
    import pyarrow.parquet as pq

    hashes: set[str] = set()
    for table in root.glob("*/codes.parquet"):
        if exclude is not None and table.parent == exclude:
            continue
        try:
            column = pq.read_table(table, columns=["code_hash"]).column("code_hash")
        except (OSError, KeyError, ValueError):
            continue
        hashes.update(h for h in column.to_pylist() if h)
    return hashes
