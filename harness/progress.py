"""Live per-supplier progress of a trial in the terminal (rich), with the time elapsed
and an estimate of the time left."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

from rich.console import Console
from rich.live import Live
from rich.table import Table

from harness.i18n.vocabulary import term

COLUMNS = (("planned", "planned"), ("accepted", "accepted"),
           ("success", term("state", "success", "en")), ("in_sla", "in SLA"),
           *((s, term("state", s, "en")) for s in ("partial", "failed", "unknown", "skipped")),
           ("bad_codes", "bad codes"),
           ("refunds", "refunds"), ("refunds_completed", "refunded"),
           ("forged_callbacks", "forged cb"))
FINAL_STATES = ("success", "partial", "failed", "refunded", "unknown", "skipped")
"""The counters that mark an order final (each order counts once, when it ends)."""


def eta_text(elapsed_s: float, final: int, total: int) -> str:
    """``elapsed 12 s · orders final 40/120 · about 24 s left for the orders``: the time
    left from the pace so far (orders final per second), or what comes next.

    >>> eta_text(12.0, 40, 120)
    'elapsed 12 s · orders final 40/120 · about 24 s left for the orders (refunds follow)'
    """
    head = f"elapsed {elapsed_s:.0f} s · orders final {final}/{total}"
    if total and final >= total:
        return head + " · following refunds and reading balances"
    if final == 0 or elapsed_s <= 0:
        return head + " · time left: known once the first orders end"
    left = (total - final) * elapsed_s / final
    return head + f" · about {left:.0f} s left for the orders (refunds follow)"


class TrialProgress:
    """Counters per supplier, drawn live while the trial runs (when ``enabled``)."""

    def __init__(self, suppliers: list[str], orders_per_supplier: int, *,
                 enabled: bool = True, console: Console | None = None) -> None:
        self.counts = {name: Counter[str]() for name in suppliers}
        self.orders_per_supplier = orders_per_supplier
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal  # no redraws into logs
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None
        self.started = time.monotonic()

    @property
    def final(self) -> int:
        """Orders that reached a final state (every supplier)."""
        return sum(counts[state] for counts in self.counts.values() for state in FINAL_STATES)

    def count(self, supplier: str, what: str, n: int = 1) -> None:
        self.counts[supplier][what] += n

    def table(self) -> Table:
        total = self.orders_per_supplier * len(self.counts)
        table = Table(title="trial progress", expand=False, caption=eta_text(
            time.monotonic() - self.started, min(self.final, total), total))
        table.add_column("supplier")
        for _, label in COLUMNS:
            table.add_column(label, justify="right")
        for name, counts in self.counts.items():
            table.add_row(name, *(str(counts[key]) for key, _ in COLUMNS))
        return table

    async def _refresh(self) -> None:
        while self._live is not None:
            self._live.update(self.table())
            await asyncio.sleep(0.25)

    async def __aenter__(self) -> TrialProgress:
        self.started = time.monotonic()
        if self.enabled:
            self._live = Live(self.table(), console=self.console, auto_refresh=False,
                              transient=False)
            self._live.start()
            self._task = asyncio.create_task(self._refresh())
        return self

    async def __aexit__(self, *exc: object) -> None:
        live, self._live = self._live, None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if live is not None:
            live.update(self.table(), refresh=True)
            live.stop()
