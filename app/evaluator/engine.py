"""Run checked trees through simpleeval, turning arithmetic failures into errors that name the culprit."""
from __future__ import annotations

import ast
import math

from simpleeval import SimpleEval

from .cost import Meter, Refusal
from .errors import EvaluationError
from .functions import CONSTANTS, FUNCTIONS, TO_INTEGER, implementations
from .limits import Limits
from .messages import Source, show
from .operators import SYMBOLS, Arithmetic, ComplexResult

FLOAT_LIMIT = "about 1.8e308"
FLOAT_BITS = 1024


class Engine(SimpleEval):
    """Evaluate checked trees for one thread; the checker has already refused anything unknown."""

    def __init__(self, limits: Limits):
        self.meter = Meter(limits)
        super().__init__(
            operators=Arithmetic(self.meter).table(),
            functions=implementations(self.meter),
            names=dict(CONSTANTS),
        )
        # Only the checked node types: anything else is a bug in the checker and fails loudly (KeyError).
        self.nodes = {
            ast.Constant: self._eval_constant,
            ast.BinOp: self._eval_binop,
            ast.Name: self._eval_name,
            ast.Call: self._eval_call,
            ast.UnaryOp: self._eval_unaryop,
            ast.Compare: self._eval_compare,
            ast.BoolOp: self._eval_boolop,
            ast.IfExp: self._eval_ifexp,
        }
        self.source = Source("", 0)

    def run(self, body: ast.expr, source: Source):
        """Evaluate a checked tree from the start of a fresh work budget."""
        self.meter.reset()
        self.source = source
        return self._eval(body)

    def _eval(self, node):
        # simpleeval screens every intermediate value for forbidden objects; checked trees only ever
        # produce numbers, so the screening is skipped.
        return self.nodes[node.__class__](node)

    @staticmethod
    def _eval_constant(node):
        return node.value

    def _eval_name(self, node):
        return self.names[node.id]

    def _eval_binop(self, node):
        # Walk the left spine of chains such as 1 + 2 + ... + n in a loop rather than by recursion.
        chain = []
        while node.__class__ is ast.BinOp:
            chain.append(node)
            node = node.left
        value = self._eval(node)
        operators = self.operators
        for link in reversed(chain):
            right = self._eval(link.right)
            try:
                value = operators[link.op.__class__](value, right)
            except (ArithmeticError, ValueError, TypeError, Refusal) as exc:
                raise self._operator_error(link, exc, value, right) from None
        return value

    def _eval_unaryop(self, node):
        operand = self._eval(node.operand)
        try:
            return self.operators[node.op.__class__](operand)
        except Refusal as exc:
            raise self._operator_error(node, exc, operand) from None

    def _eval_call(self, node):
        name = node.func.id
        args = list(map(self._eval, node.args))
        try:
            return self.functions[name](*args)
        except (ArithmeticError, ValueError, TypeError, Refusal) as exc:
            raise self._function_error(node, name, exc, args) from None

    def _operator_error(self, node, exc: Exception, *operands) -> EvaluationError:
        """Explain why an operator failed, quoting the part of the expression it applies to."""
        quoted = self.source.quote(node)
        symbol = SYMBOLS.get(node.op.__class__, "?")
        if isinstance(exc, Refusal):
            return EvaluationError(exc.code, f"{quoted} {exc.reason}")
        if isinstance(exc, ZeroDivisionError):
            if symbol == "**":
                return EvaluationError("division_by_zero", f"{quoted} raises 0 to a negative power")
            what = "modulo" if symbol == "%" else "division"
            return EvaluationError("division_by_zero", f"{what} by zero in {quoted}")
        if isinstance(exc, ComplexResult):
            return EvaluationError("domain_error", f"{quoted} has no real value: {exc}")
        if isinstance(exc, OverflowError):
            return EvaluationError("number_too_large", _float_overflow(quoted, symbol, operands))
        return EvaluationError("invalid_argument", f"{quoted} cannot be computed: {exc}")

    def _function_error(self, node, name: str, exc: Exception, args: list) -> EvaluationError:
        """Explain why a function call failed, quoting the call."""
        quoted = self.source.quote(node)
        needs = FUNCTIONS[name].needs
        if isinstance(exc, Refusal):
            return EvaluationError(exc.code, f"{quoted} {exc.reason}")
        if name in TO_INTEGER and any(a.__class__ is float and not math.isfinite(a) for a in args):
            return EvaluationError(
                "non_finite_result", f"{quoted} has no value: {name}() needs a finite number, not inf or nan"
            )
        if isinstance(exc, TypeError):
            return EvaluationError("invalid_argument", f"{quoted} is invalid: {name}() needs {needs}")
        if isinstance(exc, OverflowError):
            if any(a.__class__ is int and a.bit_length() > FLOAT_BITS for a in args):
                return EvaluationError(
                    "number_too_large",
                    f"{quoted} is too large: {name}() works on floating-point numbers, which reach only"
                    f" {FLOAT_LIMIT}",
                )
            return EvaluationError(
                "number_too_large", f"the result of {quoted} is larger than a floating-point number ({FLOAT_LIMIT})"
            )
        # ValueError ("math domain error") and ZeroDivisionError (a logarithm in base 1).
        shown = ", ".join(show(a) for a in args)
        return EvaluationError("domain_error", f"{name}({shown}) is undefined: {name}() needs {needs}")


def _float_overflow(quoted: str, symbol: str, operands: tuple) -> str:
    """Explain an operator result or operand that does not fit a float."""
    if symbol == "/" and all(o.__class__ is not float for o in operands):
        return (
            f"the result of {quoted} is larger than a floating-point number ({FLOAT_LIMIT});"
            " use // for an exact integer quotient"
        )
    if any(o.__class__ is int and o.bit_length() > FLOAT_BITS for o in operands):
        return (
            f"{quoted} mixes a float with an integer too large to be one ({FLOAT_LIMIT});"
            " keep big numbers to integer arithmetic"
        )
    return f"the result of {quoted} is larger than a floating-point number ({FLOAT_LIMIT})"
