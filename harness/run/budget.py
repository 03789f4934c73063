"""The two budgets of a run: money (the spending cap) and requests (the retry budget).

:class:`Budget`: every order reserves its worst case before it is sent. An order's
reservation settles to what it really took once it is final; an order whose outcome stays
unknown keeps its reservation. Retries of one order never reserve again, so no retry can
take a run past its cap.

:class:`RetryBudget`: client-side retry throttling, as gRPC's retry throttling and the
SRE book's adaptive throttling do it. A supplier's extra requests (re-POSTs after a 429,
GETs that resolve an unknown outcome) may use ``ratio`` of its first attempts plus a
small ``reserve``, so a collapsing supplier is never sent more load by the harness than
the schedule it is measured against.
"""

from __future__ import annotations

from decimal import Decimal


class Budget:
    """What a run (or one burst worker, with its share) may still commit."""

    def __init__(self, cap: Decimal) -> None:
        self.cap = cap
        self.committed = Decimal(0)

    def reserve(self, amount: Decimal) -> bool:
        """Reserve ``amount``; False (and nothing reserved) if it would pass the cap."""
        if not amount.is_finite() or amount < 0 or self.committed + amount > self.cap:
            return False
        self.committed += amount
        return True

    def settle(self, reserved: Decimal, actual: Decimal) -> None:
        """Replace a reservation by what the order really took."""
        self.committed += actual - reserved


class RetryBudget:
    """Per supplier: extra requests allowed = ``reserve`` + ``ratio`` × first attempts."""

    def __init__(self, ratio: float = 0.2, reserve: int = 10) -> None:
        self.ratio = ratio
        self.reserve = reserve
        self.first = 0
        self.extra = 0
        self.denied = 0

    def first_attempt(self) -> None:
        """An order's first POST: the budget grows by ``ratio``."""
        self.first += 1

    def room(self) -> float:
        """Extra requests the budget would allow now."""
        return self.reserve + self.ratio * self.first - self.extra

    def allow(self) -> bool:
        """Take one extra request if the budget has room; count a denial otherwise."""
        if self.extra + 1 > self.reserve + self.ratio * self.first:
            self.denied += 1
            return False
        self.extra += 1
        return True
