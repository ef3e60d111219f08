"""Hypothesis properties: random expression trees agree with Python, and no text escapes the error type."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.evaluator import CODES, EvaluationError, Evaluator

try:  # pytest puts tests/ on the path; were tests/ a package, the module would be tests.*
    from test_evaluator_table import json_safe, python, same
except ImportError:
    from tests.test_evaluator_table import json_safe, python, same

# Moderate here; tests/fuzz_evaluator.py (`make fuzz`) runs the same checks with many more examples.
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ARITIES = {
    "abs": (1, 1), "round": (1, 1), "min": (2, 4), "max": (2, 4), "sqrt": (1, 1), "exp": (1, 1),
    "log": (1, 2), "log2": (1, 1), "log10": (1, 1), "sin": (1, 1), "cos": (1, 1), "tan": (1, 1),
    "asin": (1, 1), "acos": (1, 1), "atan": (1, 1), "atan2": (2, 2), "hypot": (0, 3), "floor": (1, 1),
    "ceil": (1, 1), "factorial": (1, 1), "gcd": (0, 3),
}
# Our evaluator refused these without computing them, so asking Python for the answer could take forever.
UNANSWERABLE = {"number_too_large"}


def literal(value) -> str:
    """Write a number as Python source, parenthesised when negative so operators bind as written."""
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


leaves = st.one_of(
    st.integers(-1000, 1000).map(literal),
    st.integers(-(10**40), 10**40).map(literal),
    st.floats(allow_nan=False, allow_infinity=False).map(literal),
    st.sampled_from(["pi", "e", "tau", "True", "False", "0", "1", "2", "0.5"]),
)


def compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Build one level of the language's constructs over child expressions."""
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), children)
    comparisons = st.lists(st.tuples(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), children),
                           min_size=1, max_size=3)
    # round's digit count stays small: Python computes 10 ** -digits first, which could take forever.
    rounding = st.tuples(children, st.integers(-40, 40).map(literal)).map(lambda t: f"round({t[0]}, {t[1]})")
    calls = st.sampled_from(sorted(ARITIES)).flatmap(
        lambda name: st.lists(children, min_size=ARITIES[name][0], max_size=ARITIES[name][1]).map(
            lambda args: f"{name}({', '.join(args)})"
        )
    )
    return st.one_of(
        binary.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "+", "not "]), children).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(children, comparisons).map(lambda t: f"({t[0]} {' '.join(f'{o} {c}' for o, c in t[1])})"),
        st.tuples(st.sampled_from([" and ", " or "]), st.lists(children, min_size=2, max_size=3)).map(
            lambda t: f"({t[0].join(t[1])})"
        ),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        rounding,
        calls,
    )


expressions = st.recursive(leaves, compound, max_leaves=12)

TOKENS = [
    "1", "2", "0", "9", "10", "1e308", "0.5", ".", "e", "pi", "x", "_", "__class__", "sqrt", "factorial",
    "log", "round", "max", "gcd", "lambda", "if", "else", "and", "or", "not", "is", "in", "for",
    "+", "-", "*", "**", "/", "//", "%", "<<", "~", "@", "<", "==", "!=", "=", ":=", "(", ")", "[", "]",
    "{", "}", ",", ":", ";", "'", '"', "f'", "\\", "#", " ", "\n", "\t", "\x00", "\ud800", "×", "١",
    "1j", "None", "...", "9 ** 9 ** 9", "10 ** 10 ** 10", "factorial(10 ** 9)", "-" * 300, "(" * 300,
]
texts = st.one_of(
    st.text(),
    st.lists(st.sampled_from(TOKENS), max_size=40).map("".join),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join),
    expressions,
)

evaluator = Evaluator()


def agrees_with_python(text: str) -> None:
    """Assert the evaluator gives Python's value, or fails where Python has no JSON-safe answer."""
    try:
        ours = evaluator.evaluate(text)
    except EvaluationError as error:
        assert error.code in CODES - {"syntax_error", "undefined_name", "unsupported", "too_complex"}, (
            text, error.code, error.message)
        if error.code in UNANSWERABLE:
            return
        try:
            theirs = python(text)  # the same arithmetic ours stopped in, so it is bounded
        except ZeroDivisionError:
            assert error.code in {"division_by_zero", "domain_error"}, (text, error.code)
        except TypeError:
            assert error.code == "invalid_argument", (text, error.code)
        except (ArithmeticError, ValueError):
            pass
        else:
            assert not json_safe(theirs), (text, error.code, theirs)
        return
    # Ours finished within its bounds doing exactly Python's operations, so Python finishes too.
    theirs = python(text)
    assert same(ours, theirs), (text, ours, theirs)


def never_escapes(text: str) -> None:
    """Assert any text gives a JSON-safe value or the evaluator's own error, nothing else."""
    try:
        value = evaluator.evaluate(text)
    except EvaluationError as error:
        assert error.code in CODES, (text, error.code)
        assert error.message and "\n" not in error.message, (text, error.message)
    else:
        assert json_safe(value), (text, value)


@PROPERTY
@given(expressions)
def test_random_expression_trees_give_pythons_value(text):
    agrees_with_python(text)


# pytest resets warning filters per test, dropping the evaluator's own filter for these warnings.
@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@PROPERTY
@given(texts)
def test_any_text_gives_a_value_or_an_evaluation_error(text):
    never_escapes(text)
