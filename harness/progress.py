"""Live per-supplier progress of a trial in the terminal (rich)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from rich.console import Console
from rich.live import Live
from rich.table import Table

COLUMNS = (("planned", "planned"), ("accepted", "accepted"), ("success", "delivered"),
           ("in_sla", "in SLA"), ("partial", "partial"), ("failed", "failed"),
           ("unknown", "unknown"), ("skipped", "capped"), ("bad_codes", "bad codes"),
           ("refunds", "refunds"), ("refunds_completed", "refunded"),
           ("forged_callbacks", "forged cb"))


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

    def count(self, supplier: str, what: str, n: int = 1) -> None:
        self.counts[supplier][what] += n

    def table(self) -> Table:
        table = Table(title="trial progress", expand=False)
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
