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
    """What one supplier's share of a run's spending cap (or a burst worker's part of it)
    may still commit.

    ``committed`` is every open reservation plus what settled orders really took. Hidden
    fees are counted too: :meth:`observe` takes the balance's fall since the first order,
    and whatever the committed total cannot explain is a fee. Each later reservation adds
    the fee per charged order seen so far, and the fees of orders settled since the last
    reading are estimated at that rate, so an undisclosed fee cannot walk spending past
    the cap. A fee is known only once a balance shows it: with no reading yet, the first
    orders' fees are not counted.
    """

    def __init__(self, cap: Decimal) -> None:
        if not cap.is_finite() or cap < 0:
            raise ValueError(f"spending cap {cap} is not a finite amount >= 0")
        self.cap = cap
        self.committed = Decimal(0)
        self.charged = 0
        """Settled orders that took money."""
        self.fees_seen = Decimal(0)
        """Fees the last balance reading proves (what ``committed`` cannot explain)."""
        self._charged_at_reading = 0

    @property
    def fee_per_order(self) -> Decimal:
        """The undisclosed fee per charged order, as the balance readings show it."""
        if self._charged_at_reading == 0:
            return self.fees_seen  # fees seen before any order settled: count them once
        return (self.fees_seen / self._charged_at_reading).quantize(Decimal("0.01"),
                                                                     rounding="ROUND_UP")

    @property
    def fees(self) -> Decimal:
        """Hidden fees counted against the cap: seen, or estimated for orders since."""
        if self._charged_at_reading == 0:
            return self.fees_seen
        return max(self.fees_seen, self.fee_per_order * self.charged)

    @property
    def spent(self) -> Decimal:
        """The most this share may have cost: reservations, amounts taken, hidden fees."""
        return self.committed + self.fees

    def room(self) -> Decimal:
        return self.cap - self.spent

    def reserve(self, amount: Decimal, *, held: bool = False) -> Decimal | None:
        """Reserve ``amount`` and the fee per order seen so far; what was reserved, or None
        (and nothing reserved) if it would pass the cap or is not a sane amount.

        ``held``: the money may already be spent (an order a resumed run's log says was
        sent), so it is counted whatever the cap says."""
        if not amount.is_finite() or amount < 0:
            return None
        needed = amount + (self.fee_per_order if self.fees_seen > 0 else Decimal(0))
        if not held and self.spent + needed > self.cap:
            return None
        self.committed += needed
        return needed

    def settle(self, reserved: Decimal, actual: Decimal) -> None:
        """Replace a reservation by what the order really took (a fee estimate included in
        the reservation is counted by :attr:`fees` from now on)."""
        self.committed += actual - reserved
        if actual > 0:
            self.charged += 1

    def observe(self, balance_drop: Decimal) -> None:
        """The balance has fallen ``balance_drop`` since before the first order (read during
        the order phase, before any refund): count what the committed total cannot explain
        as hidden fees. Open reservations are at least what their orders can have taken, so
        the fee counted is never more than the supplier really took."""
        if not balance_drop.is_finite():
            return
        unexplained = balance_drop - self.committed
        if unexplained > self.fees_seen:
            self.fees_seen = unexplained
            self._charged_at_reading = self.charged


def fair_share(cap: Decimal, suppliers: int) -> Decimal:
    """Each supplier's equal part of the spending cap (cents, rounded down)."""
    return (cap / max(1, suppliers)).quantize(Decimal("0.01"), rounding="ROUND_DOWN")


class Budgets:
    """A cap shared fairly among suppliers: each gets its own :class:`Budget`, so a fast
    supplier cannot use up a slow one's money and skew the comparison. Shares are equal
    or, with ``weights`` (e.g. each supplier's scheduled worst case in a burst),
    proportional to them; cents rounded down, so the parts never sum past the cap."""

    def __init__(self, cap: Decimal, names: list[str],
                 weights: dict[str, Decimal] | None = None) -> None:
        total = sum((weights or {}).get(n, Decimal(0)) for n in names)
        self.parts: dict[str, Budget] = {}
        for name in names:
            if weights and total > 0:
                share = (cap * weights.get(name, Decimal(0)) / total).quantize(
                    Decimal("0.01"), rounding="ROUND_DOWN")
            else:
                share = fair_share(cap, len(names))
            self.parts[name] = Budget(share)

    def of(self, name: str) -> Budget:
        return self.parts[name]

    @property
    def cap(self) -> Decimal:
        return sum((b.cap for b in self.parts.values()), Decimal(0))

    @property
    def committed(self) -> Decimal:
        return sum((b.committed for b in self.parts.values()), Decimal(0))

    @property
    def fees(self) -> Decimal:
        return sum((b.fees for b in self.parts.values()), Decimal(0))


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
