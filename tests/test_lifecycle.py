"""The order lifecycle driven with scripted answers and a fake clock: no network at all.

Each test scripts what the supplier answers to each request (by purpose) and checks what
the lifecycle sends next, when, and what it records. ``Script`` is the smallest possible
executor: it answers each ``Send`` from the script and jumps the clock on each ``Wait``
(or to a scripted callback that arrives first).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest

from harness import protocol
from harness.drivers.base import Credentials, HttpResponse
from harness.drivers.reference import ReferenceDriver, parse_order_body
from harness.run.budget import Budget, RetryBudget
from harness.run.lifecycle import PURPOSES, OrderLife, Rules, Send, Steps, SupplierSide, Wait
from harness.scenario import ProductConfig

T0 = 1_800_000_000.0
PRODUCT = ProductConfig(sku="card-10", face_value=Decimal("10.00"), sale_price=Decimal("10.00"))
RULES = Rules(deadline_s=5, follow_s=10, unknown_window_s=4, poll=True,
              poll_initial_s=0.2, poll_max_s=1.0, poll_factor=2.0, max_reposts=2,
              max_resolve_gets=3, first_resolve_after_s=0.25)


class Log:
    """An event sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, type_: str, /, **fields: Any) -> None:
        self.events.append({"type": type_, **fields})

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]


def order_json(state: str = "success", *, cid: str = "o-1", amount: str = "9.50",
               updated_s: float = 1.0, codes: int = 1) -> dict[str, Any]:
    at = protocol.format_epoch(T0 + updated_s)
    return {"client_order_id": cid, "order_id": "S1", "sku": "card-10", "quantity": 1,
            "account": None, "unit_price": "9.50", "amount": amount, "state": state,
            "created_at": protocol.format_epoch(T0), "updated_at": at,
            "delivered_at": at if state == "success" else None,
            "codes": [{"serial": f"C{i}", "pin": "1", "face_value": "10.00",
                       "expires_at": None} for i in range(codes if state == "success" else 0)],
            "failure_reason": None, "refund": None}


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return HttpResponse(status, headers or {}, raw)


def placed(state: str = "success", status: int = 201, **kw: Any) -> HttpResponse:
    return answer(status, {"order": order_json(state, **kw)})


def err(status: int, code: str, headers: dict[str, str] | None = None) -> HttpResponse:
    return answer(status, protocol.error_body(code, code), headers)


NO_ANSWER = HttpResponse(0, {}, b"", transport_error="timeout")


class Script:
    """Answers each Send from ``answers`` (a list of (purpose, response)), jumps the clock
    on each Wait, and delivers scheduled callbacks (time, order JSON) when they are due."""

    def __init__(self, answers: list[tuple[str, HttpResponse]],
                 callbacks: list[tuple[float, dict[str, Any]]] | None = None) -> None:
        self.answers = list(answers)
        self.callbacks = sorted(callbacks or [], key=lambda c: c[0])
        self.now = T0
        self.sent: list[tuple[float, str, Send]] = []
        self.waits: list[Wait] = []

    def clock(self) -> float:
        return self.now

    def run(self, steps: Steps[Any], life: OrderLife | None = None) -> Any:
        try:
            step = next(steps)
            while True:
                if isinstance(step, Send):
                    assert step.purpose in PURPOSES, step.purpose
                    self.sent.append((self.now, step.purpose, step))
                    assert self.answers, f"unscripted {step.purpose} at t+{self.now - T0:.2f}"
                    purpose, response, *took = self.answers.pop(0)  # (.., seconds) optional
                    assert purpose == step.purpose, (purpose, step.purpose)
                    self.now += took[0] if took else 0.01
                    step = steps.send(response)
                    continue
                self.waits.append(step)
                due = self.callbacks[0][0] + T0 if self.callbacks else None
                if step.news and life is not None and due is not None and due <= step.until:
                    self.now = max(self.now, due)
                    _, body = self.callbacks.pop(0)
                    life.offer(parse_order_body(body), "callback")
                else:
                    self.now = max(self.now, step.until)
                step = steps.send(None)
        except StopIteration as stop:
            return stop.value


def side(script: Script, *, cap: str = "100", rules: Rules = RULES,
         retry: RetryBudget | None = None) -> tuple[SupplierSide, Log]:
    log = Log()
    return SupplierSide(
        name="acme", driver=ReferenceDriver("http://127.0.0.1:9/s/acme", Credentials("k", "s")),
        rules=rules, log=log, budget=Budget(Decimal(cap)),
        retry=retry if retry is not None else RetryBudget(0.2, 10), clock=script.clock,
        mode="trial", worker="trial", rng=random.Random(1)), log


def run_order(answers: list[tuple[str, HttpResponse]], *, cap: str = "100",
              rules: Rules = RULES, callbacks: list[tuple[float, dict[str, Any]]] | None = None,
              ) -> tuple[str, OrderLife, Script, Log]:
    script = Script(answers, callbacks)
    supplier, log = side(script, cap=cap, rules=rules)
    life = supplier.new_order("o-1", PRODUCT, T0)
    state = script.run(life.steps(check_codes=False), life)
    assert not script.answers, f"answers left over: {script.answers}"
    return state, life, script, log


def final(log: Log) -> dict[str, Any]:
    (event,) = log.of("order_final")
    return event


def test_accepted_order_is_final_with_what_it_took() -> None:
    """A 201 with a delivered order ends there: one POST, final success, cap settled to
    the amount the order took."""
    state, life, script, log = run_order([("place", placed("success"))])
    assert state == "success" and [p for _, p, _ in script.sent] == ["place"]
    assert life.side.budget.committed == Decimal("9.50")
    assert final(log)["accepted"] is True
    kinds = [e["type"] for e in log.events]
    assert kinds.index("order_planned") < kinds.index("order_attempt") < kinds.index(
        "order_accepted")


def test_acceptance_is_timed_by_the_answers_arrival() -> None:
    """The accepted event carries when the transport had the answer whole
    (``answered_at``), so acceptance latency leaves out the harness's own reading of it;
    an answer without that stamp (a callback's) has none."""
    stamped = placed("success")
    stamped = HttpResponse(stamped.status, stamped.headers, stamped.body,
                           received_at=T0 + 0.0525)
    _state, _life, _script, log = run_order([("place", stamped)])
    assert log.of("order_accepted")[0]["answered_at"] == T0 + 0.0525
    _state, _life, _script, log = run_order([("place", placed("success"))])
    assert "answered_at" not in log.of("order_accepted")[0]


def test_refusal_is_final_failed_and_releases_the_reservation() -> None:
    """A 409 out_of_stock is a refusal: final failed at once, nothing reserved, no GET."""
    state, life, script, log = run_order([("place", err(409, "out_of_stock"))])
    assert state == "failed" and len(script.sent) == 1
    assert life.side.budget.committed == 0
    assert final(log)["resolution"] == "refused:http_409_out_of_stock"


def test_5xx_then_found_by_asking() -> None:
    """A 500 to the POST is an unknown outcome; a GET by client id finds the order, and it
    is accepted via get, never POSTed again."""
    state, _life, script, log = run_order([("place", err(500, "internal_error")),
                                          ("resolve", placed("success", status=200))])
    assert state == "success"
    assert [p for _, p, _ in script.sent] == ["place", "resolve"]
    assert log.of("order_accepted")[0]["via"] == "get"
    assert script.sent[1][0] - T0 >= RULES.first_resolve_after_s


def test_5xx_then_never_found_through_the_window_is_refused() -> None:
    """A 500, then 404 soon and 404 again after the not-found window: the supplier does not
    hold the order, so it is final failed and its reservation released; only 2 GETs."""
    state, life, script, log = run_order([("place", err(503, "overloaded")),
                                          ("resolve", err(404, "order_not_found")),
                                          ("resolve", err(404, "order_not_found"))])
    assert state == "failed"
    assert final(log)["resolution"] == "not_found_after_window"
    assert script.sent[2][0] >= T0 + RULES.unknown_window_s
    assert life.side.budget.committed == 0


def test_not_found_window_counts_from_the_posts_answer() -> None:
    """A POST answered 500 only after 1.5 s may have been taken just before that answer,
    so the conclusive GET waits a whole window after the answer, not after the send."""
    state, _, script, log = run_order([("place", err(500, "internal_error"), 1.5),
                                       ("resolve", err(404, "order_not_found")),
                                       ("resolve", err(404, "order_not_found"))])
    assert state == "failed" and final(log)["resolution"] == "not_found_after_window"
    assert script.sent[2][0] >= T0 + 1.5 + RULES.unknown_window_s


def test_404_inside_the_window_then_found() -> None:
    """A not-found window: 404 soon after the 500, the order found after the window."""
    state, _, script, log = run_order([("place", err(500, "internal_error")),
                                       ("resolve", err(404, "order_not_found")),
                                       ("resolve", placed("success", status=200))])
    assert state == "success" and log.of("order_accepted")[0]["via"] == "get"
    assert [p for _, p, _ in script.sent].count("place") == 1


def test_never_answered_stays_unknown_and_keeps_its_reservation() -> None:
    """No answer to the POST and 5xx to every GET: the outcome stays unknown, the
    reservation is kept, and the order is never POSTed again."""
    state, life, script, log = run_order(
        [("place", NO_ANSWER)] + [("resolve", err(502, "bad_gateway"))] * 3)
    assert state == "unknown" and life.side.budget.committed == Decimal("10.00")
    assert [p for _, p, _ in script.sent].count("place") == 1
    assert final(log)["state"] == "unknown"


def test_timeout_then_found() -> None:
    """A POST with no answer (timeout) is resolved by asking, like a 5xx."""
    state, _, _, log = run_order([("place", NO_ANSWER), ("resolve", placed(status=200))])
    assert state == "success" and log.of("order_error")[0]["kind"] == "timeout"


@pytest.mark.parametrize("body", [b"", b"<html>oops</html>", b'{"order": {"state": 1}}',
                                  b"[" * 5000 + b"]" * 5000,
                                  b'{"order": {"amount": 1e999}}'])
def test_2xx_with_unreadable_body_is_unknown_not_refused(body: bytes) -> None:
    """A 201 whose body cannot be read may have bought the order: it keeps its reservation
    and is asked about, never logged as refused."""
    state, _life, _, log = run_order([("place", answer(201, body)),
                                     ("resolve", placed(status=200))])
    assert state == "success"
    assert log.of("order_error")[0]["kind"] == "bad_response"


def test_429_reposts_the_same_id_after_retry_after() -> None:
    """429 with Retry-After: 2 means wait 2 s, then POST the same client id again."""
    state, _, script, _ = run_order([("place", err(429, "rate_limited", {"retry-after": "2"})),
                                     ("repost", placed())])
    assert state == "success"
    (t1, _, first), (t2, _, second) = script.sent
    assert t2 - t1 >= 2.0
    assert json.loads(first.request.body)["client_order_id"] == \
        json.loads(second.request.body)["client_order_id"] == "o-1"


def test_429_retry_after_as_http_date() -> None:
    """Retry-After may be an HTTP date; the wait runs to that moment."""
    when = format_datetime(datetime.fromtimestamp(T0 + 3, UTC), usegmt=True)
    state, _, script, _ = run_order([("place", err(429, "rate_limited", {"retry-after": when})),
                                     ("repost", placed())])
    assert state == "success" and script.sent[1][0] >= T0 + 2.9


def test_429_beyond_the_repost_limit_is_a_refusal() -> None:
    """Rate limited on every try: after max_reposts re-POSTs the order is final failed,
    refused for rate limiting, and nothing stays reserved."""
    limited = ("place", err(429, "rate_limited", {"retry-after": "0.5"}))
    reposts = [("repost", err(429, "rate_limited", {"retry-after": "0.5"}))] * 2
    state, life, script, log = run_order([limited, *reposts])
    assert state == "failed" and len(script.sent) == 3
    assert final(log)["resolution"] == "refused:rate_limited"
    assert life.side.budget.committed == 0


def test_polls_back_off_until_final() -> None:
    """Polling waits 0.2, 0.4, 0.8, then 1.0 s (the ceiling) between GETs until final."""
    state, _, script, _ = run_order([("place", placed("processing")),
                                     ("poll", placed("processing", status=200, updated_s=1)),
                                     ("poll", placed("processing", status=200, updated_s=2)),
                                     ("poll", placed("processing", status=200, updated_s=3)),
                                     ("poll", placed("success", status=200, updated_s=4))])
    times = [t for t, purpose, _ in script.sent if purpose == "poll"]
    gaps = [round(b - a, 2) for a, b in zip([T0 + 0.01, *times], times, strict=False)]
    assert state == "success" and gaps == [0.2, 0.41, 0.81, 1.01]


def test_callbacks_repeated_and_out_of_order() -> None:
    """With callbacks only: 'processing', then an older 'submitted' (out of order), the
    same 'processing' again (repeated), then 'success' and a late older 'processing'. Only
    the newer views are taken, and the final state never goes back."""
    rules = Rules(deadline_s=5, follow_s=10, unknown_window_s=4, poll=False)
    state, life, script, log = run_order(
        [("place", placed("submitted", updated_s=0))], rules=rules,
        callbacks=[(0.5, order_json("processing", updated_s=1.0)),
                   (0.6, order_json("submitted", updated_s=0.5)),
                   (0.7, order_json("processing", updated_s=1.0)),
                   (1.0, order_json("success", updated_s=2)),
                   (1.5, order_json("processing", updated_s=1.5))])
    assert state == "success"
    observed = [(e["source"], e["state"]) for e in log.of("order_observed")]
    assert observed == [("post", "submitted"), ("callback", "processing"),
                        ("callback", "success")]
    assert not script.sent[1:]  # callbacks alone: no GET was needed
    assert script.callbacks == [(1.5, order_json("processing", updated_s=1.5))]
    assert life.offer(parse_order_body(order_json("processing", updated_s=1.5)),
                      "callback") is False
    assert life.order is not None and life.order.state.value == "success"


def test_callbacks_only_take_a_last_look_at_the_deadline() -> None:
    """With callbacks only and none arriving, one GET at the end records the real state."""
    rules = Rules(deadline_s=5, follow_s=10, unknown_window_s=4, poll=False)
    state, _, script, _ = run_order([("place", placed("processing", updated_s=0)),
                                     ("final_look", placed("success", status=200))],
                                    rules=rules)
    assert state == "success" and script.sent[-1][0] >= T0 + 10


def test_cap_blocks_before_anything_is_sent() -> None:
    """An order the cap cannot cover is final skipped and nothing is sent."""
    state, _, script, log = run_order([], cap="5")
    assert state == "skipped" and not script.sent and log.of("spend_blocked")


@pytest.mark.parametrize("amount", ["-50.00", "NaN", "Infinity", "1e400"])
def test_malformed_money_never_lowers_the_committed_total(amount: str) -> None:
    """An order whose amount is negative, not finite or absurd is a protocol error on a
    2xx: its outcome is unknown, so the whole reservation is kept."""
    bad = placed(amount=amount)
    state, life, _, log = run_order([("place", bad)] + [("resolve", bad)] * 3)
    assert state == "unknown" and life.side.budget.committed == Decimal("10.00")
    assert {e["kind"] for e in log.of("order_error")} == {"bad_response"}


def test_retry_budget_bounds_the_extra_requests_to_a_collapsing_supplier() -> None:
    """200 orders all answered 503 then 404: resolution GETs never exceed the budget's
    reserve plus its share of first attempts, and nothing is ever POSTed twice."""
    script = Script([])
    supplier, log = side(script, cap="10000", retry=RetryBudget(0.2, 10))
    sends: list[str] = []
    for index in range(200):
        life = supplier.new_order(f"o-{index}", PRODUCT, script.now)
        steps = life.steps(check_codes=False)
        step: Any = next(steps)
        try:
            while True:
                if isinstance(step, Send):
                    sends.append(step.purpose)
                    reply = err(503, "overloaded") if step.purpose == "place" \
                        else err(404, "order_not_found")
                    step = steps.send(reply)
                else:
                    script.now = max(script.now, step.until)
                    step = steps.send(None)
        except StopIteration:
            pass
    extra = len(sends) - sends.count("place")
    assert sends.count("place") == 200
    assert extra <= 10 + 0.2 * 200
    states = [e["state"] for e in log.of("order_final")]
    assert set(states) <= {"failed", "unknown"}
    assert supplier.retry.denied > 0


def test_callbacks_for_unknown_orders_and_forgeries_are_recorded() -> None:
    """A callback for an order this run never placed is acknowledged and recorded; a
    forged one gets 401; garbage gets 400; none raises."""
    script = Script([])
    supplier, log = side(script)
    body = json.dumps({"event": "order.updated", "order": order_json(cid="nope")}).encode()
    headers = protocol.signed_headers("k", "s", "POST", "/callbacks/acme", body)
    assert supplier.on_callback("POST", "/callbacks/acme", headers, body) == 200
    forged = protocol.signed_headers("k", "wrong", "POST", "/callbacks/acme", body)
    assert supplier.on_callback("POST", "/callbacks/acme", forged, body) == 401
    junk = b"[" * 10000
    signed = protocol.signed_headers("k", "s", "POST", "/callbacks/acme", junk)
    assert supplier.on_callback("POST", "/callbacks/acme", signed, junk) == 400
    assert [e["verdict"] for e in log.of("callback_received")] == ["unknown_order", "forged",
                                                                   "bad"]




def test_callback_settles_an_unknown_outcome() -> None:
    """A POST answered 500, then a callback saying the order succeeded: the order is
    accepted via the callback, with no resolution GET and no second POST."""
    script = Script([("place", err(500, "internal_error"))],
                    callbacks=[(0.1, order_json("success", updated_s=0.1))])
    supplier, log = side(script)
    life = supplier.new_order("o-1", PRODUCT, T0)
    steps = life.steps(check_codes=False)
    first = next(steps)
    assert isinstance(first, Send) and first.purpose == "place"
    step = steps.send(script.answers.pop(0)[1])
    assert isinstance(step, Wait) and step.news
    body = json.dumps({"event": "order.updated", "order": order_json(updated_s=0.1)}).encode()
    headers = protocol.signed_headers("k", "s", "POST", "/callbacks/acme", body)
    script.now = T0 + 0.1
    assert supplier.on_callback("POST", "/callbacks/acme", headers, body) == 200
    try:
        steps.send(None)
        raise AssertionError("the order should be settled")
    except StopIteration as stop:
        assert stop.value == "success"
    assert log.of("order_accepted")[0]["via"] == "callback"
    assert final(log)["state"] == "success"


def test_tight_retry_budget_asks_once_after_the_window() -> None:
    """With the retry budget nearly spent, an unknown outcome is asked about once, after
    the not-found window, where a 404 settles it as refused with a single GET."""
    script = Script([("place", err(503, "overloaded")),
                     ("resolve", err(404, "order_not_found"))])
    supplier, log = side(script, retry=RetryBudget(0.0, 2))
    life = supplier.new_order("o-1", PRODUCT, T0)
    assert script.run(life.steps(check_codes=False), life) == "failed"
    assert script.sent[1][0] >= T0 + RULES.unknown_window_s
    assert final(log)["resolution"] == "not_found_after_window"


# ---------------------------------------------------------------------------- resume


def resume_order(answers: list[tuple[str, HttpResponse]], posted_at: float | None, *,
                 may_place: bool = True, cap: str = "100", start: float = 60.0,
                 ) -> tuple[str, OrderLife, Script, Log]:
    """Resume order o-1 of a run interrupted ``start`` s after T0 (its POST logged at
    ``posted_at``, or never)."""
    script = Script(answers)
    script.now = T0 + start
    supplier, log = side(script, cap=cap)
    life = supplier.new_order("o-1", PRODUCT, T0)
    state = script.run(life.resume(posted_at, may_place=may_place, check_codes=False), life)
    assert not script.answers, f"answers left over: {script.answers}"
    return state, life, script, log


def test_resumed_order_the_supplier_holds_is_asked_about_never_posted() -> None:
    """A resumed order whose POST was logged is asked about by id; found, it is followed
    to its final state, never POSTed again, and has no delivery time."""
    state, life, script, log = resume_order([("resolve", answer(200, {"order": order_json()}))],
                                            T0 + 1)
    assert state == "success" and [p for _, p, _ in script.sent] == ["resolve"]
    assert final(log)["resolution"] == "reconciled"
    assert final(log)["delivered_seen_at"] is None
    assert life.side.budget.committed == Decimal("9.50")


def test_resumed_order_proven_absent_is_placed_again_under_the_same_id() -> None:
    """A 404 after the not-found window proves the supplier holds nothing: only then is
    the order placed, with the same client order id."""
    state, _, script, log = resume_order(
        [("resolve", err(404, "order_not_found")), ("place", placed())], T0 + 1)
    assert state == "success" and [p for _, p, _ in script.sent] == ["resolve", "place"]
    assert json.loads(script.sent[1][2].request.body)["client_order_id"] == "o-1"
    assert len(log.of("order_absent")) == 1


def test_resumed_order_404_inside_the_window_is_not_placed_again() -> None:
    """A 404 while the not-found window is still open proves nothing: the order is asked
    about again after the window, and placed only if still absent."""
    state, _, script, _ = resume_order(
        [("resolve", err(404, "order_not_found")),
         ("resolve", answer(200, {"order": order_json()}))], T0 + 59, start=60.0)
    assert state == "success" and [p for _, p, _ in script.sent] == ["resolve", "resolve"]
    assert script.sent[1][0] >= T0 + 59 + RULES.unknown_window_s


def test_resumed_burst_order_proven_absent_is_failed_not_placed() -> None:
    """A burst's schedule cannot be replayed: an order proven absent is final failed."""
    state, _, script, log = resume_order([("resolve", err(404, "order_not_found"))], T0 + 1,
                                         may_place=False)
    assert state == "failed" and [p for _, p, _ in script.sent] == ["resolve"]
    assert final(log)["resolution"] == "not_found_after_window"


def test_resumed_order_with_no_answer_stays_unknown_and_keeps_its_money_even_past_the_cap(
) -> None:
    """A sent order the supplier never answers about stays unknown with its reservation
    held, even when the cap is already spent: the money may be gone."""
    state, life, script, log = resume_order([("resolve", NO_ANSWER)] * 3, T0 + 1, cap="0")
    assert state == "unknown" and "place" not in [p for _, p, _ in script.sent]
    assert life.side.budget.committed == Decimal("10.00")  # the listed price, held
    assert final(log)["resolution"] == "unknown_after_resume"


def test_resumed_order_never_sent_is_placed_if_the_plan_allows() -> None:
    """An order planned but never sent is placed on resume (a trial), within the cap."""
    state, _, script, _ = resume_order([("place", placed())], None)
    assert state == "success" and [p for _, p, _ in script.sent] == ["place"]
    state, _, script, log = resume_order([], None, cap="5")
    assert state == "skipped" and not script.sent and log.of("spend_blocked")


def test_unreadable_201_keeps_the_reservation_so_the_cap_holds() -> None:
    """Orders answered 201 with a body that cannot be read stay reserved: a cap that
    allows two orders lets exactly two out, whatever the answers."""
    script = Script([])
    supplier, log = side(script, cap="20.00")
    states = []
    for i in range(10):
        script.answers = [("place", answer(201, b"<html>oops")), *[("resolve", NO_ANSWER)] * 3]
        life = supplier.new_order(f"o-{i}", PRODUCT, script.now)
        states.append(script.run(life.steps(check_codes=False), life))
        script.answers.clear()
    assert states.count("unknown") == 2 and states.count("skipped") == 8
    assert len([e for e in log.of("order_attempt") if e["purpose"] == "place"]) == 2
    assert supplier.budget.committed == Decimal("20.00")


def test_negative_amount_is_a_protocol_error_not_a_refund_of_the_cap() -> None:
    """An order answered with a negative amount is a bad answer (outcome unknown, money
    kept reserved), never a credit that lowers the committed total."""
    state, life, _, log = run_order([("place", placed(amount="-500.00")),
                                     *[("resolve", NO_ANSWER)] * 3])
    assert state == "unknown" and life.side.budget.committed == Decimal("10.00")
    assert log.of("order_error")[0]["kind"] == "bad_response"


def test_callback_paths_name_their_supplier_behind_a_proxy_prefix() -> None:
    """A callback path names its supplier, also under a reverse proxy's per-worker prefix;
    anything else names none."""
    from harness.run.lifecycle import callback_supplier

    assert callback_supplier("/callbacks/acme") == "acme"
    assert callback_supplier("/tb/w1/callbacks/acme?x=1") == "acme"
    assert callback_supplier("/callbacks/") is None
    assert callback_supplier("/etc/passwd") is None


def test_oauth2_token_is_fetched_before_the_first_request_cached_and_renewed_after_401(
) -> None:
    """A supplier whose dialect names the OAuth2 client-credentials authenticator gets a
    token request before its first request, none while the token is fresh, and a new one
    after a 401 drops it."""
    from harness.drivers.signers import OAuth2ClientCredentials

    token = answer(200, {"access_token": "t0k", "token_type": "bearer", "expires_in": 3600})
    script = Script([("auth", token), ("place", placed("processing")),
                     ("poll", err(401, "unauthorized")), ("auth", token),
                     ("poll", answer(200, {"order": order_json(updated_s=2.0)}))])
    supplier, _ = side(script)
    auth = OAuth2ClientCredentials("http://127.0.0.1:9/token", "id", "secret")
    supplier.driver.authenticator = auth  # type: ignore[attr-defined]
    life = supplier.new_order("o-1", PRODUCT, T0)
    assert script.run(life.steps(check_codes=False), life) == "success"
    assert [p for _, p, _ in script.sent] == ["auth", "place", "poll", "auth", "poll"]
    assert auth.fetched == 2 and auth.headers() == {"Authorization": "Bearer t0k"}


def test_callback_that_only_says_the_order_changed_makes_it_looked_up_at_once() -> None:
    """A dialect's callback that carries news but not the order's view (Juhe's) makes
    the follower look the order up at once, even when it follows by callbacks only."""
    from harness.drivers.base import CallbackEvent

    class NewsDriver(ReferenceDriver):
        def verify_callback(self, method: str, path: str, headers: Any,
                            body: bytes) -> CallbackEvent:
            return CallbackEvent("order.updated", parse_order_body(order_json("processing")),
                                 complete=False)

    script = Script([])
    rules = Rules(deadline_s=5, follow_s=10, unknown_window_s=4, poll=False)
    supplier, _ = side(script, rules=rules)
    supplier.driver = NewsDriver("http://127.0.0.1:9/s/acme", Credentials("k", "s"))
    life = supplier.new_order("o-1", PRODUCT, T0)
    steps = life.steps(check_codes=False)
    first = next(steps)
    assert isinstance(first, Send) and first.purpose == "place"
    step = steps.send(placed("processing"))
    assert isinstance(step, Wait) and step.news and step.until == T0 + 10
    script.now = T0 + 1
    assert supplier.on_callback("POST", "/callbacks/acme", {}, b"") == 200
    step = steps.send(None)
    assert isinstance(step, Send) and step.purpose == "poll"
