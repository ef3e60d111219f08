"""The bounds every evaluation stays within."""
from __future__ import annotations

from dataclasses import dataclass, fields

# Each nesting level costs the evaluator about three Python frames; 250 levels keep well inside
# Python's default recursion limit of 1,000 with room for the caller's own frames.
DEPTH_CEILING = 250


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Hold the bounds one evaluation must respect; every field has a safe default."""

    max_time_seconds: float = 1.0
    max_memory_bytes: int = 64 * 1024 * 1024
    max_result_digits: int = 4300
    max_nodes: int = 2000
    max_depth: int = 100
    max_length: int = 10_000
    parse_cache_size: int = 512

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            kinds = (int, float) if field.type == "float" else (int,)
            if isinstance(value, bool) or not isinstance(value, kinds):
                kind = "a number" if field.type == "float" else "an integer"
                raise ValueError(f"Limits.{field.name} must be {kind}, not {value!r}")
            if field.name != "parse_cache_size" and not value > 0:
                raise ValueError(f"Limits.{field.name} must be greater than 0, not {value!r}")
        if self.parse_cache_size < 0:
            raise ValueError(f"Limits.parse_cache_size must be 0 or more, not {self.parse_cache_size!r}")
        if self.max_depth > DEPTH_CEILING:
            raise ValueError(
                f"Limits.max_depth must be at most {DEPTH_CEILING} to stay inside Python's recursion limit,"
                f" not {self.max_depth!r}"
            )
