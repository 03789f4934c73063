"""Plain Locust beside ``bench/stall_bench.py``: the same signed POSTs at the same rate
against the same simulated supplier, the way a Locust user would write it (a few users,
each at a constant throughput; a closed loop: a user waits for its answer before its next
request). Locust times each request from its actual send.

Environment: ``TB_STALL_KEY``, ``TB_STALL_SECRET``, ``TB_STALL_PATH`` (the supplier's base
path), ``TB_STALL_RATE`` (requests per second per user), ``TB_STALL_MARK`` (a file this
writes ``time.time()`` to when the test starts, so the benchmark can time the stall).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task

from harness.protocol import signed_headers

KEY = os.environ.get("TB_STALL_KEY", "")
SECRET = os.environ.get("TB_STALL_SECRET", "")
BASE = os.environ.get("TB_STALL_PATH", "/suppliers/fixed")


@events.test_start.add_listener
def _mark(**_: Any) -> None:
    mark = os.environ.get("TB_STALL_MARK")
    if mark:
        Path(mark).write_text(repr(time.time()), encoding="utf-8")


class PlainOrderUser(FastHttpUser):
    """One signed POST per task, at a constant throughput per user."""

    wait_time = constant_throughput(float(os.environ.get("TB_STALL_RATE", "1")))

    @task
    def order(self) -> None:
        body = json.dumps({"client_order_id": "s" + uuid.uuid4().hex[:20], "sku": "card-10",
                           "quantity": 1}).encode()
        path = f"{BASE}/v1/orders"
        self.client.post(path, data=body, name="place",
                         headers={**signed_headers(KEY, SECRET, "POST", path, body),
                                  "Content-Type": "application/json"})
