"""Turn text into a parsed expression, or into a syntax error that says what is wrong and where."""
from __future__ import annotations

import ast
import re
import threading
import warnings

from .errors import EvaluationError
from .messages import WHITESPACE, Source

# CPython before 3.11.8 keeps the recursion bookkeeping of building AST objects (ast.parse, or compile
# with PyCF_ONLY_AST, which ast.parse wraps and this module calls directly to skip the wrapper) in state
# shared by all threads (gh-106905): two threads parsing at once can fail with "SystemError: AST
# constructor recursion depth mismatch". Parsing holds the GIL anyway, so serialising it costs nothing.
PARSE_LOCK = threading.Lock()

FILENAME = "<expression>"
# Python warns about odd but valid source such as "1if x else y" or "'\d'"; a client's expression is not
# dalc's code, so such warnings would only fill the worker's log (or, under -W error, change the outcome).
for _category in (SyntaxWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=_category, module=re.escape(FILENAME))

TOKEN = re.compile(r"\d[\w.]*|\w+|\*\*|//|[<>=!]=|\S")
STATEMENTS = {
    ast.Assign: "assignment ('=')",
    ast.AugAssign: "assignment ('+=' and the like)",
    ast.AnnAssign: "assignment",
    ast.Import: "import",
    ast.ImportFrom: "import",
    ast.Delete: "'del'",
}
KEYWORDS = {
    ast.FunctionDef: "def", ast.AsyncFunctionDef: "async def", ast.ClassDef: "class", ast.For: "for",
    ast.AsyncFor: "async for", ast.While: "while", ast.If: "if", ast.With: "with", ast.AsyncWith: "async with",
    ast.Try: "try", ast.Raise: "raise", ast.Return: "return", ast.Assert: "assert", ast.Global: "global",
    ast.Nonlocal: "nonlocal", ast.Pass: "pass", ast.Break: "break", ast.Continue: "continue",
}
NEVER_CLOSED = re.compile(r"'(.)' was never closed")
DETECTED = re.compile(r" \(detected at line \d+\)")


def parse(text: str, max_length: int) -> tuple[ast.expr, Source]:
    """Parse one expression, or raise EvaluationError saying what is wrong and where."""
    if len(text) > max_length:
        raise EvaluationError(
            "too_complex",
            f"the expression is {len(text):,} characters long, more than the limit of {max_length:,}",
        )
    expression = text.strip(WHITESPACE)
    if not expression:
        raise EvaluationError("syntax_error", "the expression is empty; write one, such as 1 + 2")
    source = Source(text, 0 if expression is text else len(text) - len(text.lstrip(WHITESPACE)))
    try:
        with PARSE_LOCK:
            tree = compile(expression, FILENAME, "eval", ast.PyCF_ONLY_AST)
    except SyntaxError as exc:
        raise syntax_error(exc, source) from None
    except (RecursionError, MemoryError):
        # CPython's parser gives up on deep nesting with one of these rather than a SyntaxError.
        raise EvaluationError(
            "too_complex", "the expression is nested too deeply to read; simplify it"
        ) from None
    except UnicodeEncodeError as exc:
        raise EvaluationError(
            "syntax_error",
            f"the character U+{ord(expression[exc.start]):04X} at {source.where(exc.start)} is not valid text",
        ) from None
    except ValueError as exc:
        raise EvaluationError("syntax_error", f"the expression cannot be read: {exc}") from None
    return tree.body, source


def syntax_error(exc: SyntaxError, source: Source) -> EvaluationError:
    """Translate Python's SyntaxError into an error naming the problem and its column."""
    message = exc.msg or "invalid syntax"
    expression = source.expression
    if "integer string conversion" in message:
        return EvaluationError(
            "number_too_large",
            "an integer in the expression has more digits than Python reads as text (4,300 by default);"
            " write it as a power, such as 10 ** 5000",
        )
    if message == "too many nested parentheses":
        return EvaluationError("too_complex", "the expression nests parentheses too deeply; simplify it")
    if "null bytes" in message:
        return EvaluationError(
            "syntax_error", f"unexpected NUL character at {source.where(expression.find(chr(0)))}"
        )
    statement = _statement(expression)
    if statement:
        return EvaluationError("unsupported", f"{statement}; write a single expression, such as 1 + 2")
    index = _index(exc, source)
    if message.endswith("Perhaps you forgot a comma?"):
        # Python marks the whole run "1 2"; the token that breaks it is the last one.
        run = expression[index : index + (exc.end_offset or 0) - (exc.offset or 0)].rstrip()
        index += len(run) - len(run.split()[-1]) if run else 0
        return EvaluationError(
            "syntax_error",
            f"unexpected '{_token(expression, index)}' at {source.where(index)};"
            " is an operator or a comma missing before it?",
        )
    if message.startswith("invalid syntax") or message.startswith("unexpected EOF"):
        if index >= len(expression):
            return EvaluationError("syntax_error", f"unexpected end of expression at {source.where(index)}")
        line_end = expression.find("\n", index)
        if index == line_end:
            return EvaluationError("syntax_error", f"unexpected end of line at {source.where(index)}")
        return EvaluationError("syntax_error", f"unexpected '{_token(expression, index)}' at {source.where(index)}")
    never_closed = NEVER_CLOSED.fullmatch(message)
    if never_closed:
        return EvaluationError(
            "syntax_error", f"'{never_closed.group(1)}' at {source.where(index)} is never closed"
        )
    detail = DETECTED.sub("", message.split(". ")[0].rstrip("."))
    return EvaluationError("syntax_error", f"{detail} at {source.where(index)}")


def _token(expression: str, index: int) -> str:
    """Return the token that starts at an index of the expression."""
    token = TOKEN.match(expression, index)
    return token.group() if token else expression[index]


def _index(exc: SyntaxError, source: Source) -> int:
    """Find where in the expression Python's SyntaxError points."""
    expression = source.expression
    lines = expression.split("\n")
    lineno = exc.lineno or len(lines)
    offset = exc.offset or 0
    if lineno > len(lines):
        return len(expression)
    # CPython reports a few errors at the very end of the input with offset 0.
    if offset <= 0:
        return len(expression) if lineno == len(lines) else sum(len(line) + 1 for line in lines[:lineno]) - 1
    before = sum(len(line) + 1 for line in lines[: lineno - 1])
    return min(before + offset - 1, before + len(lines[lineno - 1]))


def _statement(expression: str) -> str | None:
    """Describe the statement the text is, if it is one rather than an expression."""
    try:
        with PARSE_LOCK:
            body = compile(expression, FILENAME, "exec", ast.PyCF_ONLY_AST).body
    except Exception:  # any failure just means "not a statement"; the caller reports the original error
        return None
    if len(body) > 1:
        return "several expressions or statements are not supported"
    kind = body[0].__class__ if body else None
    if kind is ast.Expr or kind is None:
        return None
    what = STATEMENTS.get(kind) or f"the statement '{KEYWORDS.get(kind, kind.__name__.lower())}'"
    return f"{what} is not supported"
