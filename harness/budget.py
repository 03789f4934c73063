"""The spending cap: every order reserves its worst case before it is sent.

An order's reservation settles to what it really took once it is final; an order whose
outcome stays unknown keeps its reservation. Retries of one order never reserve again,
so no retry can take a run past its cap.
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
        if self.committed + amount > self.cap:
            return False
        self.committed += amount
        return True

    def settle(self, reserved: Decimal, actual: Decimal) -> None:
        """Replace a reservation by what the order really took."""
        self.committed += actual - reserved
