"""Estimate what big-integer work costs before doing it, and refuse work beyond the limits."""
from __future__ import annotations

import math

from .limits import Limits
from .messages import digits

# CPython stores integers in 30-bit limbs; costs below count elementary limb operations.
LIMB_BITS = 30
# CPython multiplies by schoolbook below this many limbs and by Karatsuba above it.
KARATSUBA_CUTOFF = 70
KARATSUBA_EXPONENT = math.log2(3)
# Measured on the 2-core build machine (CPython 3.11): multiplication, division, gcd and factorial all run
# at 5-7e8 limb operations per second. Budgeting 1e8 per second leaves a 5x margin for slower machines.
WORK_PER_SECOND = 100_000_000
# An operation holds its operands, its result and scratch space about the result's size.
MEMORY_HEADROOM = 4
# Below this size an integer operation costs a few microseconds at most; with the node limit bounding how
# many there are (2,000 by default: about 10 ms in all), such operations are not worth counting.
SMALL_BITS = 1024


class Refusal(Exception):
    """Work the limits do not allow, refused before it starts."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def limbs(bits: float) -> float:
    """Return how many limbs an integer of this many bits occupies."""
    return bits / LIMB_BITS + 1


def multiplication(a_bits: float, b_bits: float) -> float:
    """Estimate the work of multiplying integers of these sizes, as CPython does it."""
    small, large = sorted((limbs(a_bits), limbs(b_bits)))
    if small <= KARATSUBA_CUTOFF:
        return small * large
    # Unbalanced operands are cut into slices the size of the smaller one, each multiplied by Karatsuba.
    return large * small ** (KARATSUBA_EXPONENT - 1) * KARATSUBA_CUTOFF ** (2 - KARATSUBA_EXPONENT)


def division(a_bits: float, b_bits: float) -> float:
    """Estimate the work of dividing integers of these sizes (CPython 3.11 uses schoolbook division)."""
    a, b = limbs(a_bits), limbs(b_bits)
    return a + b * max(a - b + 1, 1)


def power(result_bits: float) -> float:
    """Estimate the work of raising an integer to a power that gives a result of this size."""
    # Repeated squaring: the last squaring dominates and the earlier ones add about half as much again.
    return 1.5 * multiplication(result_bits / 2, result_bits / 2) + limbs(result_bits)


def factorial_bits(n: int) -> float:
    """Return the size in bits of n!."""
    return math.lgamma(n + 1) / math.log(2) + 1


def factorial(n: int) -> float:
    """Estimate the work of computing n! (binary splitting: about one full-size multiplication)."""
    bits = factorial_bits(n)
    return multiplication(bits, bits)


class Meter:
    """Count the estimated work of one evaluation against its limits; one per thread, reset per task."""

    def __init__(self, limits: Limits):
        self.work_limit = limits.max_time_seconds * WORK_PER_SECOND
        self.max_bits = limits.max_memory_bytes * 8 // MEMORY_HEADROOM
        self.spent = 0.0

    def reset(self) -> None:
        """Start counting a new evaluation."""
        self.spent = 0.0

    def charge(self, work: float, bits: float, action: str = "would produce a number") -> None:
        """Account for an operation before it runs, or refuse it if it would break a limit."""
        if bits > self.max_bits:
            raise Refusal(
                "number_too_large",
                f"{action} of {digits(bits)}, more than the memory limit allows",
            )
        if work > self.work_limit:
            raise Refusal(
                "number_too_large",
                f"{action} of {digits(bits)}, too large to compute within the time limit",
            )
        self.spent += work
        if self.spent > self.work_limit:
            raise Refusal(
                "number_too_large",
                "would take the expression's big-number arithmetic past its time limit",
            )

    def charge_linear(self, *values: int) -> None:
        """Account for an operation that reads or copies its big integer operands once."""
        bits = max(v.bit_length() for v in values)
        self.charge(limbs(bits) * len(values), bits, "works on a number")
