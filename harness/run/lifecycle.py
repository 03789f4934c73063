"""The order lifecycle: every rule about an order, written once, with no I/O.

An operation (placing and following an order, checking its codes, reading a balance or
a catalog, requesting and following a refund) is a generator of steps, in the manner of
h11 or hyper-h2: it yields :class:`Send` (the executor sends the request and sends the
:class:`~harness.drivers.base.HttpResponse` back in) or :class:`Wait` (the executor
sleeps until a time, or until a callback brings news of the order). It never sends,
never sleeps, and reads only the clock it is given. Two executors drive it: trials
(:mod:`harness.run.trial`, asyncio + h11) and bursts (:mod:`harness.run.worker`,
gevent + geventhttpclient). Tests drive it with scripted answers and a fake clock.

Rules kept here:

- Every write (order, refund, redeem) is in the event log before it is sent.
- A POST is answered *accepted* (the order), *refused* (a 4xx other than 429: nothing
  was bought, final ``failed``, budget released) or *unknown* (5xx, no answer, or a 2xx
  whose body cannot be read). An unknown outcome is resolved by asking by client order
  id, never by buying again: once soon, then once the not-found window has passed. Only
  a 404 at or after the end of the window proves the supplier does not hold the order
  (``failed``, reason ``not_found_after_window``); anything else leaves it ``unknown``
  with its reservation kept.
- A dialect declares its idempotency (:class:`harness.drivers.dialect.Idempotency`). Where
  it cannot be asked by the merchant's id, an unknown outcome is resolved by re-sending
  the same request id only where its key makes that safe (:meth:`OrderLife._probe`); an
  order that exists but whose codes the API cannot give is ``unknown`` with resolution
  ``charged_codes_unobtainable`` and keeps its reservation. Nothing is ever re-sent under
  a new id, and a dialect with no key is never re-sent at all.
- 429 is a refusal that may be retried: the same id is re-POSTed after ``Retry-After``
  (seconds or an HTTP date), at most ``max_reposts`` times.
- Resolution GETs and re-POSTs draw on a per-supplier :class:`~harness.run.budget.
  RetryBudget` (client-side throttling), so the harness never multiplies the load it is
  measuring. Polls of orders the supplier holds back off and are counted apart.
- Callbacks repeat and arrive out of order: :func:`~harness.drivers.base.supersedes`
  decides, and a final state never goes back.
- Anything a supplier answers is data: a parser that raises becomes a ``bad_response``
  failure on that request.

Every request carries a *purpose* (:data:`PURPOSES`), written with each attempt, so the
harness's own extra requests are counted by kind, apart from the supplier's failures.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from harness.codes import CodeCheck, DuplicateIndex, check_code
from harness.drivers.base import (
    DUPLICATE_REQUEST,
    Balance,
    Code,
    Driver,
    Failure,
    HttpRequest,
    HttpResponse,
    IssuerVerdict,
    Order,
    OrderRequest,
    Product,
    Refund,
    Result,
    supersedes,
)
from harness.drivers.reference import ReferenceIssuer
from harness.events import accepted_fields, error_bucket, final_fields
from harness.run.budget import Budget, RetryBudget

T = TypeVar("T")

PURPOSES = ("place", "repost", "resolve", "poll", "final_look", "issuer_check", "redeem",
            "balance", "catalog", "refund", "refund_resolve", "refund_poll", "auth")
"""Why a request was sent. ``place`` is an order's first POST; ``repost`` (same id, after
a 429) and ``resolve`` (a GET after an unknown outcome) draw on the retry budget."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; the executor sends the answer back into the generator."""

    request: HttpRequest
    purpose: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep until the clock reads ``until``; with ``news``, wake early when the order the
    generator follows gets a newer view (a callback)."""

    until: float
    news: bool = False


Step = Send | Wait
Steps = Generator[Step, HttpResponse | None, T]


class Sink(Protocol):
    """Where events go: :class:`harness.events.EventLog` or a burst worker's shard."""

    def write(self, type_: str, /, **fields: Any) -> None: ...


Tally = Callable[[str, str, float | None], None]
"""Live counters: ``tally(supplier, key, value)``; keys are in :data:`TALLY_KEYS`."""

TALLY_KEYS = ("planned", "skipped", "sent", "accepted", "delivered", "post_error",
              "error:<bucket>", "<final state>", "in_sla", "bad_codes", "refunds",
              "refunds_completed", "forged_callbacks")


def no_tally(supplier: str, key: str, value: float | None) -> None:
    """The tally of a caller that keeps no live counters."""


@dataclass(frozen=True, slots=True)
class Rules:
    """The numbers an order's life follows, taken from the trial or burst plan."""

    deadline_s: float
    follow_s: float
    """Follow each order this long after its intended start."""
    unknown_window_s: float
    poll: bool
    """Poll held orders (else only callbacks, and one last look at the end)."""
    poll_initial_s: float = 0.2
    poll_max_s: float = 2.0
    poll_factor: float = 1.5
    quantity: int = 1
    max_reposts: int = 2
    max_resolve_gets: int = 3
    first_resolve_after_s: float = 0.25
    expiry_margin: timedelta = timedelta(days=30)

    @classmethod
    def of(cls, plan: Any, *, follow_s: float) -> Rules:
        """Rules from a :class:`~harness.scenario.TrialPlan` or ``BurstPlan``."""
        retries = plan.retries
        return cls(deadline_s=plan.deadline_s, follow_s=follow_s,
                   unknown_window_s=plan.unknown_outcome_window_s,
                   poll=plan.delivery in ("poll", "both"),
                   poll_initial_s=plan.poll.initial_interval_s,
                   poll_max_s=plan.poll.max_interval_s, poll_factor=plan.poll.backoff_factor,
                   quantity=plan.quantity, max_reposts=retries.max_reposts,
                   max_resolve_gets=retries.max_resolve_gets,
                   expiry_margin=timedelta(days=getattr(plan, "expiry_margin_days", 30)))


# ---------------------------------------------------------------------------- answers


def guarded(call: Callable[[], Result[T]], status: int = 0) -> Result[T]:
    """``call()``, with anything it raises turned into a ``bad_response`` failure:
    whatever a supplier sends is data on that request, never a crash."""
    try:
        return call()
    except RecursionError:
        return Failure("bad_response", status, "answer nested too deeply")
    except Exception as exc:  # a supplier's garbage must not end the run
        return Failure("bad_response", status, f"{type(exc).__name__}: {exc}"[:200])


def parse_guarded(parse: Callable[[HttpResponse], Result[T]],
                  response: HttpResponse) -> Result[T]:
    """``parse(response)`` through :func:`guarded`."""
    return guarded(lambda: parse(response), response.status)


def retry_after_s(response: HttpResponse, now: float) -> float | None:
    """``Retry-After`` in seconds (a number, or an HTTP date), or None if absent/garbled."""
    raw = response.headers.get("retry-after") or response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            value = parsedate_to_datetime(raw).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return min(max(0.0, value), 300.0)


def backoff_s(attempt: int, rng: random.Random, base_s: float = 0.25,
              cap_s: float = 5.0) -> float:
    """Exponential backoff with half jitter for attempt 1, 2, ..."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


Sender = Callable[[Callable[[], HttpRequest], str], Generator[Step, HttpResponse | None,
                                                               HttpResponse]]
"""How a supplier's request is sent: :meth:`SupplierSide.send`."""


def is_not_found(failure: Failure) -> bool:
    """The supplier says it holds no such order (404, with or without an error code)."""
    return failure.status == 404


def read_steps(build: Callable[[], HttpRequest], parse: Callable[[HttpResponse], Result[T]],
               *, purpose: str, clock: Callable[[], float], rng: random.Random,
               attempts: int = 4, for_s: float = 30.0,
               send: Sender | None = None) -> Steps[Result[T]]:
    """A read (catalog, balance, issuer check, refund state): re-signed each time, retried
    on 429 (as told), 5xx and no answer with backoff, at most ``attempts`` times."""
    until = clock() + for_s
    result: Result[T] = Failure("no_answer", 0)
    for attempt in range(1, attempts + 1):
        answer: HttpResponse | None
        if send is not None:
            answer = yield from send(build, purpose)
        else:
            answer = yield Send(build(), purpose)
        assert answer is not None
        response = answer
        result = parse_guarded(parse, response)
        if not isinstance(result, Failure) or not result.retryable or attempt == attempts:
            return result
        delay = retry_after_s(response, clock()) if result.status == 429 else None
        delay = delay if delay is not None else backoff_s(attempt, rng)
        if clock() + delay > until:
            return result
        yield Wait(clock() + delay)
    return result


# ---------------------------------------------------------------------------- one supplier


@dataclass
class SupplierSide:
    """One supplier as an executor's orders share it: driver, catalog, budgets, log."""

    name: str
    driver: Driver
    rules: Rules
    log: Sink
    budget: Budget
    retry: RetryBudget
    clock: Callable[[], float]
    mode: str
    worker: str
    tally: Tally = no_tally
    callback_url: str | None = None
    issuer: ReferenceIssuer | None = None
    code_key: bytes = b""
    duplicates: DuplicateIndex = field(default_factory=DuplicateIndex)
    keep_plain_code: Callable[[str, str, Code, str], None] | None = None
    rng: random.Random = field(default_factory=random.Random)
    catalog: dict[str, Product] = field(default_factory=dict)
    orders: dict[str, OrderLife] = field(default_factory=dict)
    refunds: dict[str, RefundLife] = field(default_factory=dict)
    last_balance: Decimal | None = None

    def write(self, type_: str, /, **fields: Any) -> None:
        self.log.write(type_, supplier=self.name, **fields)

    def count(self, key: str, value: float | None = None) -> None:
        self.tally(self.name, key, value)

    def send(self, build: Callable[[], HttpRequest], purpose: str
             ) -> Generator[Step, HttpResponse | None, HttpResponse]:
        """One request to the supplier, built only once the dialect's OAuth2 token (if it
        names an authenticator) is fresh, so it carries the bearer token; a 401 drops the
        token, and the next request fetches a new one."""
        auth = getattr(self.driver, "authenticator", None)
        if auth is not None and auth.needs_token(self.clock()):
            answer = yield Send(auth.token_request(), "auth")
            assert answer is not None
            got = guarded(lambda: auth.accept(answer, self.clock()), answer.status)
            if isinstance(got, Failure):
                self.write("supplier_error", operation="auth", kind=got.kind,
                           status=got.status, worker=self.worker)
        response = yield Send(build(), purpose)
        assert response is not None
        if auth is not None and response.status == 401:
            auth.invalidate()
        return response

    # catalog and balance
    def read_catalog(self) -> Steps[None]:
        """Read the catalog (its prices are what orders reserve)."""
        result = yield from read_steps(self.driver.catalog, self.driver.parse_catalog,
                                       purpose="catalog", clock=self.clock, rng=self.rng,
                                       send=self.send)
        if isinstance(result, Failure):
            self.write("supplier_error", operation="catalog", kind=result.kind,
                       status=result.status, worker=self.worker)
            return
        self.catalog = {p.sku: p for p in result}
        self.write("catalog_read", worker=self.worker,
                   products=[{"sku": p.sku, "price": p.price, "stock": p.stock,
                              "face_value": p.face_value} for p in result])

    def read_balance(self, phase: str) -> Steps[Decimal | None]:
        """Read the balance, write ``balance_read`` (or ``supplier_error``); the amount."""
        result: Result[Balance] = yield from read_steps(
            self.driver.balance, self.driver.parse_balance, purpose="balance",
            clock=self.clock, rng=self.rng, send=self.send)
        if isinstance(result, Failure):
            self.write("supplier_error", operation="balance", phase=phase, kind=result.kind,
                       status=result.status, worker=self.worker)
            return None
        self.write("balance_read", phase=phase, balance=result.amount,
                   currency=result.currency, worker=self.worker)
        return result.amount

    def new_order(self, client_order_id: str, product: Any, intended_at: float,
                  **planned: Any) -> OrderLife:
        """Plan one order (``product`` is a :class:`~harness.scenario.ProductConfig`)."""
        listed = self.catalog.get(product.sku)
        price = listed.price if listed is not None else product.face_value
        life = OrderLife(self, client_order_id, product, price, intended_at, planned)
        self.orders[client_order_id] = life
        return life

    # callbacks
    def on_callback(self, method: str, path: str, headers: Mapping[str, str],
                    body: bytes) -> int:
        """Verify and apply one callback; the status to answer (401 for a forgery)."""
        event = guarded(lambda: self.driver.verify_callback(method, path, headers, body))
        if isinstance(event, Failure):
            verdict = "forged" if event.kind == "forged_callback" else "bad"
            self.write("callback_received", client_order_id="", verdict=verdict,
                       reason=event.message, worker=self.worker)
            if verdict == "forged":
                self.count("forged_callbacks")
            return 401 if verdict == "forged" else 400
        life = self.orders.get(event.order.client_order_id)
        if life is None:
            self.write("callback_received", client_order_id=event.order.client_order_id,
                       verdict="unknown_order", event=event.event, worker=self.worker)
            return 200
        if life.asking and not life.accepted and life.final_state is None:
            # a callback about an order whose POST had no readable answer: the supplier
            # holds it, which ends the asking
            life._accepted(HttpResponse(200, {}, b""), event.order, "callback")
            accepted = True
        else:
            accepted = life.offer(event.order, "callback")
        if not event.complete and not life.is_final:
            life.look_now = True  # news that the order changed, not its view: look it up
            life.wake()
        if event.order.refund is not None and life.client_order_id in self.refunds:
            self.refunds[life.client_order_id].seen(event.order.refund)
        self.write("callback_received", client_order_id=life.client_order_id,
                   verdict="accepted" if accepted else "stale", event=event.event,
                   state=event.order.state.value, updated_at=event.order.updated_at,
                   worker=self.worker)
        return 200


# ---------------------------------------------------------------------------- one order


@dataclass
class OrderLife:
    """Everything the harness knows about one order, and the rules of its life."""

    side: SupplierSide
    client_order_id: str
    product: Any
    listed_price: Decimal
    intended_at: float
    planned: dict[str, Any]
    order: Order | None = None
    delivered_seen_at: float | None = None
    accepted: bool = False
    reserved: Decimal = Decimal(0)
    final_state: str | None = None
    resolution: str | None = None
    asking: bool = False
    """Resolving an unknown outcome: a callback then proves the supplier holds the order
    (while the POST is in flight, its answer decides acceptance, as a merchant sees it)."""
    codes: tuple[Code, ...] = ()
    checks: list[CodeCheck] = field(default_factory=list)
    wake: Callable[[], None] = field(default=lambda: None)
    """Set by the executor: called when a callback brings a newer view."""
    resumed_at: float | None = None
    """When ``trialbench resume`` took the order up again: it is followed from then."""
    look_now: bool = False
    """A callback said only that the order changed (a dialect's news): poll at once."""

    @property
    def deadline_at(self) -> float:
        return self.intended_at + self.side.rules.deadline_s

    @property
    def follow_until(self) -> float:
        start = self.intended_at if self.resumed_at is None \
            else max(self.intended_at, self.resumed_at)
        return start + self.side.rules.follow_s

    @property
    def is_final(self) -> bool:
        return self.order is not None and self.order.state.is_final

    def request(self) -> OrderRequest:
        return OrderRequest(self.client_order_id, self.product.sku, self.side.rules.quantity,
                            self.product.account, self.side.callback_url)

    # views
    def offer(self, order: Order, source: str) -> bool:
        """Take ``order`` if it is a newer view (:func:`supersedes`); log and count it."""
        if not supersedes(order, self.order):
            return False
        self.order = order
        side = self.side
        side.write("order_observed", client_order_id=self.client_order_id,
                   state=order.state.value, updated_at=order.updated_at, source=source)
        if order.state.delivered and self.delivered_seen_at is None:
            self.delivered_seen_at = side.clock()
            side.count("delivered", (self.delivered_seen_at - self.intended_at) * 1000)
        self.wake()
        return True

    def _accepted(self, response: HttpResponse, order: Order, via: str) -> None:
        """The supplier holds the order: learnt from the POST, a GET or a callback."""
        side = self.side
        self.accepted = True
        side.write("order_accepted", client_order_id=self.client_order_id,
                   **accepted_fields(order, response.status, via, response.received_at))
        answered = response.received_at if response.received_at is not None else side.clock()
        side.count("accepted", (answered - self.intended_at) * 1000)
        self.offer(order, {"post": "post", "callback": "callback"}.get(via, "poll"))

    def _attempt(self, attempt: int, method: str, purpose: str) -> None:
        self.side.write("order_attempt", client_order_id=self.client_order_id,
                        attempt=attempt, method=method, purpose=purpose)

    def _error(self, failure: Failure, phase: str, *, first_post: bool = False) -> None:
        side = self.side
        side.write("order_error", client_order_id=self.client_order_id, kind=failure.kind,
                   status=failure.status, phase=phase)
        side.count(f"error:{error_bucket(failure.kind, failure.status)}")
        if first_post:
            side.count("post_error")

    def _parse_order(self, response: HttpResponse) -> Result[Order]:
        """The driver's reading of an answer about this order (a dialect driver that
        knows which order it asked about reads answers that do not name it)."""
        parse_for = getattr(self.side.driver, "parse_order_for", None)
        if parse_for is not None:
            parsed: Result[Order] = parse_for(self.client_order_id, response)
            return parsed
        return self.side.driver.parse_order(response)

    # the whole life
    def plan(self) -> bool:
        """Log the plan and reserve its worst case; False (and final ``skipped``) if the
        spending cap does not allow it. Written before anything is sent."""
        side = self.side
        quantity = side.rules.quantity
        side.write("order_planned", mode=side.mode, worker=side.worker,
                   client_order_id=self.client_order_id, sku=self.product.sku,
                   quantity=quantity, intended_at=self.intended_at,
                   deadline_s=side.rules.deadline_s, listed_price=self.listed_price,
                   sale_price=self.product.sale_price, face_value=self.product.face_value,
                   **self.planned)
        side.count("planned")
        return self.reserve()

    def reserve(self, *, held: bool = False) -> bool:
        """Reserve the order's worst case (and the hidden fee per order seen so far); False,
        final ``skipped`` and a ``spend_blocked`` event if the cap does not allow it.
        ``held``: the order may exist already (see :meth:`Budget.reserve`)."""
        side = self.side
        needed = self.listed_price * side.rules.quantity
        reserved = side.budget.reserve(needed, held=held)
        if reserved is None:
            side.write("spend_blocked", client_order_id=self.client_order_id, needed=needed,
                       committed=side.budget.committed, fees=side.budget.fees,
                       cap=side.budget.cap, worker=side.worker)
            self.finish("skipped")
            return False
        self.reserved = reserved
        return True

    def steps(self, *, check_codes: bool = True) -> Steps[str]:
        """Plan, place, resolve, follow, finalise (and check the codes); the final state.

        The first step, if the cap allows the order, is always ``Send(place)``.
        """
        if not self.plan():
            return "skipped"
        return (yield from self._live(check_codes=check_codes))

    def _live(self, *, check_codes: bool, outcome: str | None = None) -> Steps[str]:
        """Place (unless ``outcome`` is already known), follow, finalise, check codes."""
        if outcome is None:
            outcome = yield from self.place()
        if outcome == "accepted":
            yield from self.follow()
            state = self.order.state.value if self.order is not None and self.is_final \
                else "unknown"
        else:
            state = outcome
        self.finish(state)
        if check_codes:
            yield from self.check_codes()
        return state

    def resume(self, posted_at: float | None, *, may_place: bool,
               check_codes: bool = True) -> Steps[str]:
        """The order of an interrupted run, taken up again by ``trialbench resume``.

        ``posted_at`` is when the log says its last POST was sent (None: never sent). An
        order never sent is placed now if ``may_place`` (a trial completing its plan), else
        final ``skipped``. An order that was sent is asked about by client order id; it is
        placed again (same id) only if ``may_place`` and a 404 after the not-found window
        proves the supplier does not hold it. Nothing else ever buys it again.
        """
        side = self.side
        self.resumed_at = side.clock()
        side.write("order_resumed", client_order_id=self.client_order_id,
                   intended_at=self.intended_at, posted_at=posted_at, worker=side.worker)
        if posted_at is None and not may_place:
            self.resolution = "never_sent"
            self.finish("skipped")
            return "skipped"
        if not self.reserve(held=posted_at is not None):
            return "skipped"
        outcome: str | None = None
        if posted_at is not None:
            self.asking = True
            outcome = yield from self.resolve(posted_at, resumed=True)
            self.asking = False
            if outcome == "accepted":
                self.resolution = "reconciled"
                if self.order is not None and self.order.state.delivered:
                    self.delivered_seen_at = None  # delivered while no one watched: no time
            elif outcome == "failed" and may_place:
                self.intended_at = side.clock()
                side.write("order_absent", client_order_id=self.client_order_id,
                           reason="not_found_after_window", intended_at=self.intended_at)
                self.resolution = None
                side.budget.settle(self.reserved, Decimal(0))
                self.reserved = Decimal(0)
                if not self.reserve():  # placing it now is a new purchase: the cap decides
                    return "skipped"
                outcome = None  # the supplier proved it holds nothing: place it now
            elif outcome == "unknown" and (self.resolution is None
                                           or self.resolution.startswith("unknown_outcome")):
                self.resolution = "unknown_after_resume"  # (a dialect's own verdict stays)
        return (yield from self._live(check_codes=check_codes, outcome=outcome))

    def place(self) -> Steps[str]:
        """POST (and re-POST the same id after a 429); resolve an unknown outcome by asking.

        Returns ``accepted``, ``failed`` (refused: nothing bought) or ``unknown``.
        """
        side = self.side
        attempt, reposts = 1, 0
        self._attempt(attempt, "POST", "place")
        side.count("sent")
        side.retry.first_attempt()
        while True:
            response = yield from side.send(lambda: side.driver.place_order(self.request()),
                                            "place" if attempt == 1 else "repost")
            assert response is not None
            # the supplier may have taken the order at any moment until this answer (or
            # timeout): its not-found window can start no earlier than now
            answered_at = side.clock()
            result = parse_guarded(self._parse_order, response)
            if not isinstance(result, Failure):
                self._accepted(response, result, "post")
                return "accepted"
            self._error(result, "place", first_post=attempt == 1)
            # (a dialect's error answered with HTTP 200 carries the status it means)
            if 200 <= result.status < 300 or result.outcome_unknown \
                    or result.kind == DUPLICATE_REQUEST:  # the id was taken: it may be ours
                self.resolution = "unknown_outcome"
                self.asking = True
                return (yield from self.resolve(answered_at))
            if result.status != 429:
                self.resolution = f"refused:{result.kind}"
                return "failed"
            delay = retry_after_s(response, side.clock())
            due = side.clock() + (delay if delay is not None else backoff_s(reposts + 1,
                                                                              side.rng))
            if reposts >= side.rules.max_reposts or due >= self.follow_until:
                self.resolution = "refused:rate_limited"
                return "failed"
            if not side.retry.allow():
                self.resolution = "refused:rate_limited (retry budget spent)"
                return "failed"
            reposts += 1
            yield Wait(due)
            attempt += 1
            self._attempt(attempt, "POST", "repost")

    def resolve(self, since: float, *, resumed: bool = False) -> Steps[str]:
        """Ask by client order id after an unknown outcome: soon (unless the retry budget
        is tight), then once the not-found window, counted from ``since`` (when the POST's
        answer or timeout came; for a resumed order, when it was sent), has passed.
        ``accepted``, ``failed`` (404 after the window) or ``unknown``. A resumed order is
        asked from now on."""
        side = self.side
        rules = side.rules
        idempotency = getattr(side.driver, "idempotency", None)
        if idempotency is not None and idempotency.lookup != "client_order_id":
            return (yield from self._probe(idempotency.replay))
        window_end = since + rules.unknown_window_s
        give_up = window_end + rules.unknown_window_s  # money outranks the follow time
        if resumed:
            give_up = max(give_up, side.clock() + rules.unknown_window_s)
        ask_at = min(side.clock() + rules.first_resolve_after_s, window_end)
        if side.retry.room() < rules.max_resolve_gets:
            ask_at = window_end  # budget tight: ask once, when a 404 is conclusive
        gets = 0
        denied = False
        while gets < rules.max_resolve_gets and ask_at <= give_up:
            yield Wait(ask_at, news=True)
            if self.accepted:
                return "accepted"  # a callback said the supplier holds it
            if side.clock() < ask_at:
                continue  # woken by news that did not settle it: wait on
            if not side.retry.allow():
                denied = True
                # the budget is spent: wait for it to grow with new orders, never buy again
                ask_at = max(side.clock() + 0.5, ask_at)
                continue
            gets += 1
            self._attempt(gets, "GET", "resolve")
            asked_at = side.clock()
            response = yield from side.send(lambda: side.driver.get_order(self.client_order_id),
                                            "resolve")
            assert response is not None
            result = parse_guarded(self._parse_order, response)
            if not isinstance(result, Failure):
                self._accepted(response, result, "get")
                return "accepted"
            self._error(result, "resolve")
            if is_not_found(result) and asked_at >= window_end:
                self.resolution = "not_found_after_window"
                return "failed"
            delay = retry_after_s(response, side.clock()) if result.status == 429 else None
            if is_not_found(result):
                ask_at = window_end  # only a 404 after the window is conclusive
            else:
                ask_at = max(side.clock() + (delay if delay is not None
                                             else backoff_s(gets, side.rng)), ask_at)
        if denied:
            self.resolution = "unknown_outcome (retry budget spent)"
        return "unknown"

    def _probe(self, replay: str) -> Steps[str]:
        """Resolve an unknown outcome where the supplier cannot be asked by the merchant's
        id: re-send the same request id, where the dialect's key makes that safe, and read
        what the key says. ``replay`` is the dialect's declaration:

        - ``original``: the answer is the original order (or a refusal: nothing held);
        - ``error`` / ``accepted``: a success means the first attempt never arrived and
          this one bought (once: the key guards it); "duplicate" means the order exists
          but this API cannot give it: ``unknown``, resolution
          ``charged_codes_unobtainable``, its reservation kept (it counts against the
          supplier); any other refusal cannot tell (``unresolvable:<kind>``);
        - ``none``: no key, so a re-send could buy twice: never sent (``unresolvable_no_key``).
        """
        side = self.side
        rules = side.rules
        if replay == "none":
            self.resolution = "unresolvable_no_key"
            return "unknown"
        attempts = 0
        ask_at = side.clock() + rules.first_resolve_after_s
        while attempts < rules.max_resolve_gets:
            yield Wait(ask_at, news=True)
            if self.accepted:
                return "accepted"
            if side.clock() < ask_at:
                continue
            if not side.retry.allow():
                self.resolution = "unknown_outcome (retry budget spent)"
                return "unknown"
            attempts += 1
            self._attempt(attempts, "POST", "resolve")
            response = yield from side.send(lambda: side.driver.place_order(self.request()),
                                            "resolve")
            assert response is not None
            result = parse_guarded(self._parse_order, response)
            if not isinstance(result, Failure):
                self._accepted(response, result, "post")
                return "accepted"
            self._error(result, "resolve")
            if result.kind == DUPLICATE_REQUEST:
                self.resolution = "charged_codes_unobtainable"
                return "unknown"
            if not (result.outcome_unknown or result.retryable
                    or 200 <= result.status < 300):
                if replay == "original":
                    self.resolution = f"refused:{result.kind}"
                    return "failed"
                self.resolution = f"unresolvable:{result.kind}"
                return "unknown"
            delay = retry_after_s(response, side.clock()) if result.status == 429 else None
            ask_at = side.clock() + (delay if delay is not None else backoff_s(attempts,
                                                                               side.rng))
        self.resolution = "unknown_outcome"
        return "unknown"

    def follow(self) -> Steps[None]:
        """Poll with backoff and/or wait for callbacks until final or past the follow time."""
        side = self.side
        rules = side.rules
        interval = rules.poll_initial_s
        polls = 0
        while not self.is_final:
            now = side.clock()
            if now >= self.follow_until:
                break
            until = min(now + interval, self.follow_until) if rules.poll else self.follow_until
            yield Wait(until, news=True)
            if self.is_final:
                continue
            if not self.look_now and (not rules.poll or side.clock() < until):
                continue  # callbacks only, or a callback brought news
            self.look_now = False
            polls += 1
            self._attempt(polls, "GET", "poll")
            response = yield from side.send(lambda: side.driver.get_order(self.client_order_id),
                                            "poll")
            assert response is not None
            result = parse_guarded(self._parse_order, response)
            if isinstance(result, Failure):
                self._error(result, "follow")
                delay = retry_after_s(response, side.clock()) if result.status == 429 else None
                if delay is not None:
                    interval = max(interval, delay)
            else:
                self.offer(result, "poll")
            interval = min(rules.poll_max_s, interval * rules.poll_factor)
        if not rules.poll and not self.is_final:
            # callbacks only: one last look, so the recorded state is the real one
            self._attempt(polls + 1, "GET", "final_look")
            response = yield from side.send(lambda: side.driver.get_order(self.client_order_id),
                                            "final_look")
            assert response is not None
            result = parse_guarded(self._parse_order, response)
            if isinstance(result, Failure):
                self._error(result, "follow")
            else:
                self.offer(result, "poll")

    def finish(self, state: str, *, interrupted: bool = False) -> None:
        """Write ``order_final`` once, settle the reservation: what the order took if the
        supplier's answer is known, all of it kept while the outcome is unknown."""
        if self.final_state is not None:
            return
        side = self.side
        self.final_state = state
        order = self.order
        if state != "skipped":
            if state == "unknown":
                taken = self.reserved  # the supplier may hold it: keep the reservation
            elif order is None:
                taken = Decimal(0)  # refused, or not found after the window: nothing bought
            else:
                taken = order.amount  # the driver guarantees finite and non-negative
                if taken > self.reserved:
                    side.write("order_overcharged", client_order_id=self.client_order_id,
                               reserved=self.reserved, amount=taken)
            side.budget.settle(self.reserved, taken)
        side.write("order_final", client_order_id=self.client_order_id,
                   **final_fields(order, state, self.delivered_seen_at, self.deadline_at),
                   accepted=self.accepted, resolution=self.resolution,
                   interrupted=interrupted or None)
        side.count(state)
        if self.delivered_seen_at is not None and self.delivered_seen_at <= self.deadline_at:
            side.count("in_sla")

    # codes
    def check_codes(self) -> Steps[None]:
        """Check every delivered code: pattern, duplicate, face value, issuer, expiry.

        Never redeems (that is the trial's sample, :meth:`SupplierSide.redeem`)."""
        side = self.side
        order = self.order
        if order is None or not order.state.delivered or self.checks:
            return
        self.codes = order.codes
        listed = side.catalog.get(self.product.sku)
        pattern = self.product.code_pattern or (listed.code_pattern if listed else None)
        now = datetime.fromtimestamp(side.clock(), UTC)
        issuer = side.issuer
        for code in order.codes:
            verdict: IssuerVerdict | None = None
            if issuer is not None:
                parsed = yield from read_steps(
                    partial(issuer.check, code.serial, code.pin),
                    issuer.parse_check, purpose="issuer_check", clock=side.clock,
                    rng=side.rng)
                verdict = None if isinstance(parsed, Failure) else parsed
            check = check_code(code, key=side.code_key, pattern=pattern,
                               expected_face_value=self.product.face_value, now=now,
                               expiry_margin=side.rules.expiry_margin,
                               duplicates=side.duplicates, issuer=verdict)
            self.checks.append(check)
            side.write("code_checked", client_order_id=self.client_order_id,
                       sku=self.product.sku, mode=side.mode, code_hash=check.code_hash,
                       serial_masked=check.serial_masked,
                       claimed_face_value=check.claimed_face_value,
                       expected_face_value=check.expected_face_value,
                       issuer_face_value=check.issuer_face_value, expires_at=check.expires_at,
                       pattern_ok=check.pattern_ok, duplicate_of=check.duplicate_of,
                       face_value_ok=check.face_value_ok, expiry_ok=check.expiry_ok,
                       issuer_status=check.issuer_status, verdict=check.verdict)
            if side.keep_plain_code is not None:
                side.keep_plain_code(side.name, self.client_order_id, code, check.code_hash)
            if check.verdict != "valid":
                side.count("bad_codes")

    def redeem(self, code: Code, check: CodeCheck) -> Steps[None]:
        """Redeem one code at the issuer (logged before it is sent): a sample only."""
        side = self.side
        if side.issuer is None:
            return
        side.write("redeem_attempt", client_order_id=self.client_order_id,
                   code_hash=check.code_hash)
        response = yield Send(side.issuer.redeem(code.serial, code.pin), "redeem")
        assert response is not None
        parsed = parse_guarded(side.issuer.parse_redeem, response)
        status = parsed.status if not isinstance(parsed, Failure) else parsed.kind
        side.write("code_redeemed", client_order_id=self.client_order_id,
                   code_hash=check.code_hash, status=status)


# ---------------------------------------------------------------------------- refunds


@dataclass
class RefundLife:
    """One refund request and what the harness learns of it."""

    side: SupplierSide
    client_order_id: str
    reason: str
    refund: Refund | None = None
    attributed: bool = False
    credited_amount: Decimal | None = None
    credited: bool | None = None
    resolved_seen_at: float | None = None

    def seen(self, refund: Refund) -> None:
        if self.refund is None or self.refund.state != refund.state:
            self.side.write("refund_observed", client_order_id=self.client_order_id,
                            state=refund.state, amount=refund.amount)
        self.refund = refund
        if refund.is_final and self.resolved_seen_at is None:
            self.resolved_seen_at = self.side.clock()

    @property
    def completed(self) -> bool:
        return self.refund is not None and self.refund.state == "completed"

    def request(self) -> Steps[bool]:
        """POST the refund request (logged first); on an unknown outcome ask whether it
        exists. True when the supplier holds a refund to follow."""
        side = self.side
        side.refunds[self.client_order_id] = self
        side.write("refund_attempt", client_order_id=self.client_order_id, reason=self.reason)
        response = yield from side.send(lambda: side.driver.request_refund(
            self.client_order_id, self.reason, None, "trialbench after-sales plan"), "refund")
        assert response is not None
        result = parse_guarded(side.driver.parse_refund, response)
        if isinstance(result, Failure) and (result.outcome_unknown
                                            or 200 <= response.status < 300):
            asked = yield from read_steps(lambda: side.driver.get_refund(self.client_order_id),
                                          side.driver.parse_refund, purpose="refund_resolve",
                                          clock=side.clock, rng=side.rng, send=side.send)
            if not isinstance(asked, Failure):
                result = asked
        if isinstance(result, Failure):
            del side.refunds[self.client_order_id]
            code = result.kind.removeprefix(f"http_{result.status}").lstrip("_")
            state = "refused" if response.status == 409 else "error"
            side.write("refund_requested", client_order_id=self.client_order_id,
                       reason=self.reason, status=response.status, error=code or result.kind,
                       state=state)
            side.write("refund_final", client_order_id=self.client_order_id, state=state,
                       final=response.status == 409, amount=None)
            return False
        side.write("refund_requested", client_order_id=self.client_order_id,
                   reason=self.reason, status=response.status, state=result.state,
                   amount=result.amount, refund_id=result.refund_id)
        side.count("refunds")
        self.seen(result)
        return True

    def resume(self) -> Steps[bool]:
        """A refund request an interrupted run's log says was sent but never finished: ask
        the supplier; request it again only if it holds no refund for the order."""
        side = self.side
        side.refunds[self.client_order_id] = self
        side.write("refund_resumed", client_order_id=self.client_order_id, reason=self.reason)
        asked = yield from read_steps(lambda: side.driver.get_refund(self.client_order_id),
                                      side.driver.parse_refund, purpose="refund_resolve",
                                      clock=side.clock, rng=side.rng, send=side.send)
        if isinstance(asked, Failure):
            del side.refunds[self.client_order_id]
            if asked.status == 404:
                return (yield from self.request())
            side.write("refund_requested", client_order_id=self.client_order_id,
                       reason=self.reason, status=asked.status, error=asked.kind,
                       state="error")
            side.write("refund_final", client_order_id=self.client_order_id, state="error",
                       final=False, amount=None)  # still open: a later resume asks again
            return False
        side.write("refund_requested", client_order_id=self.client_order_id,
                   reason=self.reason, status=200, state=asked.state, amount=asked.amount,
                   refund_id=asked.refund_id, via="resume")
        side.count("refunds")
        self.seen(asked)
        return True

    def follow(self, until: float) -> Steps[None]:
        """Poll the refund to a final state or ``until`` (callbacks may bring it sooner)."""
        side = self.side
        rules = side.rules
        interval = rules.poll_initial_s
        while not (self.refund is not None and self.refund.is_final):
            if side.clock() >= until:
                break
            yield Wait(min(side.clock() + interval, until))
            interval = min(rules.poll_max_s, interval * rules.poll_factor)
            response = yield from side.send(
                lambda: side.driver.get_refund(self.client_order_id), "refund_poll")
            assert response is not None
            polled = parse_guarded(side.driver.parse_refund, response)
            if not isinstance(polled, Failure):
                self.seen(polled)

    def finish(self) -> None:
        refund = self.refund
        self.side.write("refund_final", client_order_id=self.client_order_id,
                        state=refund.state if refund else "error",
                        final=bool(refund and refund.is_final),
                        amount=refund.amount if refund else None,
                        resolved_seen_at=self.resolved_seen_at,
                        credited_amount=self.credited_amount, credited=self.credited)
        if refund is not None and refund.state == "completed":
            self.side.count("refunds_completed")


def refresh_refunds(side: SupplierSide) -> Steps[frozenset[str]]:
    """GET every refund of ``side`` not yet final; the ids now completed."""
    for life in list(side.refunds.values()):
        if life.refund is not None and not life.refund.is_final:
            response = yield from side.send(
                partial(side.driver.get_refund, life.client_order_id), "refund_poll")
            assert response is not None
            polled = parse_guarded(side.driver.parse_refund, response)
            if not isinstance(polled, Failure):
                life.seen(polled)
    return frozenset(cid for cid, r in side.refunds.items() if r.completed)


def attribute_credit(side: SupplierSide) -> Steps[None]:
    """Attribute the balance's rise to the refunds completed since the last reading.

    The set of completed refunds is read before and after the balance until it is the
    same twice, so the rise and the group match. Exact for a group of one; for several,
    each is credited only if the rise covers them all, not if it is zero, and unknown
    otherwise. The executor runs one of these at a time per supplier.
    """
    balance: Decimal | None = None
    completed = yield from refresh_refunds(side)
    for _ in range(3):
        balance = yield from side.read_balance("refund_check")
        again = yield from refresh_refunds(side)
        if again == completed:
            break
        completed = again
    if balance is None or side.last_balance is None:
        return
    group = [side.refunds[cid] for cid in completed if not side.refunds[cid].attributed]
    rise = balance - side.last_balance
    side.last_balance = balance
    claimed = sum((r.refund.amount for r in group if r.refund is not None), Decimal(0))
    for life in group:
        assert life.refund is not None
        life.attributed = True
        if len(group) == 1:
            life.credited_amount = rise
            life.credited = rise >= life.refund.amount - Decimal("0.005")
        elif rise >= claimed - Decimal("0.005"):
            life.credited_amount, life.credited = life.refund.amount, True
        elif rise <= Decimal("0.005"):
            life.credited_amount, life.credited = Decimal(0), False


def order_prefix(run_id: str, mode: str) -> str:
    """The client order id prefix of a run: derived from the run id, so a restarted run
    asks about the same ids and never buys again under new ones."""
    return ("tb" if mode == "trial" else "b") + hashlib.sha256(run_id.encode()).hexdigest()[:8]


def callback_supplier(path: str) -> str | None:
    """The supplier a callback path names (``[/<prefix>...]/callbacks/<supplier>[?...]``;
    a prefix is what a reverse proxy in front of several burst workers may leave), if any."""
    match = re.fullmatch(r"(?:/[A-Za-z0-9_.-]+)*/callbacks/([A-Za-z0-9_-]+)(\?.*)?", path)
    return match.group(1) if match else None


__all__ = ["PURPOSES", "OrderLife", "RefundLife", "Rules", "Send", "Step", "Steps",
           "SupplierSide", "Wait", "attribute_credit", "backoff_s", "callback_supplier",
           "guarded", "order_prefix", "parse_guarded", "read_steps", "retry_after_s"]
