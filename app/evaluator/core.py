"""The evaluator the workers share: parse (cached), check, run, and vet the result for JSON."""
from __future__ import annotations

import sys
import threading

from .cache import ParseCache
from .checker import check
from .engine import Engine
from .errors import EvaluationError
from .limits import Limits
from .syntax import parse

# Evaluation is pure, so an interpreter fault (like gh-106905's SystemError in ast.parse) is retried.
ATTEMPTS = 3


class Evaluator:
    """Evaluate expressions of the calculator language within Limits; one instance serves all threads."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits = limits or Limits()
        python_digits = sys.get_int_max_str_digits()
        if 0 < python_digits < limits.max_result_digits:
            raise ValueError(
                f"Limits.max_result_digits ({limits.max_result_digits}) is above Python's limit on"
                f" converting integers to text ({python_digits}); raise that with sys.set_int_max_str_digits"
            )
        self._bound = 10**limits.max_result_digits
        self._local = threading.local()
        self._cache = ParseCache(limits.parse_cache_size, self._parse)

    def evaluate(self, expression: str) -> int | float | bool:
        """Return the value of an expression, or raise EvaluationError with a code and a message."""
        if not isinstance(expression, str):
            raise EvaluationError("syntax_error", f"the expression must be text, not {type(expression).__name__}")
        fault = None
        for _ in range(ATTEMPTS):
            try:
                body, source = self._cache.get(expression)
                try:
                    engine = self._local.engine
                except AttributeError:
                    self._local.engine = engine = Engine(self.limits)
                return self._vetted(engine.run(body, source))
            except EvaluationError:
                raise
            except (RecursionError, MemoryError):
                raise EvaluationError(
                    "too_complex", "the expression needs more stack or memory than a worker allows; simplify it"
                ) from None
            except Exception as exc:  # noqa: BLE001 - anything else is an interpreter fault: retry it
                fault = exc
        raise EvaluationError(
            "internal_error", f"the evaluator failed unexpectedly ({type(fault).__name__}); please report it"
        ) from fault

    def _parse(self, expression: str):
        """Parse and check an expression; the result is immutable and safe to share between threads."""
        body, source = parse(expression, self.limits.max_length)
        check(body, source, self.limits)
        return body, source

    def _vetted(self, value):
        """Return the value if JSON can carry it exactly, or raise the error that says why not."""
        kind = value.__class__
        if kind is int:
            if -self._bound < value < self._bound:
                return value
            raise EvaluationError(
                "number_too_large",
                f"the result has more than {self.limits.max_result_digits:,} digits, the most a result may have",
            )
        if kind is float:
            if value - value == 0.0:  # false for inf and nan alike
                return value
            if value != value:
                raise EvaluationError(
                    "non_finite_result", "the result is not a number (nan), as from inf - inf or 0 * inf"
                )
            raise EvaluationError(
                "non_finite_result", "the result is infinite: a floating-point step went beyond about 1.8e308"
            )
        if kind is bool:
            return value
        raise EvaluationError("invalid_result", f"the result is a {kind.__name__}, which is not a number")
