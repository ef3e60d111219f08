"""Check a parsed tree against the language before any of it runs: constructs, names, calls, size."""
from __future__ import annotations

import ast
import difflib

from .errors import EvaluationError
from .functions import CONSTANTS, FUNCTIONS
from .limits import Limits
from .messages import Source
from .operators import BINARY, COMPARISONS, UNARY

NUMBERS = frozenset({int, float, bool})

OUTSIDE = "; the language has numbers, arithmetic, comparisons, and/or/not, if/else and its functions"
FOREIGN_OPERATORS = {
    ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
    ast.MatMult: "@", ast.Invert: "~", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
    ast.NotIn: "not in",
}
CONSTRUCTS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing or slicing",
    ast.Slice: "slicing",
    ast.List: "a list",
    ast.Tuple: "a tuple (values separated by commas)",
    ast.Set: "a set",
    ast.Dict: "a dictionary",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.Lambda: "a lambda function",
    ast.NamedExpr: "an assignment with ':='",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.Starred: "unpacking with '*'",
    ast.Await: "'await'",
    ast.Yield: "'yield'",
    ast.YieldFrom: "'yield from'",
}


def unsupported(what: str, source: Source, node: ast.AST) -> EvaluationError:
    """Build the error for a construct outside the language."""
    return EvaluationError("unsupported", f"{what} at {source.node_where(node)} is not supported{OUTSIDE}")


def _constant(node: ast.Constant, source: Source) -> EvaluationError:
    """Build the error for a literal that is not a number."""
    value = node.value
    if isinstance(value, str | bytes):
        return unsupported(f"text ({source.segment(node)})", source, node)
    if isinstance(value, complex):
        return unsupported(f"the complex number {source.quote(node)}", source, node)
    return unsupported(source.quote(node), source, node)


def _available() -> str:
    """List the names an expression may use."""
    return f"the constants are {', '.join(CONSTANTS)} and the functions are {', '.join(FUNCTIONS)}"


def _suggestion(name: str) -> str:
    """Suggest the nearest known name, if one is close."""
    close = difflib.get_close_matches(name.lower(), [*CONSTANTS, *FUNCTIONS], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _name(node: ast.Name, source: Source) -> EvaluationError:
    """Build the error for a name that is not one of the constants."""
    if node.id in FUNCTIONS:
        return EvaluationError(
            "unsupported",
            f"'{node.id}' at {source.node_where(node)} is a function and must be called,"
            f" as in {FUNCTIONS[node.id].example}",
        )
    return EvaluationError(
        "undefined_name",
        f"unknown name '{node.id}' at {source.node_where(node)}{_suggestion(node.id)}; {_available()}",
    )


def _call(node: ast.Call, source: Source) -> EvaluationError | None:
    """Refuse a call that is not one of the functions; return the error if the argument count is wrong."""
    func = node.func
    if func.__class__ is not ast.Name:
        raise unsupported("calling anything but a function by its name", source, node)
    name = func.id
    spec = FUNCTIONS.get(name)
    if spec is None:
        if name in CONSTANTS:
            raise unsupported(f"calling the constant '{name}'", source, node)
        raise EvaluationError(
            "undefined_name",
            f"unknown function '{name}' at {source.node_where(node)}{_suggestion(name)}; {_available()}",
        )
    if node.keywords:
        keyword = node.keywords[0]
        what = f"the keyword argument '{keyword.arg}='" if keyword.arg else "unpacking with '**'"
        raise unsupported(what, source, keyword)
    count = len(node.args)
    if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
        return EvaluationError(
            "invalid_argument",
            f"{name}() at {source.node_where(node)} takes {spec.arity()} ({count} given),"
            f" as in {spec.example}",
        )
    return None


def check(body: ast.expr, source: Source, limits: Limits) -> None:
    """Raise EvaluationError unless the tree is in the language and within the size limits."""
    count = _language(body, source)
    if count > limits.max_nodes:
        raise EvaluationError(
            "too_complex",
            f"the expression has more than {limits.max_nodes:,} parts (numbers, names, operators and calls);"
            " split it into smaller expressions",
        )
    # A tree cannot nest deeper than it has nodes, so most expressions need no depth walk at all.
    if count > limits.max_depth:
        _depth(body, source, limits.max_depth)


def _language(body: ast.expr, source: Source) -> int:
    """Raise EvaluationError for the first construct outside the language; return the node count."""
    # Iterative on purpose: the tree may be deeper than Python's recursion limit allows to walk.
    stack = [body]
    pop, push = stack.pop, stack.append
    count = 0
    # A wrong argument count is reported only if nothing is outside the language: "max(*x)" is about '*'.
    miscount = None
    while stack:
        node = pop()
        count += 1
        kind = node.__class__
        if kind is ast.Constant:
            if node.value.__class__ not in NUMBERS:
                raise _constant(node, source)
        elif kind is ast.BinOp:
            if node.op.__class__ not in BINARY:
                raise _operator(node.op, source, node, after=node.left)
            push(node.right)
            push(node.left)
        elif kind is ast.Name:
            if node.id not in CONSTANTS:
                raise _name(node, source)
        elif kind is ast.Call:
            miscount = miscount or _call(node, source)
            stack.extend(reversed(node.args))
        elif kind is ast.UnaryOp:
            if node.op.__class__ not in UNARY:
                raise _operator(node.op, source, node)
            push(node.operand)
        elif kind is ast.Compare:
            for op, before in zip(node.ops, [node.left, *node.comparators[:-1]], strict=True):
                if op.__class__ not in COMPARISONS:
                    raise _operator(op, source, node, after=before)
            stack.extend(reversed(node.comparators))
            push(node.left)
        elif kind is ast.BoolOp:
            stack.extend(reversed(node.values))
        elif kind is ast.IfExp:
            push(node.orelse)
            push(node.body)
            push(node.test)
        else:
            what = CONSTRUCTS.get(kind, f"the construct '{kind.__name__}'")
            if kind is ast.Attribute:
                what = f"attribute access ('.{node.attr}')"
            raise unsupported(what, source, node)
    if miscount:
        raise miscount
    return count


def _depth(body: ast.expr, source: Source, max_depth: int) -> None:
    """Raise too_complex if the evaluator would nest deeper than max_depth on this checked tree."""
    stack = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise EvaluationError(
                "too_complex",
                f"the expression nests more than {max_depth} levels deep at {source.node_where(node)};"
                " simplify it",
            )
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                # The evaluator walks chains like 1 + 2 + 3 in a loop, so a left operand that continues
                # the chain does not nest any deeper.
                chain = child.__class__ is ast.BinOp and node.__class__ is ast.BinOp and child is node.left
                stack.append((child, depth if chain else depth + 1))


def _operator(op: ast.AST, source: Source, node: ast.AST, after: ast.AST | None = None) -> EvaluationError:
    """Build the error for an operator outside the language, placed where the operator stands."""
    symbol = FOREIGN_OPERATORS.get(op.__class__, op.__class__.__name__)
    if after is None:
        where = source.node_where(node)
    else:
        start = source.index(after.end_lineno, after.end_col_offset)
        found = source.expression.find(symbol.split()[0], start)
        where = source.where(found if found >= 0 else start)
    return EvaluationError("unsupported", f"the operator '{symbol}' at {where} is not supported{OUTSIDE}")
