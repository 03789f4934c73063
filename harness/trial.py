"""Trial batches: the merchant's careful trial, automated.

For every supplier at once: read the catalog and the balance, place N orders across
the product mix (each written to the event log *before* it is sent), follow every order
to a final state or past its deadline (polling with backoff, callbacks, or both),
check every delivered code, redeem a sample, request refunds as the plan says and
follow them, and read the balance again so hidden fees and refunds that never came
back are measured. Nothing here raises for what a supplier does: it is all events.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from harness.budget import Budget
from harness.callbacks import CallbackReceiver, RawCallback
from harness.codes import (
    REFUND_REASON_FOR,
    CodeCheck,
    DuplicateIndex,
    check_code,
    load_code_key,
)
from harness.drivers.base import (
    Code,
    Credentials,
    Failure,
    HttpRequest,
    HttpResponse,
    IssuerVerdict,
    Order,
    OrderRequest,
    Product,
    Refund,
    supersedes,
)
from harness.drivers.reference import ReferenceIssuer, build_driver
from harness.events import EventLog, accepted_fields, final_fields
from harness.progress import TrialProgress
from harness.runfolder import RunFolder, earlier_code_hashes
from harness.scenario import ProductConfig, Scenario, SupplierConfig, TrialPlan
from harness.transport import AsyncTransport, retry_delay_s, send_read

MAX_PLACE_ROUNDS = 3
"""POSTs of one client order id at most; a repeat is always the same id, so it can at
worst be answered as a replay, never charged twice."""

GRACE_FACTOR = 1.0
"""Orders are followed for ``deadline_s * (1 + GRACE_FACTOR)`` so that late deliveries are
recorded as late (an SLA miss with its real time), not lost."""


@dataclass
class OrderFollow:
    """What the harness knows about one order while following it."""

    supplier: str
    client_order_id: str
    product: ProductConfig
    listed_price: Decimal
    intended_at: float
    deadline_at: float
    order: Order | None = None
    delivered_seen_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    checks: list[CodeCheck] = field(default_factory=list)
    codes: tuple[Code, ...] = ()
    final_state: str = "unknown"

    def offer(self, order: Order) -> bool:
        """Take ``order`` if it is a newer view (see :func:`supersedes`)."""
        if not supersedes(order, self.order):
            return False
        self.order = order
        if order.state.delivered and self.delivered_seen_at is None:
            self.delivered_seen_at = time.time()
        self.changed.set()
        return True


@dataclass
class RefundFollow:
    client_order_id: str
    reason: str
    refund: Refund | None = None
    attributed: bool = False
    credited_amount: Decimal | None = None
    credited: bool | None = None
    resolved_seen_at: float | None = None


class SupplierTrial:
    """One supplier's part of the trial."""

    def __init__(self, run: TrialRun, config: SupplierConfig) -> None:
        self.run = run
        self.config = config
        self.name = config.name
        self.driver = build_driver(config.driver, config.base_url, Credentials(
            config.credentials.api_key.get_secret_value(),
            config.credentials.secret.get_secret_value()))
        self.catalog: dict[str, Product] = {}
        self.follows: dict[str, OrderFollow] = {}
        self.refunds: dict[str, RefundFollow] = {}
        self.balance_lock = asyncio.Lock()
        self.last_balance: Decimal | None = None
        self.log = run.log

    # helpers
    async def _read(self, build: Callable[[], HttpRequest], deadline: float | None = None,
                    attempts: int = 5) -> Any:
        until = deadline if deadline is not None else time.monotonic() + 30
        response = await send_read(self.run.transport, build, max_attempts=attempts, until=until)
        return response

    async def read_balance(self, phase: str) -> Decimal | None:
        response = await self._read(self.driver.balance)
        balance = self.driver.parse_balance(response)
        if isinstance(balance, Failure):
            self.log.write("supplier_error", supplier=self.name, operation="balance",
                           phase=phase, kind=balance.kind, status=balance.status)
            return None
        self.log.write("balance_read", supplier=self.name, phase=phase, balance=balance.amount,
                       currency=balance.currency)
        return balance.amount

    # the whole supplier
    async def run_all(self) -> None:
        plan = self.run.plan
        response = await self._read(self.driver.catalog)
        catalog = self.driver.parse_catalog(response)
        if isinstance(catalog, Failure):
            self.log.write("supplier_error", supplier=self.name, operation="catalog",
                           kind=catalog.kind, status=catalog.status)
        else:
            self.catalog = {p.sku: p for p in catalog}
            self.log.write("catalog_read", supplier=self.name,
                           products=[{"sku": p.sku, "price": p.price, "stock": p.stock,
                                      "face_value": p.face_value} for p in catalog])
        self.last_balance = await self.read_balance("before")

        products = self.run.draw_products(self.config)
        semaphore = asyncio.Semaphore(plan.concurrency)

        async def one(index: int, product: ProductConfig) -> None:
            async with semaphore:
                await self.run_order(index, product)

        await asyncio.gather(*(one(i, p) for i, p in enumerate(products)))
        self.last_balance = await self.read_balance("after_orders")
        await self.redeem_sample()
        await self.after_sales()
        await self.read_balance("after_refunds")

    # one order
    async def run_order(self, index: int, product: ProductConfig) -> None:
        plan = self.run.plan
        client_order_id = f"{self.run.order_prefix}-{self.name}-{index:04d}"[:64]
        listed = self.catalog.get(product.sku)
        listed_price = listed.price if listed is not None else product.face_value
        now = time.time()
        follow = OrderFollow(self.name, client_order_id, product, listed_price, now,
                             now + plan.deadline_s)
        self.follows[client_order_id] = follow
        self.log.write("order_planned", mode="trial", worker="trial", supplier=self.name,
                       client_order_id=client_order_id, sku=product.sku,
                       quantity=plan.quantity, intended_at=now, deadline_s=plan.deadline_s,
                       listed_price=listed_price, sale_price=product.sale_price,
                       face_value=product.face_value)
        self.run.progress.count(self.name, "planned")
        reserved = listed_price * plan.quantity
        if not self.run.budget.reserve(reserved):
            self.log.write("spend_blocked", supplier=self.name, client_order_id=client_order_id,
                           needed=reserved, committed=self.run.budget.committed,
                           cap=self.run.budget.cap)
            self._final(follow, "skipped")
            self.run.progress.count(self.name, "skipped")
            return
        follow_until = now + plan.deadline_s * (1 + GRACE_FACTOR)
        accepted = await self.place(follow, follow_until)
        if accepted:
            self.run.progress.count(self.name, "accepted")
            await self.follow_order(follow, follow_until)
        order = follow.order
        state = "unknown"
        if order is not None and order.state.is_final:
            state = order.state.value
        elif not accepted and follow.final_state == "failed":
            state = "failed"
        if order is not None and order.state.delivered:
            await self.check_codes(follow, order)
        actual = order.amount if order is not None else Decimal(0)
        # an order still open may be charged later: keep its reservation
        self.run.budget.settle(reserved, actual if state != "unknown" else reserved)
        self._final(follow, state)
        self.run.progress.count(self.name, state)
        if follow.delivered_seen_at is not None \
                and follow.delivered_seen_at - follow.intended_at <= plan.deadline_s:
            self.run.progress.count(self.name, "in_sla")

    def _final(self, follow: OrderFollow, state: str) -> None:
        follow.final_state = state
        self.log.write("order_final", supplier=self.name,
                       client_order_id=follow.client_order_id,
                       **final_fields(follow.order, state, follow.delivered_seen_at,
                                      follow.deadline_at))

    def _observe(self, follow: OrderFollow, order: Order, source: str) -> None:
        if follow.offer(order):
            self.log.write("order_observed", supplier=self.name,
                           client_order_id=follow.client_order_id, state=order.state.value,
                           updated_at=order.updated_at, source=source)

    def _accepted(self, follow: OrderFollow, status: int, order: Order, *, via: str) -> None:
        """The supplier holds the order (learnt from the POST, or by asking after one)."""
        self.log.write("order_accepted", supplier=self.name,
                       client_order_id=follow.client_order_id,
                       **accepted_fields(order, status, via))
        self._observe(follow, order, "post" if via == "post" else "poll")

    async def place(self, follow: OrderFollow, until: float) -> bool:
        """POST the order; on an unknown outcome ask by id before ever POSTing again.

        Returns True once the supplier is known to hold the order.
        """
        plan = self.run.plan
        callback_url = None
        if plan.delivery in ("callback", "both"):
            callback_url = f"{self.run.receiver.url}/callbacks/{self.name}"
        request = OrderRequest(follow.client_order_id, follow.product.sku, plan.quantity,
                               follow.product.account, callback_url)
        rounds = 0
        attempt = 0
        while rounds < MAX_PLACE_ROUNDS and time.time() < until:
            attempt += 1
            self.log.write("order_attempt", supplier=self.name,
                           client_order_id=follow.client_order_id, attempt=attempt,
                           method="POST")
            response = await self.run.transport.send(self.driver.place_order(request))
            result = self.driver.parse_order(response)
            if not isinstance(result, Failure):
                self._accepted(follow, response.status, result, via="post")
                return True
            self.log.write("order_error", supplier=self.name,
                           client_order_id=follow.client_order_id, kind=result.kind,
                           status=result.status, phase="place")
            if result.status == 429:
                await asyncio.sleep(min(retry_delay_s(response, attempt) or 1.0,
                                        max(0.0, until - time.time())))
                continue
            if not result.outcome_unknown:
                follow.final_state = "failed"  # refused: nothing was bought
                return False
            rounds += 1
            if await self.resolve_unknown(follow, until):
                return True
        if rounds == 0:
            follow.final_state = "failed"  # only ever refused (429 to the end): nothing bought
        return False

    async def _ask(self, follow: OrderFollow, attempt: int, phase: str
                   ) -> tuple[HttpResponse, Order | Failure]:
        """``GET`` the order by its client id, logging the attempt and any failure."""
        self.log.write("order_attempt", supplier=self.name,
                       client_order_id=follow.client_order_id, attempt=attempt, method="GET")
        response = await self.run.transport.send(self.driver.get_order(follow.client_order_id))
        result = self.driver.parse_order(response)
        if isinstance(result, Failure):
            self.log.write("order_error", supplier=self.name,
                           client_order_id=follow.client_order_id, kind=result.kind,
                           status=result.status, phase=phase)
        return response, result

    async def resolve_unknown(self, follow: OrderFollow, until: float) -> bool:
        """Ask by client order id, riding out a not-found window; True if it exists."""
        window_end = min(until, time.time() + self.run.plan.unknown_outcome_window_s)
        attempt = 0
        while time.time() < window_end:
            attempt += 1
            response, result = await self._ask(follow, attempt, "resolve")
            if not isinstance(result, Failure):
                self._accepted(follow, response.status, result, via="get")
                return True
            delay = retry_delay_s(response, attempt) or min(2.0, 0.25 * 2 ** (attempt - 1))
            await asyncio.sleep(min(delay, max(0.0, window_end - time.time())))
        return False

    async def follow_order(self, follow: OrderFollow, until: float) -> None:
        """Poll with backoff and/or wait for callbacks until final or ``until``."""
        plan = self.run.plan
        polling = plan.delivery in ("poll", "both")
        interval = plan.poll.initial_interval_s
        attempt = 0
        while not (follow.order is not None and follow.order.state.is_final):
            remaining = until - time.time()
            if remaining <= 0:
                break
            follow.changed.clear()
            wait = min(interval, remaining) if polling else remaining
            try:
                await asyncio.wait_for(follow.changed.wait(), wait)
                continue  # a callback brought news
            except TimeoutError:
                pass
            if not polling:
                break  # callbacks only: the deadline passed without news
            attempt += 1
            response, result = await self._ask(follow, attempt, "follow")
            if isinstance(result, Failure):
                delay = retry_delay_s(response, attempt)
                if delay is not None:
                    interval = max(interval, delay)
            else:
                self._observe(follow, result, "poll")
            interval = min(plan.poll.max_interval_s, interval * plan.poll.backoff_factor)
        if not polling and not (follow.order is not None and follow.order.state.is_final):
            # callbacks only: one last look, so the recorded state is the real one
            _, result = await self._ask(follow, attempt + 1, "follow")
            if not isinstance(result, Failure):
                self._observe(follow, result, "poll")

    async def on_callback(self, raw: RawCallback) -> int:
        """Verify and apply one callback; 401 for a forgery, 200 otherwise."""
        event = self.driver.verify_callback(raw.method, raw.path, raw.headers, raw.body)
        if isinstance(event, Failure):
            verdict = "forged" if event.kind == "forged_callback" else "bad"
            self.log.write("callback_received", supplier=self.name, client_order_id="",
                           verdict=verdict, reason=event.message)
            self.run.progress.count(self.name, "forged_callbacks")
            return 401 if verdict == "forged" else 400
        follow = self.follows.get(event.order.client_order_id)
        if follow is None:
            self.log.write("callback_received", supplier=self.name,
                           client_order_id=event.order.client_order_id, verdict="unknown_order",
                           event=event.event)
            return 200
        accepted = follow.offer(event.order)
        if event.order.refund is not None:
            refund = self.refunds.get(follow.client_order_id)
            if refund is not None:
                self._refund_seen(refund, event.order.refund)
        self.log.write("callback_received", supplier=self.name,
                       client_order_id=follow.client_order_id,
                       verdict="accepted" if accepted else "stale", event=event.event,
                       state=event.order.state.value, updated_at=event.order.updated_at)
        if accepted:
            self.log.write("order_observed", supplier=self.name,
                           client_order_id=follow.client_order_id,
                           state=event.order.state.value, updated_at=event.order.updated_at,
                           source="callback")
        return 200

    # codes
    async def check_codes(self, follow: OrderFollow, order: Order) -> None:
        run = self.run
        follow.codes = order.codes
        now = datetime.now(UTC)
        listed = self.catalog.get(follow.product.sku)
        pattern = follow.product.code_pattern or (listed.code_pattern if listed else None)
        for code in order.codes:
            verdict: IssuerVerdict | None = None
            issuer = run.issuer
            if issuer is not None:
                response = await self._read(partial(issuer.check, code.serial, code.pin))
                parsed = issuer.parse_check(response)
                verdict = parsed if not isinstance(parsed, Failure) else IssuerVerdict(
                    "unchecked")
            check = check_code(code, key=run.code_key, pattern=pattern,
                               expected_face_value=follow.product.face_value, now=now,
                               expiry_margin=timedelta(days=run.plan.expiry_margin_days),
                               duplicates=run.duplicates,
                               issuer=verdict if verdict is None or verdict.status != "unchecked"
                               else None)
            follow.checks.append(check)
            self.log.write("code_checked", supplier=self.name,
                           client_order_id=follow.client_order_id, sku=follow.product.sku,
                           code_hash=check.code_hash, serial_masked=check.serial_masked,
                           claimed_face_value=check.claimed_face_value,
                           expected_face_value=check.expected_face_value,
                           issuer_face_value=check.issuer_face_value,
                           expires_at=check.expires_at, pattern_ok=check.pattern_ok,
                           duplicate_of=check.duplicate_of, face_value_ok=check.face_value_ok,
                           expiry_ok=check.expiry_ok, issuer_status=check.issuer_status,
                           verdict=check.verdict)
            run.folder.keep_plain_code(self.name, follow.client_order_id, code, check.code_hash)
            if check.verdict != "valid":
                self.run.progress.count(self.name, "bad_codes")

    def _unused_refund_orders(self) -> list[OrderFollow]:
        delivered = [f for f in self.follows.values()
                     if f.final_state in ("success", "partial") and
                     all(c.verdict == "valid" for c in f.checks)]
        return delivered[: self.run.plan.after_sales.refund_unused]

    async def redeem_sample(self) -> None:
        """Redeem ``redeem_sample`` valid codes, never from orders kept for an unused refund."""
        run = self.run
        if run.issuer is None or run.plan.redeem_sample <= 0:
            return
        keep = {f.client_order_id for f in self._unused_refund_orders()}
        left = run.plan.redeem_sample
        for follow in self.follows.values():
            if follow.client_order_id in keep:
                continue
            for code, check in zip(follow.codes, follow.checks, strict=False):
                if left <= 0:
                    return
                if check.verdict != "valid":
                    continue
                response = await run.transport.send(run.issuer.redeem(code.serial, code.pin))
                parsed = run.issuer.parse_redeem(response)
                status = parsed.status if not isinstance(parsed, Failure) else parsed.kind
                self.log.write("code_redeemed", supplier=self.name,
                               client_order_id=follow.client_order_id,
                               code_hash=check.code_hash, status=status)
                left -= 1

    # after-sales
    async def after_sales(self) -> None:
        plan = self.run.plan.after_sales
        wanted: dict[str, str] = {}
        for follow in self._unused_refund_orders():
            wanted[follow.client_order_id] = "unused"
        if plan.refund_bad_codes:
            for follow in self.follows.values():
                bad = [c.verdict for c in follow.checks if c.verdict != "valid"]
                if bad and follow.final_state in ("success", "partial"):
                    wanted[follow.client_order_id] = REFUND_REASON_FOR.get(bad[0], "other")
        if not wanted:
            return
        # every request is answered before any credit is attributed, so a refund the
        # supplier already credited is never missing from the group it belongs to
        requested = await asyncio.gather(*(self.request_refund(cid, reason)
                                           for cid, reason in wanted.items()))
        until = time.monotonic() + plan.refund_follow_s
        await asyncio.gather(*(self.follow_refund(f, until) for f in requested if f is not None))

    async def request_refund(self, client_order_id: str, reason: str) -> RefundFollow | None:
        """POST the refund request; on no answer or a 5xx, ask whether it exists."""
        follow = RefundFollow(client_order_id, reason)
        self.refunds[client_order_id] = follow
        request = self.driver.request_refund(client_order_id, reason, None,
                                             "trialbench after-sales plan")
        response = await self.run.transport.send(request)
        result = self.driver.parse_refund(response)
        if isinstance(result, Failure) and result.outcome_unknown:
            asked = await self._read(partial(self.driver.get_refund, client_order_id))
            if not isinstance(found := self.driver.parse_refund(asked), Failure):
                result = found
        if isinstance(result, Failure):
            del self.refunds[client_order_id]
            code = result.kind.removeprefix(f"http_{result.status}").lstrip("_")
            state = "refused" if response.status == 409 else "error"
            self.log.write("refund_requested", supplier=self.name,
                           client_order_id=client_order_id, reason=reason,
                           status=response.status, error=code or result.kind, state=state)
            self.log.write("refund_final", supplier=self.name, client_order_id=client_order_id,
                           state=state, final=response.status == 409, amount=None)
            return None
        self.log.write("refund_requested", supplier=self.name, client_order_id=client_order_id,
                       reason=reason, status=response.status, state=result.state,
                       amount=result.amount, refund_id=result.refund_id)
        self.run.progress.count(self.name, "refunds")
        self._refund_seen(follow, result)
        return follow

    async def follow_refund(self, follow: RefundFollow, until: float) -> None:
        """Poll the refund to a final state or ``until``; attribute its credit; log it."""
        client_order_id = follow.client_order_id
        interval = self.run.plan.poll.initial_interval_s
        while not (follow.refund is not None and follow.refund.is_final):
            if time.monotonic() >= until:
                break
            await asyncio.sleep(min(interval, max(0.0, until - time.monotonic())))
            interval = min(self.run.plan.poll.max_interval_s,
                           interval * self.run.plan.poll.backoff_factor)
            response = await self.run.transport.send(self.driver.get_refund(client_order_id))
            polled = self.driver.parse_refund(response)
            if not isinstance(polled, Failure):
                self._refund_seen(follow, polled)
        if follow.refund is not None and follow.refund.state == "completed":
            await self.attribute_credit(follow)
        refund = follow.refund
        self.log.write("refund_final", supplier=self.name, client_order_id=client_order_id,
                       state=refund.state if refund else "error",
                       final=bool(refund and refund.is_final),
                       amount=refund.amount if refund else None,
                       resolved_seen_at=follow.resolved_seen_at,
                       credited_amount=follow.credited_amount, credited=follow.credited)
        if refund is not None and refund.state == "completed":
            self.run.progress.count(self.name, "refunds_completed")

    def _refund_seen(self, follow: RefundFollow, refund: Refund) -> None:
        if follow.refund is None or follow.refund.state != refund.state:
            self.log.write("refund_observed", supplier=self.name,
                           client_order_id=follow.client_order_id, state=refund.state,
                           amount=refund.amount)
        follow.refund = refund
        if refund.is_final and follow.resolved_seen_at is None:
            follow.resolved_seen_at = time.time()

    async def _refresh_refunds(self) -> frozenset[str]:
        """GET every refund of this supplier not yet final; the ids now completed."""
        for follow in list(self.refunds.values()):
            if follow.refund is not None and not follow.refund.is_final:
                response = await self.run.transport.send(
                    self.driver.get_refund(follow.client_order_id))
                polled = self.driver.parse_refund(response)
                if not isinstance(polled, Failure):
                    self._refund_seen(follow, polled)
        return frozenset(cid for cid, f in self.refunds.items()
                         if f.refund is not None and f.refund.state == "completed")

    async def attribute_credit(self, follow: RefundFollow) -> None:
        """Attribute the balance's rise to the refunds completed since the last reading.

        The set of completed refunds is read before and after the balance until it is
        the same twice, so the rise and the group match. Exact for a group of one; for
        several, each is credited only if the rise covers them all, not if it is zero,
        and unknown otherwise.
        """
        async with self.balance_lock:
            if follow.attributed:
                return
            balance: Decimal | None = None
            completed = await self._refresh_refunds()
            for _ in range(3):
                balance = await self.read_balance("refund_check")
                again = await self._refresh_refunds()
                if again == completed:
                    break
                completed = again
            if balance is None or self.last_balance is None:
                return
            group = [self.refunds[cid] for cid in completed if not self.refunds[cid].attributed]
            rise = balance - self.last_balance
            self.last_balance = balance
            claimed = sum((r.refund.amount for r in group if r.refund is not None), Decimal(0))
            for refund in group:
                assert refund.refund is not None
                refund.attributed = True
                if len(group) == 1:
                    refund.credited_amount = rise
                    refund.credited = rise >= refund.refund.amount - Decimal("0.005")
                elif rise >= claimed - Decimal("0.005"):
                    refund.credited_amount, refund.credited = refund.refund.amount, True
                elif rise <= Decimal("0.005"):
                    refund.credited_amount, refund.credited = Decimal(0), False


class TrialRun:
    """Everything shared by the suppliers of one trial run."""

    def __init__(self, scenario: Scenario, folder: RunFolder, transport: AsyncTransport,
                 progress: TrialProgress) -> None:
        if scenario.trial is None:
            raise ValueError("scenario has no trial plan")
        self.scenario = scenario
        self.plan: TrialPlan = scenario.trial
        self.folder = folder
        self.log: EventLog = folder.log
        self.transport = transport
        self.progress = progress
        self.budget = Budget(self.plan.spending_cap)
        self.code_key = load_code_key(folder.root)
        self.duplicates = DuplicateIndex(earlier_code_hashes(folder.root, exclude=folder.path))
        self.order_prefix = f"tb{secrets.token_hex(3)}"
        self.issuer: ReferenceIssuer | None = None
        if scenario.issuer is not None:
            self.issuer = ReferenceIssuer(scenario.issuer.base_url,
                                          scenario.issuer.api_key.get_secret_value())
        self.receiver = CallbackReceiver(self.on_callback)
        self.suppliers = {s.name: SupplierTrial(self, s) for s in scenario.suppliers}

    def draw_products(self, supplier: SupplierConfig) -> list[ProductConfig]:
        """The product of each order, drawn reproducibly from the scenario's seed."""
        weights = self.plan.weights_for(supplier)
        rng = random.Random(f"{self.scenario.seed}:{supplier.name}")
        skus = rng.choices(list(weights), list(weights.values()), k=self.plan.orders_per_supplier)
        return [supplier.product(sku) for sku in skus]

    async def on_callback(self, raw: RawCallback) -> int:
        match = re.fullmatch(r"/callbacks/([A-Za-z0-9_-]+)(\?.*)?", raw.path)
        supplier = self.suppliers.get(match.group(1)) if match else None
        if supplier is None:
            self.log.write("callback_received", supplier="", client_order_id="",
                           verdict="unknown_supplier", path=raw.path[:100])
            return 404
        return await supplier.on_callback(raw)

    async def run(self) -> None:
        await self.receiver.start()
        self.log.write("trial_started", suppliers=list(self.suppliers),
                       orders_per_supplier=self.plan.orders_per_supplier,
                       callback_url=self.receiver.url if self.plan.delivery != "poll" else None)
        try:
            async with self.progress:
                await asyncio.gather(*(s.run_all() for s in self.suppliers.values()))
        finally:
            await self.receiver.stop()
            self.log.write("trial_finished", committed=self.budget.committed,
                           cap=self.budget.cap)


async def run_trial_async(scenario: Scenario, folder: RunFolder, *,
                          show_progress: bool = True) -> None:
    """Run the trial of ``scenario`` into ``folder`` (which the caller opened)."""
    plan = scenario.trial
    if plan is None:
        raise ValueError("scenario has no trial plan")
    transport = AsyncTransport(plan.request_timeout_s,
                               max_connections=max(20, plan.concurrency * len(scenario.suppliers)
                                                   + 20))
    progress = TrialProgress([s.name for s in scenario.suppliers], plan.orders_per_supplier,
                             enabled=show_progress)
    try:
        await TrialRun(scenario, folder, transport, progress).run()
    finally:
        await transport.aclose()


def worst_case_cost(scenario: Scenario) -> Decimal:
    """The most the trial could spend: every order at the highest face value it may draw
    (a price above face value is not expected), never more than the spending cap."""
    plan = scenario.trial
    if plan is None:
        return Decimal(0)
    total = Decimal(0)
    for supplier in scenario.suppliers:
        dearest = max(supplier.product(sku).face_value for sku in plan.weights_for(supplier))
        total += dearest * plan.quantity * plan.orders_per_supplier
    return min(total, plan.spending_cap)


def print_plan(scenario: Scenario) -> None:
    """The dry run: what would be ordered where, and the worst-case cost."""
    plan = scenario.trial
    if plan is None:
        raise ValueError("scenario has no trial plan")
    print(f"trial plan of {scenario.name!r}: {plan.orders_per_supplier} orders × "
          f"{plan.quantity} per supplier, deadline {plan.deadline_s:g} s, "
          f"delivery by {plan.delivery}")
    for supplier in scenario.suppliers:
        mix = ", ".join(f"{sku} {share:.0%}" for sku, share in plan.weights_for(supplier).items())
        print(f"  {supplier.name:<12} {supplier.base_url}  [{mix}]")
    print(f"worst-case cost: {worst_case_cost(scenario)} (spending cap {plan.spending_cap}); "
          "nothing was sent")


def run_trial(scenario_path: Path, *, results_root: Path = Path("results"),
              env: dict[str, str] | None = None, show_progress: bool = True) -> Path:
    """Load the scenario, run its trial, build the tables and the summary; the run folder."""
    from harness.scenario import load_scenario
    from harness.summary import write_summary

    scenario = load_scenario(scenario_path, env if env is not None else dict(os.environ))
    with RunFolder.create(results_root, scenario, scenario_path, mode="trial") as folder:
        asyncio.run(run_trial_async(scenario, folder, show_progress=show_progress))
    write_summary(folder.path, scenario)
    return folder.path
