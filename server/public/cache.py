"""Each process keeps the bytes of the public answers it rendered, keyed by snapshot,
URL and language: what a public answer contains depends on nothing else (no session,
no user), so the next identical request is served without rendering or querying."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple


class Cached(NamedTuple):
    body: bytes
    content_type: str


class ResponseCache:
    """Least recently used first out, bounded by the bytes of the bodies it holds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Cached | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: Cached) -> None:
        if len(entry.body) > self.max_bytes // 8:
            return  # one huge answer must not flush everything else
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._size -= len(previous.body)
            self._entries[key] = entry
            self._size += len(entry.body)
            while self._size > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped.body)

    def __len__(self) -> int:
        return len(self._entries)
