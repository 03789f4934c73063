"""``trialbench resume RUN``: take up an interrupted run where its log stops.

The event log is the truth of what was sent: every write (order, refund, redeem) is in it
before it goes out. :func:`read_progress` reads it back; :func:`resume_run` then, for a
trial, asks each supplier by client order id about every order and refund that has no
final state, records the answers, and completes what is left of the plan (the same ids,
derived from the run id, so nothing is bought twice under a new name); for a burst, whose
schedule cannot be replayed, it only reconciles. The rules of asking and of placing again
(only after the supplier proves it holds no such order) are
:meth:`harness.run.lifecycle.OrderLife.resume` and
:meth:`harness.run.lifecycle.RefundLife.resume`.

A resume writes its own shard (``events-resume-<n>.jsonl``) and ends with
``resume_finished``; the run is complete again once that is in the log.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness.codes import CodeCheck
from harness.errors import HarnessError
from harness.events import FINISH_EVENTS, START_EVENTS, read_events


@dataclass
class PastOrder:
    """One order as the log of an interrupted run tells it."""

    supplier: str
    client_order_id: str
    sku: str
    intended_at: float
    listed_price: Decimal
    posted_at: float | None = None
    """When its last POST was logged (it may have gone out): None if never."""
    final: dict[str, Any] | None = None
    checks: list[CodeCheck] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        """Final in a known state: nothing to ask. ``unknown`` is not final."""
        final = self.final
        return final is not None and not final.get("interrupted") \
            and final["state"] != "unknown"

    @property
    def amount(self) -> Decimal:
        return Decimal(str(self.final.get("amount") or 0)) if self.final else Decimal(0)


@dataclass
class PastRefund:
    supplier: str
    client_order_id: str
    reason: str
    final: dict[str, Any] | None = None


@dataclass
class RunProgress:
    """What an interrupted run had done, from its log."""

    mode: str
    complete: bool
    orders: dict[tuple[str, str], PastOrder] = field(default_factory=dict)
    refunds: dict[tuple[str, str], PastRefund] = field(default_factory=dict)
    balances: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    redeemed: Counter[str] = field(default_factory=Counter)
    code_hashes: set[str] = field(default_factory=set)
    shards: int = 0

    def order(self, supplier: str, client_order_id: str) -> PastOrder | None:
        return self.orders.get((supplier, client_order_id))

    def unsettled(self) -> list[PastOrder]:
        return [o for o in self.orders.values() if not o.settled]

    def open_refunds(self) -> list[PastRefund]:
        return [r for r in self.refunds.values()
                if r.final is None or (not r.final.get("final") and r.final["state"] != "refused")]


def _check(event: dict[str, Any]) -> CodeCheck:
    def money(key: str) -> Decimal | None:
        value = event.get(key)
        return Decimal(str(value)) if value is not None else None

    return CodeCheck(code_hash=event["code_hash"], serial_masked=event.get("serial_masked", ""),
                     claimed_face_value=money("claimed_face_value") or Decimal(0),
                     expected_face_value=money("expected_face_value") or Decimal(0),
                     expires_at=None, pattern_ok=event.get("pattern_ok"),
                     duplicate_of=event.get("duplicate_of"),
                     face_value_ok=bool(event.get("face_value_ok")),
                     expiry_ok=bool(event.get("expiry_ok")),
                     issuer_status=event.get("issuer_status", "unchecked"),
                     issuer_face_value=money("issuer_face_value"), verdict=event["verdict"])


def read_progress(run_dir: Path) -> RunProgress:
    """Read every shard of ``run_dir``'s log into a :class:`RunProgress`."""
    from harness.results import load_manifest

    manifest = load_manifest(run_dir)
    progress = RunProgress(mode=str(manifest.get("mode", "trial")), complete=False,
                           shards=len(list(run_dir.glob("events*.jsonl"))))
    last_mark = ""
    for event in read_events(run_dir):
        kind = event["type"]
        key = (event.get("supplier", ""), event.get("client_order_id", ""))
        if kind in START_EVENTS:
            last_mark = kind
        elif kind in FINISH_EVENTS:
            last_mark = "interrupted" if event.get("interrupted") or event.get("failed") \
                else kind
        elif kind == "order_planned":
            progress.orders[key] = PastOrder(
                key[0], key[1], event["sku"], float(event["intended_at"]),
                Decimal(str(event["listed_price"])))
        elif kind == "order_attempt" and event.get("method") == "POST" and key in progress.orders:
            progress.orders[key].posted_at = float(event["t"])
        elif kind == "order_absent" and key in progress.orders:
            progress.orders[key].posted_at = None  # proven not held; a new POST follows
        elif kind == "order_final" and key in progress.orders:
            progress.orders[key].final = event
        elif kind == "code_checked" and key in progress.orders:
            progress.orders[key].checks.append(_check(event))
            progress.code_hashes.add(event["code_hash"])
        elif kind == "code_redeemed":
            progress.redeemed[key[0]] += 1
        elif kind == "refund_attempt":
            progress.refunds[key] = PastRefund(key[0], key[1], event.get("reason", "other"))
        elif kind == "refund_final" and key in progress.refunds:
            progress.refunds[key].final = event
        elif kind == "balance_read":
            progress.balances[(key[0], event["phase"])] = Decimal(str(event["balance"]))
    progress.complete = last_mark in FINISH_EVENTS
    return progress


def _next_shard(run_dir: Path) -> str:
    n = 1
    while (run_dir / f"events-resume-{n}.jsonl").exists():
        n += 1
    return f"events-resume-{n}.jsonl"


def resume_run(run_dir: Path, *, env: dict[str, str] | None = None,
               show_progress: bool = True) -> RunProgress:
    """Resume ``run_dir``; the progress it started from. Rebuilds the tables and summary."""
    from harness.results import load_manifest
    from harness.runfolder import RunFolder
    from harness.scenario import load_scenario, scenario_hash
    from harness.summary import write_summary

    manifest = load_manifest(run_dir)
    progress = read_progress(run_dir)
    if progress.complete:
        raise HarnessError(f"{run_dir}: the run finished; nothing to resume")
    scenario_path = Path(str(manifest.get("scenario_file", "")))
    if not scenario_path.is_file():
        raise HarnessError(f"{run_dir}: its scenario {scenario_path} is gone; restore it "
                           "(the manifest names it) and resume again")
    if scenario_hash(scenario_path) != manifest.get("scenario_sha256"):
        raise HarnessError(f"{scenario_path}: changed since {run_dir.name} started; restore "
                           "the version the run used (its sha256 is in manifest.json)")
    scenario = load_scenario(scenario_path, env if env is not None else dict(os.environ))
    folder = RunFolder.reopen(run_dir, scenario, log_name=_next_shard(run_dir))
    interrupted = True
    try:
        folder.log.write("run_resumed", mode=progress.mode,
                         unsettled_orders=len(progress.unsettled()),
                         open_refunds=len(progress.open_refunds()))
        if progress.mode == "trial":
            from harness.run.trial import run_trial_async

            asyncio.run(run_trial_async(scenario, folder, show_progress=show_progress,
                                        past=progress))
        else:
            asyncio.run(reconcile_burst(scenario, folder, progress))
        folder.log.write("resume_finished", mode=progress.mode)
        interrupted = False
    finally:
        folder.manifest.setdefault("resumes", []).append(time.time())
        if not interrupted and folder.manifest.get("failed"):
            # reconciled: the run is whole again; what happened to it stays on record
            folder.manifest["failed_before_resume"] = folder.manifest.pop("failed")
        folder.close(interrupted=interrupted)
    if progress.mode == "trial":
        write_summary(folder.path, scenario)
    return progress


async def reconcile_burst(scenario: Any, folder: Any, progress: RunProgress) -> None:
    """Ask about every burst order the log leaves unsettled; place nothing."""
    import random

    from harness.codes import DuplicateIndex, load_code_key
    from harness.drivers.base import Credentials
    from harness.drivers.reference import ReferenceIssuer, build_driver
    from harness.run.async_transport import AsyncTransport, drive
    from harness.run.budget import Budget, RetryBudget
    from harness.run.lifecycle import Rules, SupplierSide

    plan = scenario.burst
    if plan is None:
        raise HarnessError(f"{folder.path}: the scenario has no burst plan to reconcile")
    rules = Rules.of(plan, follow_s=plan.deadline_s)
    unsettled = progress.unsettled()
    issuer = None
    if scenario.issuer is not None:
        issuer = ReferenceIssuer(scenario.issuer.base_url,
                                 scenario.issuer.api_key.get_secret_value())
    duplicates = DuplicateIndex(progress.code_hashes)
    code_key = load_code_key(folder.root)
    transport = AsyncTransport(plan.request_timeout_s, max_body_bytes=plan.max_body_bytes)
    try:
        for config in scenario.suppliers:
            mine = [o for o in unsettled if o.supplier == config.name]
            if not mine:
                continue
            budget = Budget(Decimal("1e12"))  # asking buys nothing: only a record of cost
            side = SupplierSide(
                name=config.name, driver=build_driver(config.driver, config.base_url, Credentials(
                    config.credentials.api_key.get_secret_value(),
                    config.credentials.secret.get_secret_value())),
                rules=rules, log=folder.log, budget=budget,
                retry=RetryBudget(0.0, len(mine) * rules.max_resolve_gets),
                clock=time.time, mode="burst", worker="resume", issuer=issuer,
                code_key=code_key, duplicates=duplicates, rng=random.Random(config.name))
            await drive(transport, side.read_catalog())
            lives = []
            for past in mine:
                product = config.product(past.sku)
                life = side.new_order(past.client_order_id, product, past.intended_at)
                life.listed_price = past.listed_price
                lives.append(drive(transport, life.resume(past.posted_at, may_place=False)))
            await asyncio.gather(*lives)
    finally:
        await transport.aclose()


__all__ = ["PastOrder", "PastRefund", "RunProgress", "read_progress", "reconcile_burst",
           "resume_run"]
