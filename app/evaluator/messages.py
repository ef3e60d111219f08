"""Say where in the text a problem is, and show numbers without converting huge ones to text."""
from __future__ import annotations

import ast
import math
from typing import NamedTuple

# Quoted fragments of the expression stay short enough to read in one line of a task's error message.
SEGMENT_CHARS = 40
# Integers up to this many bits are shown in full; larger ones are described by their size, which also
# keeps error messages clear of Python's limit on converting huge integers to text.
SHOWN_BITS = 64
DIGITS_PER_BIT = math.log10(2)


class Source(NamedTuple):
    """The text a client sent, and where the parsed (stripped) expression starts inside it."""

    text: str
    start: int

    @property
    def expression(self) -> str:
        """Return the stripped expression that was parsed."""
        return self.text[self.start:].rstrip(WHITESPACE)

    def where(self, index: int) -> str:
        """Name the column (and line, for multi-line text) of an index into the stripped expression."""
        at = self.start + index
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        if "\n" not in self.text:
            return f"column {column}"
        return f"line {self.text.count(chr(10), 0, at) + 1}, column {column}"

    def index(self, lineno: int, byte_offset: int) -> int:
        """Turn a parser position (1-based line, UTF-8 byte column) into an index into the expression."""
        lines = self.expression.split("\n")
        before = sum(len(line) + 1 for line in lines[: lineno - 1])
        line = lines[lineno - 1] if lineno - 1 < len(lines) else ""
        return before + len(line.encode()[:byte_offset].decode(errors="ignore"))

    def node_where(self, node: ast.AST) -> str:
        """Name the column where a node of the parsed tree starts."""
        return self.where(self.index(node.lineno, node.col_offset))

    def segment(self, node: ast.AST) -> str:
        """Return the part of the expression a node came from, on one line and shortened when long."""
        part = " ".join((ast.get_source_segment(self.expression, node) or "").split())
        if len(part) > SEGMENT_CHARS:
            half = SEGMENT_CHARS // 2 - 1
            part = f"{part[:half]}…{part[-half:]}"
        return part

    def quote(self, node: ast.AST) -> str:
        """Quote the part of the expression a node came from."""
        return f"'{self.segment(node)}'"


WHITESPACE = " \t\n\r\f\v"


def digits(bits: float) -> str:
    """Say roughly how many decimal digits an integer of this many bits has."""
    if bits > 1e15:
        return "an astronomical number of digits"
    return f"about {int(bits * DIGITS_PER_BIT) + 1:,} digits"


def show(value) -> str:
    """Show a number for a message, describing huge integers by their size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > SHOWN_BITS:
        sign = "negative " if value < 0 else ""
        return f"a {sign}integer of {digits(value.bit_length())}"
    return repr(value)
