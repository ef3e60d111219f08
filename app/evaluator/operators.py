"""Python's operators on the language's numbers, charging big-integer work before doing it."""
from __future__ import annotations

import ast
import math
import operator

from . import cost
from .cost import SMALL_BITS, Meter

# The language's operators and how each is written: the checker admits these, Arithmetic applies them.
BINARY = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
}
UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not"}
COMPARISONS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
SYMBOLS = {**BINARY, **UNARY, **COMPARISONS}


class ComplexResult(ValueError):
    """A power of a negative number gave a complex number, which the language does not have."""


def _bits_of_power(base: int, exponent: int) -> float:
    """Estimate the size in bits of base ** exponent for an integer base beyond ±1 and exponent above 1."""
    if exponent.bit_length() > 64:
        return math.inf
    if base.bit_length() > 64:
        return exponent * float(base.bit_length())
    return exponent * math.log2(abs(base))


class Arithmetic:
    """Hold the operators of one thread's evaluations, each charging its meter for big integers."""

    def __init__(self, meter: Meter):
        self.meter = meter

    def table(self) -> dict:
        """Map each operator node type of the language to the function that applies it."""
        return {
            ast.Add: self.add, ast.Sub: self.sub, ast.Mult: self.mul, ast.Div: self.truediv,
            ast.FloorDiv: self.floordiv, ast.Mod: self.mod, ast.Pow: self.pow,
            ast.USub: self.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
            ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge,
        }

    # Values are only int, bool and float: "not float" means an integer (bool included), so it has
    # bit_length. Floats take the fast path because their arithmetic costs the same at any size.

    def add(self, a, b):
        """Add, charging for copying big integers."""
        if a.__class__ is not float and b.__class__ is not float and (
            a.bit_length() > SMALL_BITS or b.bit_length() > SMALL_BITS
        ):
            self.meter.charge_linear(a, b)
        return a + b

    def sub(self, a, b):
        """Subtract, charging for copying big integers."""
        if a.__class__ is not float and b.__class__ is not float and (
            a.bit_length() > SMALL_BITS or b.bit_length() > SMALL_BITS
        ):
            self.meter.charge_linear(a, b)
        return a - b

    def neg(self, a):
        """Negate, charging for copying a big integer."""
        if a.__class__ is not float and a.bit_length() > SMALL_BITS:
            self.meter.charge_linear(a)
        return -a

    def mul(self, a, b):
        """Multiply, refusing integer products too large or too slow to compute."""
        if a.__class__ is not float and b.__class__ is not float:
            a_bits, b_bits = a.bit_length(), b.bit_length()
            if a_bits > SMALL_BITS or b_bits > SMALL_BITS:
                self.meter.charge(cost.multiplication(a_bits, b_bits), a_bits + b_bits)
        return a * b

    def truediv(self, a, b):
        """Divide to a float; CPython scales big integers first, which costs their size once."""
        if a.__class__ is not float and b.__class__ is not float and (
            a.bit_length() > SMALL_BITS or b.bit_length() > SMALL_BITS
        ):
            self.meter.charge_linear(a, b)
        return a / b

    def _charge_division(self, a, b):
        """Charge integer floor division or remainder, which is quadratic in CPython 3.11."""
        if a.__class__ is not float and b.__class__ is not float:
            a_bits = a.bit_length()
            if a_bits > SMALL_BITS:
                self.meter.charge(cost.division(a_bits, b.bit_length()), a_bits, "divides a number")

    def floordiv(self, a, b):
        """Floor-divide as Python does, refusing integer divisions too slow to compute."""
        self._charge_division(a, b)
        return a // b

    def mod(self, a, b):
        """Take the remainder as Python does, refusing integer divisions too slow to compute."""
        self._charge_division(a, b)
        return a % b

    def pow(self, a, b):
        """Raise to a power, refusing integer powers too large to compute and complex results."""
        if a.__class__ is not float and b.__class__ is not float and b > 1 and (a > 1 or a < -1):
            bits = _bits_of_power(a, b)
            if bits > SMALL_BITS:
                self.meter.charge(cost.power(bits), bits)
        result = a**b
        if result.__class__ is complex:
            raise ComplexResult("a negative number raised to a fractional power is a complex number")
        return result
