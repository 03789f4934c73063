"""Start the simulator as a subprocess on a free loopback port and talk to its control API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from harness.errors import SimulatorStartError
from harness.processes import stop_process

_URL_RE = re.compile(r"listening on (http://\S+)")


class SimulatorProcess:
    """A running simulator subprocess; use as a context manager (see :func:`start_simulator`)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, stderr_path: Path) -> None:
        self.proc = proc
        self.url = url
        self._stderr_path = stderr_path
        self._client = httpx.Client(base_url=url, timeout=10.0, trust_env=False)

    def supplier_url(self, name: str) -> str:
        """Base URL of one simulated supplier, e.g. ``http://127.0.0.1:PORT/suppliers/acme``."""
        return f"{self.url}/suppliers/{name}"

    @property
    def issuer_url(self) -> str:
        """Base URL of the issuer."""
        return f"{self.url}/issuer"

    def truth(self) -> dict[str, Any]:
        """The ground truth (``GET /_sim/truth``)."""
        response = self._client.get("/_sim/truth")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self, seed: int | None = None) -> None:
        """Restore the initial state (``POST /_sim/reset``), optionally with a new seed."""
        response = self._client.post("/_sim/reset", json={"seed": seed})
        response.raise_for_status()

    def stderr(self) -> str:
        """What the simulator wrote to stderr so far."""
        try:
            return self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the subprocess (SIGTERM, then SIGKILL after 5 s) and clean up."""
        self._client.close()
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr_path.unlink(missing_ok=True)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def start_simulator(profiles: Path, seed: int | None = None,
                    timeout_s: float = 20) -> SimulatorProcess:
    """Run ``python -m harness sim`` on 127.0.0.1:0 and wait for its URL line.

    Raises :class:`SimulatorStartError` (with the simulator's stderr) if it exits or
    prints nothing within ``timeout_s``.
    """
    command = [sys.executable, "-m", "harness", "sim", "--profiles", str(profiles),
               "--host", "127.0.0.1", "--port", "0"]
    if seed is not None:
        command += ["--seed", str(seed)]
    fd, name = tempfile.mkstemp(prefix="trialbench-sim-", suffix=".stderr")
    stderr_path = Path(name)
    with os.fdopen(fd, "wb") as stderr_file:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_file,
                                stdin=subprocess.DEVNULL)
    lines: list[str] = []

    def read_line() -> None:
        assert proc.stdout is not None
        lines.append(proc.stdout.readline().decode("utf-8", errors="replace"))

    reader = threading.Thread(target=read_line, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while reader.is_alive() and time.monotonic() < deadline:
        reader.join(timeout=0.05)
    match = _URL_RE.search(lines[0]) if lines else None
    if match is None:
        stop_process(proc)
        reader.join(timeout=2)
        if proc.stdout is not None:
            proc.stdout.close()
        err = stderr_path.read_text(encoding="utf-8", errors="replace").strip()
        stderr_path.unlink(missing_ok=True)
        why = (f"exited with code {proc.returncode}" if lines
               else f"printed nothing within {timeout_s:g} s")
        raise SimulatorStartError(f"simulator {why}; stderr: {err or '(empty)'}")
    return SimulatorProcess(proc, match.group(1), stderr_path)
