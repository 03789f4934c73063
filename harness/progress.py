"""Live per-supplier progress of a trial in the terminal (rich), with the time elapsed
and an estimate of the time left."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table

from harness.i18n import resolve_lang, text
from harness.i18n.vocabulary import term

COLUMNS = ("planned", "accepted", "success", "in_sla", "partial", "failed", "unknown",
           "skipped", "bad_codes", "refunds", "refunds_completed", "forged_callbacks")
"""The live table's counters, in order; order states are worded from the vocabulary, the
rest from the catalogue (``progress.col.<name>``)."""
STATE_COLUMNS = ("success", "partial", "failed", "unknown", "skipped")
FINAL_STATES = ("success", "partial", "failed", "refunded", "unknown", "skipped")
"""The counters that mark an order final (each order counts once, when it ends)."""


def column_label(name: str, lang: str) -> str:
    """The heading of one counter in ``lang``."""
    return term("state", name, lang) if name in STATE_COLUMNS else text(
        f"progress.col.{name}", lang)


def eta_text(elapsed_s: float, final: int, total: int, lang: str = "en") -> str:
    """``elapsed 12 s · orders final 40/120 · about 24 s left for the orders``: the time
    left from the pace so far (orders final per second), or what comes next.

    >>> eta_text(12.0, 40, 120)
    'elapsed 12 s · orders final 40/120 · about 24 s left for the orders (refunds follow)'
    """
    head = text("progress.head", lang, elapsed=elapsed_s, final=final, total=total)
    if total and final >= total:
        return text("progress.done", lang, head=head)
    if final == 0 or elapsed_s <= 0:
        return text("progress.no_eta", lang, head=head)
    left = (total - final) * elapsed_s / final
    return text("progress.eta", lang, head=head, left=left)


class TrialProgress:
    """Counters per supplier, drawn live while the trial runs (when ``enabled``), in
    ``lang`` (default: :func:`harness.i18n.resolve_lang`), suppliers by display name."""

    def __init__(self, suppliers: list[str], orders_per_supplier: int, *,
                 enabled: bool = True, console: Console | None = None,
                 lang: str | None = None, names: Mapping[str, str] | None = None) -> None:
        self.lang = resolve_lang(lang)
        self.names = dict(names or {})
        """Display names by slug (``星辰卡盟`` for ``xingchen``)."""
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
        lang = self.lang
        table = Table(title=text("progress.title", lang), expand=False, caption=eta_text(
            time.monotonic() - self.started, min(self.final, total), total, lang))
        table.add_column(text("progress.col.supplier", lang))
        for name in COLUMNS:
            table.add_column(column_label(name, lang), justify="right")
        for name, counts in self.counts.items():
            table.add_row(self.names.get(name, name), *(str(counts[key]) for key in COLUMNS))
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
