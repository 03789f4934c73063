"""The README's manual simulator steps run as written.

The ``<!-- manual-steps -->`` block's ``$`` lines become a bash script run in a scratch
folder that holds this checkout's ``.venv`` and ``scenarios`` (so ``results/`` lands there).
Two things are added that a person does without thinking: the simulator's port is a free
one instead of 8700, and the script waits for the simulator to listen before the next line.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manual_steps() -> list[str]:
    """The commands of the README's manual-steps block, without their ``$ ``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- manual-steps -->", 1)[1].split("<!-- /manual-steps -->", 1)[0]
    return [line[2:] for line in block.splitlines() if line.startswith("$ ")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
def test_readme_manual_steps_run_as_written(tmp_path: Path) -> None:
    """Started by hand, the simulator and the exported variables are all a trial of the
    starter scenario needs: it exits 0 and writes its run folder."""
    steps = manual_steps()
    assert any("trialbench sim" in s and s.endswith("&") for s in steps)
    assert any("trialbench trial" in s for s in steps)
    port = _free_port()
    script = ["set -e"]
    for step in steps:
        script.append(re.sub(r"\b8700\b", str(port), step))
        if step.endswith("&"):  # wait for the simulator, as a person waits for its line
            script.append(f"for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) "
                          "2>/dev/null && break; sleep 0.1; done")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALBENCH_")}
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "orders.parquet").is_file()
    assert "trial summary" in done.stdout + done.stderr
