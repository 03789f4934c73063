"""Plain Locust, the baseline of ``bench/burst_memory.py``: the same orders at the same
rate against the same simulated supplier, with none of trialbench (no lifecycle, no event
log, no code checks): each task POSTs one signed order and reads it back once.

Environment: ``TB_BENCH_KEY``, ``TB_BENCH_SECRET``, ``TB_BENCH_PATH`` (the supplier's base
path, e.g. ``/suppliers/bench``), ``TB_BENCH_RATE`` (orders per second per user).
"""

from __future__ import annotations

import json
import os
import uuid

from locust import FastHttpUser, constant_throughput, task

from harness.protocol import signed_headers

KEY = os.environ.get("TB_BENCH_KEY", "")
SECRET = os.environ.get("TB_BENCH_SECRET", "")
BASE = os.environ.get("TB_BENCH_PATH", "/suppliers/bench")


class PlainOrderUser(FastHttpUser):
    """One order per task: POST it, then GET it once."""

    wait_time = constant_throughput(float(os.environ.get("TB_BENCH_RATE", "1")))

    @task
    def order(self) -> None:
        cid = "p" + uuid.uuid4().hex[:20]
        body = json.dumps({"client_order_id": cid, "sku": "card-10", "quantity": 1}).encode()
        path = f"{BASE}/v1/orders"
        self.client.post(path, data=body, name="place",
                         headers={**signed_headers(KEY, SECRET, "POST", path, body),
                                  "Content-Type": "application/json"})
        get = f"{path}/{cid}"
        self.client.get(get, name="get", headers=signed_headers(KEY, SECRET, "GET", get, b""))
