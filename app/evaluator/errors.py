"""The evaluator's one exception and its codes: pure Python, so the evaluator imports nothing of dalc."""
from __future__ import annotations

# Every code a failed evaluation can carry (docs/expressions.md explains each).
CODES = frozenset({
    "syntax_error", "too_complex", "undefined_name", "unsupported", "division_by_zero", "number_too_large",
    "non_finite_result", "invalid_result", "domain_error", "invalid_argument", "timeout", "internal_error",
})


class EvaluationError(Exception):
    """An expression cannot be evaluated: a permanent failure, recorded once and never retried."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
