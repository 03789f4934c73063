"""A remote burst worker (one that cannot see the master's run folder) keeps its shard on
its own disk and forwards every line to the master, which merges them into the run
folder. The "remote" worker runs on this machine with the run-folder check forced false;
everything stays on 127.0.0.1, a 3-second burst."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.demo import fleet_env
from harness.simulator.process import SimulatorProcess, start_simulator
from harness.simulator.profiles import load_fleet

DATA = Path(__file__).parent / "data"
FLEET = DATA / "burst-fleet.yaml"
SCENARIO = """\
name: burst-remote
seed: 4
suppliers:
  - name: healthy
    base_url: ${TRIALBENCH_SIM_URL}/suppliers/healthy
    credentials: {api_key: "${TRIALBENCH_DEMO_HEALTHY_API_KEY}",
                  secret: "${TRIALBENCH_DEMO_HEALTHY_SECRET}"}
    products: [{sku: card-10, face_value: "10.00", sale_price: "10.50"}]
burst:
  phases: [{name: hold, duration_s: 3, rate_per_s: 20}]
  deadline_s: 2
  follow_s: 2
  delivery: both
  request_timeout_s: 3
  spending_cap: 100000
"""
REMOTE = """
import sys
from pathlib import Path
import harness.run.worker as worker

worker._is_run_folder = lambda run_dir, run_id: False  # as if on another machine
host, port = sys.argv[1].rsplit(":", 1)
sys.exit(worker.run_worker(host, int(port), results_root=Path(sys.argv[2])))
"""


@pytest.fixture(scope="module")
def remote_sim() -> Iterator[SimulatorProcess]:
    """The burst test fleet served on 127.0.0.1:0 for this module."""
    with start_simulator(FLEET) as sim:
        yield sim


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_remote_worker_keeps_its_shard_and_the_master_merges_it(
        remote_sim: SimulatorProcess, tmp_path: Path) -> None:
    """The master's merged copy of the remote worker's shard is its own shard line for line
    (up to the worker's finish), every order the supplier created is in the shards, and the
    local worker wrote straight into the run folder."""
    remote_sim.reset()
    scenario = tmp_path / "burst-remote.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    env = {**os.environ, **fleet_env(load_fleet(FLEET), remote_sim.url)}
    address = f"127.0.0.1:{_free_port()}"
    master = subprocess.Popen(
        [sys.executable, "-m", "harness", "burst", str(scenario), "--results",
         str(tmp_path / "results"), "--no-live", "--workers", "1", "--remote-workers", "1",
         "--master-bind", address], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    remote = subprocess.Popen([sys.executable, "-c", REMOTE, address, str(tmp_path / "remote")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    try:
        _, master_err = master.communicate(timeout=60)
        _, remote_err = remote.communicate(timeout=20)
    finally:
        for proc in (master, remote):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert master.returncode == 0, master_err.decode(errors="replace")[-3000:]
    assert remote.returncode == 0, remote_err.decode(errors="replace")[-3000:]
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    (kept,) = (tmp_path / "remote" / run_dir.name).glob("events-w*.jsonl")
    merged = (run_dir / kept.name).read_text()
    # in order, and whole up to the worker's finish (a late callback may come after it)
    assert kept.read_text().startswith(merged)
    assert '"type":"burst_worker_finished"' in merged
    started = {json.loads(line)["worker"]: json.loads(line) for shard in
               run_dir.glob("events-w*.jsonl") for line in shard.read_text().splitlines()
               if '"type":"burst_worker_started"' in line}
    assert sorted(e["direct"] for e in started.values()) == [False, True]
    planned = {json.loads(line)["client_order_id"] for shard in run_dir.glob("events-w*.jsonl")
               for line in shard.read_text().splitlines() if '"type":"order_planned"' in line}
    created = set(remote_sim.truth()["suppliers"]["healthy"]["client_order_ids"])
    assert len(created) == 60 and created <= planned
