"""The highest output sequence seen per command: how the hub and the TUI's client drop an output line
they have had already (an agent's replay after a reconnect; a TUI's replay after a resume)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class HighestSequences(Generic[K]):
    """The highest sequence per key, for the ``kept`` keys seen most recently (the others are
    forgotten: a long-lived hub or TUI sees commands without end)."""

    def __init__(self, kept: int) -> None:
        self._highs: OrderedDict[K, int] = OrderedDict()
        self._kept = kept

    def __contains__(self, key: K) -> bool:
        return key in self._highs

    def record(self, key: K, sequence: int) -> None:
        self._highs[key] = sequence
        self._highs.move_to_end(key)
        if len(self._highs) > self._kept:
            self._highs.popitem(last=False)

    def is_new(self, key: K, sequence: int) -> bool:
        """True, and recorded, when ``sequence`` is above the key's highest so far."""
        if sequence <= self._highs.get(key, -1):
            return False
        self.record(key, sequence)
        return True
