"""The language's constants and functions: what each accepts, and Python's math behind it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from . import cost
from .cost import SMALL_BITS, Meter

CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
LOG2_10 = math.log2(10)


@dataclass(frozen=True)
class Spec:
    """What a function accepts: how many arguments, in words what a valid one is, and a call to show."""

    min_args: int
    max_args: int | None
    needs: str
    example: str

    def arity(self) -> str:
        """Say how many arguments the function takes."""
        if self.max_args is None:
            return f"at least {self.min_args} argument{'s' * (self.min_args != 1)}"
        if self.min_args == self.max_args:
            return f"exactly {self.min_args} argument{'s' * (self.min_args != 1)}"
        return f"{self.min_args} or {self.max_args} arguments"


NUMBER = "a number"
FINITE = "a finite number"
POSITIVE = "a number greater than 0"
UNIT = "a number between -1 and 1"

# In the order docs/api.md lists them; error messages list them in this order too.
FUNCTIONS = {
    "abs": Spec(1, 1, NUMBER, "abs(-2.5)"),
    "round": Spec(1, 2, "a number and, optionally, a whole number of digits", "round(2.675, 2)"),
    "min": Spec(2, None, "numbers", "min(3, 1, 2)"),
    "max": Spec(2, None, "numbers", "max(3, 1, 2)"),
    "sqrt": Spec(1, 1, "a number that is 0 or more", "sqrt(2)"),
    "exp": Spec(1, 1, NUMBER, "exp(1)"),
    "log": Spec(1, 2, f"{POSITIVE} and, optionally, a base greater than 0 other than 1", "log(8, 2)"),
    "log2": Spec(1, 1, POSITIVE, "log2(1024)"),
    "log10": Spec(1, 1, POSITIVE, "log10(1000)"),
    "sin": Spec(1, 1, FINITE, "sin(pi / 2)"),
    "cos": Spec(1, 1, FINITE, "cos(0)"),
    "tan": Spec(1, 1, FINITE, "tan(pi / 4)"),
    "asin": Spec(1, 1, UNIT, "asin(1)"),
    "acos": Spec(1, 1, UNIT, "acos(1)"),
    "atan": Spec(1, 1, NUMBER, "atan(1)"),
    "atan2": Spec(2, 2, "two numbers, y then x", "atan2(1, -1)"),
    "hypot": Spec(0, None, "numbers", "hypot(3, 4)"),
    "floor": Spec(1, 1, FINITE, "floor(-2.5)"),
    "ceil": Spec(1, 1, FINITE, "ceil(-2.5)"),
    "factorial": Spec(1, 1, "a whole number that is 0 or more", "factorial(5)"),
    "gcd": Spec(0, None, "whole numbers", "gcd(12, 18)"),
}

# Python raises for these on inf or nan because the result would be an integer; that is a non-finite
# input rather than a domain problem of the function.
TO_INTEGER = frozenset({"floor", "ceil", "round"})


def _abs(meter: Meter, x):
    """Return the absolute value, charging for copying a big integer."""
    if x.__class__ is not float and x.bit_length() > SMALL_BITS:
        meter.charge_linear(x)
    return abs(x)


def _round(meter: Meter, x, ndigits=None):
    """Round as Python does, without building 10**n for a rounding that can only give 0."""
    if ndigits is None:
        return round(x)
    if x.__class__ is not float and ndigits.__class__ is not float and ndigits < 0:
        places = -ndigits
        x_bits = x.bit_length()
        # |x| < 2**x_bits <= 10**places / 2, so x rounds to 0 (and Python would compute 10**places first).
        if places.bit_length() > 64 or places * LOG2_10 >= x_bits + 2:
            return 0
        scale_bits = places * LOG2_10
        meter.charge(cost.power(scale_bits) + cost.division(x_bits, scale_bits), x_bits, "rounds a number")
    return round(x, ndigits)


def _factorial(meter: Meter, n):
    """Return n!, refusing sizes too large to compute; Python rejects floats and negatives itself."""
    if n.__class__ is not float and n > 20:
        bits = math.inf if n.bit_length() > 64 else cost.factorial_bits(n)
        work = math.inf if bits == math.inf else cost.factorial(n)
        meter.charge(work, bits)
    return math.factorial(n)


def _gcd(meter: Meter, *numbers):
    """Return the greatest common divisor, charging its quadratic work on big integers."""
    sizes = [n.bit_length() for n in numbers if n.__class__ is not float]
    if sizes and max(sizes) > SMALL_BITS:
        largest = max(sizes)
        meter.charge(sum(cost.limbs(s) for s in sizes) * cost.limbs(largest), largest, "works on a number")
    return math.gcd(*numbers)


def implementations(meter: Meter) -> dict:
    """Return the callable behind every function name, charging big-integer work to this meter."""
    table = {name: getattr(math, name) for name in FUNCTIONS if hasattr(math, name)}
    table.update(
        abs=partial(_abs, meter),
        round=partial(_round, meter),
        min=min,
        max=max,
        factorial=partial(_factorial, meter),
        gcd=partial(_gcd, meter),
    )
    return table
