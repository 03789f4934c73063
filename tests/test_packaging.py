"""The built wheel works outside the source tree: shipped scenarios, fleets and schemas are
package data, ``trialbench init`` copies a starter, and a trial runs from an installed copy.

The wheel is built from a copy of the sources (so the checkout gets no ``build/``), with
the running interpreter's setuptools and no build isolation; it is installed with
``--no-deps`` into a fresh venv that sees this venv's packages through a ``.pth`` line
(the dependencies are the same; only trialbench itself comes from the wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from harness.shipped import FLEET_SCHEMA, SCENARIO_SCHEMA, STARTER_FLEET, STARTER_SCENARIO

ROOT = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("TRIALBENCH_", "PYTHON", "VIRTUAL_ENV"))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the freshly built wheel installed; returns its bin folder."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("harness", "scenarios"):
        shutil.copytree(ROOT / folder, src / folder, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(base / "dist"), str(src)], check=True, cwd=base,
                   env=_clean_env(), timeout=120)
    wheel = next((base / "dist").glob("trialbench-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    # the dependencies come from the test's own environment (no registry, no downloads)
    (Path(purelib) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: never uninstall the editable trialbench the .pth line makes visible
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--ignore-installed", "--no-index", "--no-compile", str(wheel)],
                   check=True, env=_clean_env(), timeout=120)
    return venv / "bin"


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_source_tree(installed: Path,
                                                      tmp_path: Path) -> None:
    """From a folder outside the checkout, the installed copy finds the demo's shipped
    files in site-packages, ``init`` copies the starter, and a trial runs on it."""
    env = _clean_env()
    where = subprocess.run(
        [str(installed / "python"), "-c", "import harness.demo as d; print(d.__file__); "
         "print(d.DEMO_FLEET); print(d.DEMO_SCENARIO.is_file())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    venv = installed.parent
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]).is_relative_to(venv)
    assert where[2] == "True"

    folder = tmp_path / "bench"
    init = subprocess.run([str(installed / "trialbench"), "init", str(folder)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    for name in (STARTER_SCENARIO, STARTER_FLEET, SCENARIO_SCHEMA, FLEET_SCHEMA):
        assert (folder / name).read_bytes() == (ROOT / "scenarios" / name).read_bytes()

    trial = subprocess.run(
        [str(installed / "trialbench"), "trial", str(folder / STARTER_SCENARIO), "--simulate",
         str(folder / STARTER_FLEET), "--results", str(tmp_path / "results"), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert trial.returncode == 0, trial.stderr[-2000:]
    runs = [path for path in (tmp_path / "results").iterdir() if path.is_dir()]
    assert len(runs) == 1 and (runs[0] / "orders.parquet").is_file()
    assert "trial summary" in trial.stdout + trial.stderr


def test_burst_without_locust_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Locust is the optional burst extra: without it, `trialbench burst` (and `worker`)
    exits 2 naming the extra to install, before importing anything of the burst."""
    import importlib.util

    from harness.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "locust" else real(name, *a))
    assert main(["burst", str(ROOT / "scenarios" / "starter.yaml")]) == 2
    assert "pip install 'trialbench[burst]'" in capsys.readouterr().err
    assert main(["worker", "--master", "127.0.0.1:5557"]) == 2
    assert "trialbench[burst]" in capsys.readouterr().err
