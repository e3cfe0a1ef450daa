"""Models a process keeps loaded, shared by every caller: at most `limit()` of them, the least
recently used dropped first (a dropped model still works for whoever holds it, and is freed when
nobody does). Used by core.segment (segmenters) and core.vitmatte (matting models).

    MODELS = LoadedModels(lambda: MAX_LOADED)      # read at each load, so the limit can change
    model = MODELS.get(("name", "/resolved/path"), load)
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class LoadedModels(Generic[T]):
    """A thread-safe LRU of loaded models. One load at a time (no duplicate or racing multi-GB
    loads); the dict lock is held only for dict operations, so lookups never wait for a load of
    another model... except behind a load in progress, which is what one-at-a-time means."""

    def __init__(self, limit: Callable[[], int]):
        self._limit = limit
        self._items: "OrderedDict[Hashable, T]" = OrderedDict()
        self._lock = threading.Lock()          # guards _items
        self._load_lock = threading.Lock()     # one load at a time

    def _hit(self, key: Hashable):
        if key in self._items:
            self._items.move_to_end(key)
            return True, self._items[key]
        return False, None

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The entry for `key`, made with `load()` (once) when absent."""
        with self._lock:
            hit, value = self._hit(key)
            if hit:
                return value
        with self._load_lock:
            with self._lock:
                hit, value = self._hit(key)       # loaded by the thread we waited for
                if hit:
                    return value
                while len(self._items) >= self._limit():   # make room first: the old one can be freed
                    self._items.popitem(last=False)
            value = load()
            with self._lock:
                self._items[key] = value
            return value

    def items(self) -> list[tuple[Hashable, T]]:
        """(key, model) pairs, least recently used first."""
        with self._lock:
            return list(self._items.items())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
