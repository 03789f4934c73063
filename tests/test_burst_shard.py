"""A burst worker's shard of the event log (``harness.run.worker.ShardLog``), exercised in
a subprocess because the worker module imports Locust (which patches with gevent)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

SCRIPT = """
import json, sys
from pathlib import Path
from harness.run.worker import ShardLog, _is_run_folder

root = Path(sys.argv[1])
out = {}
for forward in (False, True):
    log = ShardLog()
    log.write("early", n=0)  # before open: waits for it
    path = root / f"forward-{forward}" / "events-w3.jsonl"
    log.open(path, forward=forward)
    log.write("order_attempt", client_order_id="c1", n=1)
    on_disk = path.read_text()  # before close: already in the OS's hands
    taken, again = log.take(), log.take()
    log.close()
    out[str(forward)] = {"on_disk": on_disk, "taken": taken, "again": again}
(root / "run").mkdir()
(root / "run" / "manifest.json").write_text(json.dumps({"run_id": "r1"}))
out["same"] = _is_run_folder(root / "run", "r1")
out["other_run"] = _is_run_folder(root / "run", "r2")
out["missing"] = _is_run_folder(root / "nowhere", "r1")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the script saw, run once for this module."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("shard"))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_shard_writes_each_event_before_returning(shard: dict[str, Any]) -> None:
    """Each event is in the shard file as a whole JSON line as soon as it is written (no
    flush or close needed), after any events written before the shard was opened; a local
    shard keeps nothing back for the master, a remote one keeps each line once."""
    out = shard
    for forward in ("False", "True"):
        lines = out[forward]["on_disk"].splitlines(keepends=True)
        assert all(line.endswith("\n") for line in lines)
        events = [json.loads(line) for line in lines]
        assert [e["type"] for e in events] == ["early", "order_attempt"]
        assert events[1]["client_order_id"] == "c1" and isinstance(events[1]["t"], float)
    assert out["False"]["taken"] == []
    assert [json.loads(x)["type"] for x in out["True"]["taken"]] == ["early", "order_attempt"]
    assert out["True"]["again"] == []


def test_worker_writes_directly_only_into_the_masters_run_folder(shard: dict[str, Any]
                                                                  ) -> None:
    """A worker writes straight into the run folder only when it sees that run's manifest
    (a local worker or a shared file system); otherwise it keeps its shard locally."""
    out = shard
    assert out["same"] is True
    assert out["other_run"] is False and out["missing"] is False
