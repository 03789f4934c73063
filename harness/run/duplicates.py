"""The duplicate-code index of a burst worker, compact (issue 13: flat memory).

No gevent, no Locust: tests and other executors may import it freely.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from harness.codes import DuplicateIndex


class CompactDuplicateIndex(DuplicateIndex):
    """:class:`harness.codes.DuplicateIndex` with this run's hashes in an open-addressing
    table of two ``array('Q')`` (the 128 bits of each 32-hex-digit keyed hash), at most
    3/4 full: 23-45 bytes a code instead of ~150 for a ``set`` of ``str``, so a long burst's worker
    stays flat. Same answers: a hash that is not 32 hex digits goes to the plain set."""

    MAX_PRESIZE = 1 << 23
    """The most slots allocated up front (8.4M: 6.3M codes, 143 MB); past it, it grows."""

    def __init__(self, earlier: Iterable[str] = (), expected: int = 0) -> None:
        """``expected``: the codes this worker expects (its orders × quantity). The table
        is sized for them at once, so it never grows while orders are placed: no step in
        memory, and no rehash (about a second in pure Python at a million codes, with
        every order of the worker waiting)."""
        super().__init__(earlier)
        size = 1024
        while size * 3 < expected * 4 and size < self.MAX_PRESIZE:
            size *= 2
        self._hi = array("Q", bytes(8 * size))
        self._lo = array("Q", bytes(8 * size))
        self._used = array("B", bytes(size))
        self._count = 0

    def see(self, digest: str) -> str | None:
        if len(digest) != 32:
            return super().see(digest)
        try:
            value = int(digest, 16)
        except ValueError:
            return super().see(digest)
        if not self._add(value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF):
            return "this_run"
        return "earlier_run" if digest in self._earlier else None

    def _add(self, hi: int, lo: int) -> bool:
        """Insert; False if it was there already."""
        mask = len(self._used) - 1
        i = (lo ^ hi) & mask
        while self._used[i]:
            if self._lo[i] == lo and self._hi[i] == hi:
                return False
            i = (i + 1) & mask
        self._used[i], self._hi[i], self._lo[i] = 1, hi, lo
        self._count += 1
        if self._count * 4 > len(self._used) * 3:  # at most 3/4 full
            self._grow()
        return True

    def _grow(self) -> None:
        entries = [(self._hi[i], self._lo[i]) for i in range(len(self._used)) if self._used[i]]
        size = len(self._used) * 2
        self._hi = array("Q", bytes(8 * size))
        self._lo = array("Q", bytes(8 * size))
        self._used = array("B", bytes(size))
        self._count = 0
        for hi, lo in entries:
            self._add(hi, lo)


__all__ = ["CompactDuplicateIndex"]
