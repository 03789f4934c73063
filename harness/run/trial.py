"""Trial batches: the merchant's careful trial, automated; the asyncio executor.

For every supplier at once: read the catalog and the balance, place N orders across
the product mix, follow every order to a final state or past its deadline (polling with
backoff, callbacks, or both), check every delivered code, redeem a sample, request
refunds as the plan says and follow them, and read the balance again so hidden fees and
refunds that never came back are measured.

Every rule of an order, a refund, a read and a code check is in
:mod:`harness.run.lifecycle`; this module only orders the work of a trial and drives the
lifecycle over asyncio (:func:`harness.run.async_transport.drive`). Nothing here raises
for what a supplier does: it is all events.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from harness.codes import REFUND_REASON_FOR, DuplicateIndex, load_code_key
from harness.drivers.base import Credentials
from harness.drivers.reference import ReferenceIssuer, build_driver
from harness.events import EventLog
from harness.progress import TrialProgress
from harness.run.async_transport import AsyncTransport, drive
from harness.run.budget import Budget, RetryBudget, fair_share
from harness.run.callbacks import CallbackReceiver, RawCallback, acknowledged
from harness.run.lifecycle import (
    OrderLife,
    RefundLife,
    Rules,
    Steps,
    SupplierSide,
    attribute_credit,
    callback_supplier,
    order_prefix,
)
from harness.runfolder import RunFolder, earlier_code_hashes
from harness.scenario import ProductConfig, Scenario, SupplierConfig, TrialPlan
from harness.summary import scenario_names

if TYPE_CHECKING:
    from harness.run.resume import PastOrder, RunProgress

T = TypeVar("T")

GRACE_FACTOR = 1.0
"""Orders are followed for ``deadline_s * (1 + GRACE_FACTOR)`` so that late deliveries are
recorded as late (an SLA miss with its real time), not lost."""


class TrialRun:
    """Everything shared by the suppliers of one trial run."""

    def __init__(self, scenario: Scenario, folder: RunFolder, transport: AsyncTransport,
                 progress: TrialProgress, past: RunProgress | None = None) -> None:
        if scenario.trial is None:
            raise ValueError("scenario has no trial plan")
        self.scenario = scenario
        self.plan: TrialPlan = scenario.trial
        self.folder = folder
        self.log: EventLog = folder.log
        self.transport = transport
        self.progress = progress
        self.past = past
        self.order_prefix = order_prefix(folder.path.name, "trial")
        self.receiver = CallbackReceiver(self.on_callback, self.plan.callback.bind,
                                         on_reject=self._rejected)
        rules = Rules.of(self.plan, follow_s=self.plan.deadline_s * (1 + GRACE_FACTOR))
        issuer = None
        if scenario.issuer is not None:
            issuer = ReferenceIssuer(scenario.issuer.base_url,
                                     scenario.issuer.api_key.get_secret_value())
        code_key = load_code_key(folder.root)
        duplicates = DuplicateIndex(earlier_code_hashes(folder.root, exclude=folder.path))
        if past is not None:
            for digest in past.code_hashes:
                duplicates.see(digest)  # this run's codes, checked before the interruption
        share = fair_share(self.plan.spending_cap, len(scenario.suppliers))
        self.sides: dict[str, SupplierSide] = {}
        for config in scenario.suppliers:
            self.sides[config.name] = SupplierSide(
                name=config.name, driver=build_driver(config.driver, config.base_url, Credentials(
                    config.credentials.api_key.get_secret_value(),
                    config.credentials.secret.get_secret_value())),
                rules=rules, log=self.log, budget=Budget(share),
                retry=RetryBudget(self.plan.retries.ratio, self.plan.retries.reserve),
                clock=time.time, mode="trial", worker="trial",
                tally=lambda name, key, _value: progress.count(name, key),
                issuer=issuer, code_key=code_key, duplicates=duplicates,
                keep_plain_code=folder.keep_plain_code,
                rng=random.Random(f"{scenario.seed}:{config.name}:backoff"))
        self.configs = {s.name: s for s in scenario.suppliers}
        self.balance_locks = {name: asyncio.Lock() for name in self.sides}
        self.balance_before: dict[str, Decimal | None] = {}

    async def drive(self, steps: Steps[T], news: asyncio.Event | None = None) -> T:
        return await drive(self.transport, steps, news=news)

    def draw_products(self, supplier: SupplierConfig) -> list[ProductConfig]:
        """The product of each order, drawn reproducibly from the scenario's seed."""
        weights = self.plan.weights_for(supplier)
        rng = random.Random(f"{self.scenario.seed}:{supplier.name}")
        skus = rng.choices(list(weights), list(weights.values()), k=self.plan.orders_per_supplier)
        return [supplier.product(sku) for sku in skus]

    def on_callback(self, raw: RawCallback) -> int | tuple[int, bytes]:
        name = callback_supplier(raw.path)
        side = self.sides.get(name) if name is not None else None
        if side is None:
            self.log.write("callback_received", supplier="", client_order_id="",
                           verdict="unknown_supplier", path=raw.path[:100])
            return 404
        return acknowledged(side, side.on_callback(raw.method, raw.path, raw.headers, raw.body))

    def _rejected(self, reason: str, path: str) -> None:
        self.log.write("callback_received", supplier="", client_order_id="",
                       verdict=f"rejected_{reason}", path=path[:100])

    # one supplier
    async def run_supplier(self, side: SupplierSide) -> None:
        plan = self.plan
        past = self.past
        await self.drive(side.read_catalog())
        before = past.balances.get((side.name, "before")) if past is not None else None
        if before is None:
            before = await self.drive(side.read_balance("before"))
        side.last_balance = self.balance_before[side.name] = before
        products = self.draw_products(self.configs[side.name])
        semaphore = asyncio.Semaphore(plan.concurrency)

        async def one(index: int, product: ProductConfig) -> None:
            async with semaphore:
                await self.run_order(side, index, product)

        # every order runs to its end before the supplier's trial goes on, even if one
        # hits a harness fault: none is left in flight behind the finish event
        for fault in await asyncio.gather(*(one(i, p) for i, p in enumerate(products)),
                                          return_exceptions=True):
            if isinstance(fault, Exception):
                self.log.write("supplier_error", supplier=side.name, operation="order",
                               kind="harness_fault",
                               error=f"{type(fault).__name__}: {fault}"[:300])
            elif isinstance(fault, BaseException):
                raise fault  # Ctrl-C, cancellation: the run is interrupted
        after = past.balances.get((side.name, "after_orders")) if past is not None else None
        if after is None:  # (read before the interruption: later ones may hold refunds)
            after = await self.drive(side.read_balance("after_orders"))
        side.last_balance = after
        await self.redeem_sample(side)
        await self.after_sales(side)
        await self.drive(side.read_balance("after_refunds"))

    async def guard(self, side: SupplierSide) -> None:
        """One supplier's whole trial; a harness fault there is logged, and the other
        suppliers keep their orders, balance reads and refunds."""
        try:
            await self.run_supplier(side)
        except Exception as exc:  # a bug in one supplier's work must not end the run
            self.log.write("supplier_error", supplier=side.name, operation="trial",
                           kind="harness_fault", error=f"{type(exc).__name__}: {exc}"[:300])

    async def run_order(self, side: SupplierSide, index: int, product: ProductConfig) -> None:
        cid = f"{self.order_prefix}-{side.name}-{index:04d}"[:64]
        past = self.past.order(side.name, cid) if self.past is not None else None
        if past is not None and past.settled:
            self.restore(side, product, past)
            return
        life = side.new_order(cid, product, time.time())
        await self.watch_spending(side, life.listed_price)
        news = asyncio.Event()
        life.wake = news.set
        try:
            if past is None:
                await self.drive(life.steps(), news)
            else:  # sent (or planned) before the interruption: ask, never buy again blindly
                if past.posted_at is not None:
                    life.intended_at = past.intended_at
                await self.drive(life.resume(past.posted_at, may_place=True), news)
        finally:
            life.finish("unknown", interrupted=True)  # a no-op unless cancelled mid-way

    def restore(self, side: SupplierSide, product: ProductConfig, past: PastOrder) -> None:
        """An order the interrupted run settled: counted against the cap, and kept for
        the after-sales plan, with no request."""
        life = side.new_order(past.client_order_id, product, past.intended_at)
        assert past.final is not None
        life.final_state = past.final["state"]
        life.accepted = True
        life.checks = list(past.checks)
        reserved = side.budget.reserve(past.listed_price, held=True) or Decimal(0)
        side.budget.settle(reserved, past.amount)
        self.progress.count(side.name, life.final_state)

    async def watch_spending(self, side: SupplierSide, price: Decimal) -> None:
        """Near the cap, read the balance before the next order, so hidden fees count."""
        before = self.balance_before.get(side.name)
        budget = side.budget
        per_order = (price + budget.fee_per_order) * side.rules.quantity
        if before is None or budget.room() >= per_order * (self.plan.concurrency + 1):
            return
        async with self.balance_locks[side.name]:
            balance = await self.drive(side.read_balance("spend_check"))
        if balance is not None:
            budget.observe(before - balance)

    # after-sales
    def _unused_refund_orders(self, side: SupplierSide) -> list[OrderLife]:
        delivered = [life for life in side.orders.values()
                     if life.final_state in ("success", "partial")
                     and all(c.verdict == "valid" for c in life.checks)]
        return delivered[: self.plan.after_sales.refund_unused]

    async def redeem_sample(self, side: SupplierSide) -> None:
        """Redeem ``redeem_sample`` valid codes, never from orders kept for an unused refund."""
        if side.issuer is None or self.plan.redeem_sample <= 0:
            return
        keep = {life.client_order_id for life in self._unused_refund_orders(side)}
        left = self.plan.redeem_sample - (self.past.redeemed[side.name] if self.past else 0)
        for life in side.orders.values():
            if life.client_order_id in keep:
                continue
            for code, check in zip(life.codes, life.checks, strict=False):
                if left <= 0:
                    return
                if check.verdict == "valid":
                    await self.drive(life.redeem(code, check))
                    left -= 1

    async def after_sales(self, side: SupplierSide) -> None:
        if not getattr(side.driver, "supports_refunds", True):
            self.log.write("refunds_unsupported", supplier=side.name)  # the dialect has none
            return
        plan = self.plan.after_sales
        past = self.past
        resumed: list[RefundLife] = []
        if past is not None:  # refunds the interrupted run asked for
            for refund in past.refunds.values():
                if refund.supplier != side.name:
                    continue
                if refund in past.open_refunds():
                    resumed.append(RefundLife(side, refund.client_order_id, refund.reason))
                else:
                    side.refunds[refund.client_order_id] = RefundLife(
                        side, refund.client_order_id, refund.reason, attributed=True)
        asked_before = {cid for (name, cid) in past.refunds if name == side.name} \
            if past is not None else set()
        wanted: dict[str, str] = {}
        for life in self._unused_refund_orders(side):
            wanted[life.client_order_id] = "unused"
        if plan.refund_bad_codes:
            for life in side.orders.values():
                bad = [c.verdict for c in life.checks if c.verdict != "valid"]
                if bad and life.final_state in ("success", "partial"):
                    wanted[life.client_order_id] = REFUND_REASON_FOR.get(bad[0], "other")
        for cid in asked_before:
            wanted.pop(cid, None)
        if not wanted and not resumed:
            return
        # every request is answered before any credit is attributed, so a refund the
        # supplier already credited is never missing from the group it belongs to
        refunds = [RefundLife(side, cid, reason) for cid, reason in wanted.items()]
        held = await asyncio.gather(*(self.drive(r.request()) for r in refunds),
                                    *(self.drive(r.resume()) for r in resumed))
        refunds += resumed
        until = time.time() + plan.refund_follow_s
        await asyncio.gather(*(self.follow_refund(r, until)
                               for r, ok in zip(refunds, held, strict=True) if ok))

    async def follow_refund(self, refund: RefundLife, until: float) -> None:
        await self.drive(refund.follow(until))
        if refund.completed and not refund.attributed:
            async with self.balance_locks[refund.side.name]:
                if not refund.attributed:
                    await self.drive(attribute_credit(refund.side))
        refund.finish()

    async def run(self) -> None:
        await self.receiver.start()
        # suppliers are given the public URL (a tunnel, a reverse proxy) when there is one
        public = self.plan.callback.public_url or self.receiver.url
        callback_url = public if self.plan.delivery != "poll" else None
        for side in self.sides.values():
            side.callback_url = f"{callback_url}/callbacks/{side.name}" if callback_url else None
        if self.past is None:
            self.log.write("trial_started", suppliers=list(self.sides),
                           orders_per_supplier=self.plan.orders_per_supplier,
                           callback_url=callback_url, order_prefix=self.order_prefix)
        try:
            async with self.progress:
                await asyncio.gather(*(self.guard(s) for s in self.sides.values()))
        except BaseException as exc:
            self.log.write("run_interrupted", reason=type(exc).__name__)
            raise
        finally:
            await self.receiver.stop()
        # the finish event: a run without it is interrupted (see harness.run.resume)
        self.log.write("trial_finished", cap=self.plan.spending_cap,
                       budgets={n: {"cap": s.budget.cap, "committed": s.budget.committed,
                                    "fees": s.budget.fees} for n, s in self.sides.items()},
                       retries={n: {"first": s.retry.first, "extra": s.retry.extra,
                                    "denied": s.retry.denied}
                                for n, s in self.sides.items()})


async def run_trial_async(scenario: Scenario, folder: RunFolder, *,
                          show_progress: bool = True, past: RunProgress | None = None) -> None:
    """Run the trial of ``scenario`` into ``folder`` (which the caller opened)."""
    plan = scenario.trial
    if plan is None:
        raise ValueError("scenario has no trial plan")
    transport = AsyncTransport(plan.request_timeout_s,
                               max_connections=max(20, plan.concurrency * len(scenario.suppliers)
                                                   + 20),
                               max_body_bytes=plan.max_body_bytes)
    progress = TrialProgress([s.name for s in scenario.suppliers], plan.orders_per_supplier,
                             enabled=show_progress, names=scenario_names(scenario))
    # everything alive now (modules, the scenario) lives as long as the run: out of the
    # cyclic GC's sight, as in burst workers, so a full collection mid-trial is short and
    # does not land in an answer's latency
    gc.freeze()
    try:
        await TrialRun(scenario, folder, transport, progress, past).run()
    finally:
        await transport.aclose()


def worst_case_cost(scenario: Scenario, *, clamp: bool = True) -> Decimal:
    """The most the trial could spend: every order at the highest face value it may draw
    (a price above face value is not expected), never more than the spending cap unless
    ``clamp`` is False."""
    plan = scenario.trial
    if plan is None:
        return Decimal(0)
    total = Decimal(0)
    for supplier in scenario.suppliers:
        dearest = max(supplier.product(sku).face_value for sku in plan.weights_for(supplier))
        total += dearest * plan.quantity * plan.orders_per_supplier
    return min(total, plan.spending_cap) if clamp else total


def detectable_rate(n: int, probability: float = 0.95) -> float:
    """The smallest fault rate that ``n`` independent draws show at least once with
    ``probability``: 1 - (1 - probability) ** (1 / n); 1.0 when n is 0."""
    return 1.0 - (1.0 - probability) ** (1.0 / n) if n > 0 else 1.0


def print_plan(scenario: Scenario) -> None:
    """The dry run: what would be ordered where, the worst-case cost (with a warning when
    it exceeds the cap), and what the plan can detect."""
    plan = scenario.trial
    if plan is None:
        raise ValueError("scenario has no trial plan")
    print(f"trial plan of {scenario.name!r}: {plan.orders_per_supplier} orders × "
          f"{plan.quantity} per supplier, deadline {plan.deadline_s:g} s, "
          f"delivery by {plan.delivery}")
    per_supplier_codes = []
    for supplier in scenario.suppliers:
        weights = plan.weights_for(supplier)
        mix = ", ".join(f"{sku} {share:.0%}" for sku, share in weights.items())
        print(f"  {supplier.name:<12} {supplier.base_url}  [{mix}]")
        card = sum(share for sku, share in weights.items()
                   if supplier.product(sku).kind == "card")
        if card:
            per_supplier_codes.append(int(plan.orders_per_supplier * plan.quantity * card))
    worst = worst_case_cost(scenario, clamp=False)
    print(f"worst-case cost: {min(worst, plan.spending_cap)} (spending cap "
          f"{plan.spending_cap}); nothing was sent")
    if worst > plan.spending_cap:
        share = plan.spending_cap / len(scenario.suppliers)
        print(f"warning: the worst case {worst} exceeds the spending cap "
              f"{plan.spending_cap}: each supplier gets {share:.2f} of it and orders beyond "
              "their share are blocked, never sent (the summary and the report count them)")
    orders, refunds = plan.orders_per_supplier, plan.after_sales.refund_unused
    codes = min(per_supplier_codes, default=0)
    print("this plan detects, per supplier, with 95% probability (at least one seen): "
          f"a bad-code rate of {detectable_rate(codes):.1%} or more (at least {codes} codes "
          "where cards are sold), "
          f"an oversold-order rate of {detectable_rate(orders):.1%} or more ({orders} "
          f"orders), a phantom-refund rate of {detectable_rate(refunds):.1%} or more "
          f"({refunds} refunds of unused orders), and any hidden fee from the balance")
    print(f"{orders} orders measure a 95% share within the SLA to about ±"
          f"{_half_width(orders):.0%} (Jeffreys 95% interval); for every tie the report "
          "says how many orders would split it")


def _half_width(n: int) -> float:
    from harness.metrics import jeffreys

    k = round(0.95 * n)
    lo, hi = jeffreys(k, n)
    return (hi - lo) / 2


def run_trial(scenario_path: Path, *, results_root: Path = Path("results"),
              env: dict[str, str] | None = None, show_progress: bool = True,
              callback_url: str | None = None) -> Path:
    """Load the scenario, run its trial, build the tables and the summary; the run folder.

    ``callback_url`` (``--callback-url``) replaces the scenario's ``callback.public_url``."""
    from harness.scenario import load_scenario, with_callback_url
    from harness.summary import write_summary

    scenario = load_scenario(scenario_path, env if env is not None else dict(os.environ))
    if callback_url is not None:
        scenario = with_callback_url(scenario, callback_url)
    with RunFolder.create(results_root, scenario, scenario_path, mode="trial") as folder:
        asyncio.run(run_trial_async(scenario, folder, show_progress=show_progress))
    write_summary(folder.path, scenario)
    return folder.path
