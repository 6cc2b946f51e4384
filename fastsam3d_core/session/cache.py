"""A least-recently-used cache of image embeddings, bounded by memory."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


def _nbytes(value: Any) -> int:
    # NumPy arrays and torch tensors both say their size as ``nbytes``.
    return int(getattr(value, "nbytes", 0))


class EmbeddingCache:
    """Keeps embeddings by crop key until their total size would exceed ``max_bytes``.

    The most recently stored or read embedding is always kept, even if it alone is larger.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: bytes) -> Any | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: bytes, value: Any) -> None:
        if key in self._items:
            self._bytes -= _nbytes(self._items.pop(key))
        self._items[key] = value
        self._bytes += _nbytes(value)
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= _nbytes(evicted)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
