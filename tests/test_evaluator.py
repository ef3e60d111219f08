"""The evaluator's interface, its limits, and errors a person can act on."""
from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.evaluator import CODES, EvaluationError, Evaluator, Limits

FUNCTIONS = (
    "abs round min max sqrt exp log log2 log10 sin cos tan asin acos atan atan2 hypot floor ceil factorial gcd"
).split()

evaluator = Evaluator()


def failure(text: str, ev: Evaluator = evaluator) -> EvaluationError:
    """Return the error evaluating text raises, failing the test if it raises none."""
    with pytest.raises(EvaluationError) as caught:
        ev.evaluate(text)
    assert caught.value.code in CODES
    assert caught.value.message and "\n" not in caught.value.message
    return caught.value


def test_limits_have_the_documented_defaults():
    limits = Limits()
    assert limits.max_time_seconds == 1.0
    assert limits.max_memory_bytes == 64 * 1024 * 1024
    assert limits.max_result_digits == 4300
    assert limits.max_nodes == 2000
    assert limits.max_depth == 100
    assert limits.max_length == 10_000
    assert limits.parse_cache_size == 512


def test_limits_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_depth = 5


@pytest.mark.parametrize(
    "field,value",
    [("max_time_seconds", 0), ("max_memory_bytes", -1), ("max_nodes", 2.5), ("max_depth", 10_000),
     ("parse_cache_size", -1), ("max_result_digits", True), ("max_length", "10")],
)
def test_contradictory_limits_fail_at_construction_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})


def test_a_result_digit_limit_above_pythons_text_limit_is_refused_at_construction():
    with pytest.raises(ValueError, match="max_result_digits"):
        Evaluator(Limits(max_result_digits=10**6))


def test_evaluate_returns_ints_floats_and_booleans():
    assert evaluator.evaluate("(1 + 2) * 3") == 9
    assert type(evaluator.evaluate("(1 + 2) * 3")) is int
    assert evaluator.evaluate("7 / 2") == 3.5
    assert evaluator.evaluate("2 < 3") is True
    assert Evaluator().evaluate("1 + 1") == 2


def test_the_language_has_exactly_the_functions_and_constants_api_md_lists():
    from app.evaluator.functions import CONSTANTS
    from app.evaluator.functions import FUNCTIONS as IMPLEMENTED

    assert list(IMPLEMENTED) == FUNCTIONS
    assert list(CONSTANTS) == ["pi", "e", "tau"]
    for name in FUNCTIONS:
        error = failure(name)
        assert (error.code, f"'{name}' at column 1 is a function and must be called") == (
            "unsupported", error.message.split(", as in")[0])


def test_text_that_is_not_a_string_is_a_syntax_error():
    assert failure(b"1 + 1").code == "syntax_error"
    assert failure(None).code == "syntax_error"


@pytest.mark.parametrize(
    "text,message",
    [
        ("1 +", "unexpected end of expression at column 4"),
        ("1 + ", "unexpected end of expression at column 4"),
        ("  1 +", "unexpected end of expression at column 6"),
        ("1 + * 2", "unexpected '*' at column 5"),
        ("(1 + 2", "'(' at column 1 is never closed"),
        ("1 + 2)", "unmatched ')' at column 6"),
        ("sqrt(1 2)", "unexpected '2' at column 8; is an operator or a comma missing before it?"),
        ("3 × 4", "invalid character '×' (U+00D7) at column 3"),
        ("1 +\n 2", "unexpected end of line at line 1, column 4"),
        ("", "the expression is empty; write one, such as 1 + 2"),
        ("1\x00", "unexpected NUL character at column 2"),
        ("1 + \ud800", "the character U+D800 at column 5 is not valid text"),
    ],
)
def test_a_syntax_error_says_what_and_where(text, message):
    error = failure(text)
    assert error.code == "syntax_error"
    assert error.message == message


def test_an_unknown_name_is_named_with_a_suggestion_and_the_available_names():
    error = failure("2 * Pi")
    assert error.code == "undefined_name"
    assert "'Pi' at column 5" in error.message
    assert "did you mean 'pi'?" in error.message
    for name in ["pi", "e", "tau", *FUNCTIONS]:
        assert re.search(rf"\b{name}\b", error.message)


def test_an_unknown_function_is_named():
    error = failure("sine(1)")
    assert error.code == "undefined_name"
    assert "unknown function 'sine' at column 1 (did you mean 'sin'?)" in error.message


@pytest.mark.parametrize(
    "text,message",
    [
        ("sqrt(1, 2)", "sqrt() at column 1 takes exactly 1 argument (2 given)"),
        ("max(1)", "max() at column 1 takes at least 2 arguments (1 given)"),
        ("round()", "round() at column 1 takes 1 or 2 arguments (0 given)"),
        ("atan2(1)", "atan2() at column 1 takes exactly 2 arguments (1 given)"),
    ],
)
def test_a_wrong_number_of_arguments_says_how_many_the_function_takes(text, message):
    error = failure(text)
    assert error.code == "invalid_argument"
    assert error.message.startswith(message)


@pytest.mark.parametrize(
    "text,code,fragment",
    [
        ("sqrt(-1)", "domain_error", "sqrt(-1) is undefined: sqrt() needs a number that is 0 or more"),
        ("log(0)", "domain_error", "log(0) is undefined: log() needs a number greater than 0"),
        ("factorial(-1)", "domain_error", "factorial() needs a whole number that is 0 or more"),
        ("acos(2)", "domain_error", "acos(2) is undefined: acos() needs a number between -1 and 1"),
        ("acos(10 ** 400)", "number_too_large", "acos() works on floating-point numbers"),
        ("factorial(2.5)", "invalid_argument", "'factorial(2.5)' is invalid: factorial() needs a whole number"),
        ("5 // (2 - 2)", "division_by_zero", "division by zero in '5 // (2 - 2)'"),
        ("5 % 0", "division_by_zero", "modulo by zero in '5 % 0'"),
        ("0 ** -1", "division_by_zero", "'0 ** -1' raises 0 to a negative power"),
        ("(-8) ** 0.5", "domain_error", "'(-8) ** 0.5' has no real value"),
        ("10 ** 400 / 3", "number_too_large", "use // for an exact integer quotient"),
        ("floor(1e309)", "non_finite_result", "floor() needs a finite number"),
        ("1e308 * 10", "non_finite_result", "the result is infinite"),
        ("1e309 - 1e309", "non_finite_result", "the result is not a number (nan)"),
        ("10 ** 5000", "number_too_large", "the result has more than 4,300 digits"),
    ],
)
def test_an_arithmetic_failure_names_its_cause(text, code, fragment):
    error = failure(text)
    assert error.code == code
    assert fragment in error.message


def test_a_domain_error_shows_a_huge_argument_by_its_size_not_its_digits():
    error = failure("log(-(10 ** 5000))")
    assert error.code == "domain_error"
    assert "a negative integer of about 5,001 digits" in error.message


def test_the_result_digit_limit_is_configurable():
    small = Evaluator(Limits(max_result_digits=5))
    assert small.evaluate("10 ** 5 - 1") == 99999
    assert failure("10 ** 5", small).code == "number_too_large"


# Run in a separate interpreter with warnings as errors: pytest replaces warning filters for each test.
WARNED = """
from app.evaluator import EvaluationError
from app.evaluator import Evaluator
print(Evaluator().evaluate("1if 1 else 2"))
try:
    Evaluator().evaluate(r"'\\d'")
except EvaluationError as error:
    print(error.code)
"""


def test_pythons_warnings_about_an_expression_neither_change_its_outcome_nor_reach_the_log():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-W", "error", "-c", WARNED], cwd=root, capture_output=True, text=True)
    assert (done.stdout, done.stderr) == ("1\nunsupported\n", "")


def test_an_expression_seen_twice_is_not_parsed_again(monkeypatch):
    from app.evaluator import syntax

    parses = []
    monkeypatch.setattr(syntax, "compile", lambda *args: parses.append(args) or compile(*args), raising=False)
    ev = Evaluator()
    for _ in range(5):
        assert ev.evaluate("6 * 7") == 42
    assert len(parses) == 2


def test_the_parse_cache_holds_at_most_its_size():
    ev = Evaluator(Limits(parse_cache_size=3))
    for _ in range(2):
        for i in range(10):
            ev.evaluate(f"{i} + 1")
    assert list(ev._cache._trees) == ["7 + 1", "8 + 1", "9 + 1"]


def test_long_expressions_are_not_cached():
    ev = Evaluator()
    text = " + ".join(["1"] * 100)
    for _ in range(3):
        assert ev.evaluate(text) == 100
    assert ev._cache._trees == {}


def test_a_cached_failure_is_not_remembered_as_a_success():
    ev = Evaluator()
    assert failure("1 / 0", ev).code == "division_by_zero"
    assert failure("1 / 0", ev).code == "division_by_zero"


def test_docs_describe_every_function_limit_and_error_code():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "expressions.md").read_text(encoding="utf-8")
    for name in FUNCTIONS + [f.name for f in dataclasses.fields(Limits)] + sorted(CODES):
        assert f"`{name}" in docs, name


def test_every_example_in_the_docs_gives_what_the_docs_say():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "expressions.md").read_text(encoding="utf-8")
    examples = re.findall(r"`([^`]+)` → `([^`]+)`", docs)
    assert len(examples) >= 30
    for text, said in examples:
        if said in CODES:
            assert failure(text).code == said, text
        else:
            assert repr(evaluator.evaluate(text)) == said, text


def test_the_checked_tree_types_are_all_the_engine_knows():
    from app.evaluator.engine import Engine

    assert set(Engine(Limits()).nodes) == {
        ast.Constant, ast.BinOp, ast.Name, ast.Call, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp,
    }
