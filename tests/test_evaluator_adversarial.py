"""What a hostile client can write: every escape, bomb and deep nesting fails with its code."""
from __future__ import annotations

import pytest

from app.evaluator import EvaluationError, Evaluator, Limits
from app.evaluator.cost import Meter

evaluator = Evaluator()
# The deep-nesting cases must reach the parser and checker, not stop at the length limit.
roomy = Evaluator(Limits(max_length=1_000_000))

# Known ways out of simpleeval and of Python sandboxes in general; none gets past the checker.
ESCAPES = [
    ("().__class__.__bases__[0].__subclasses__()", "unsupported", "calling anything but a function by its name"),
    ("().__class__.__bases__[0]", "unsupported", "indexing or slicing"),
    ("().__class__.__bases__", "unsupported", "attribute access ('.__bases__')"),
    ("(1).__class__", "unsupported", "attribute access ('.__class__')"),
    ("(1).real", "unsupported", "attribute access ('.real')"),
    ("sqrt.__globals__", "unsupported", "attribute access ('.__globals__')"),
    ("sqrt.__self__.__dict__", "unsupported", "attribute access"),
    ("'{0.__class__}'.format(1)", "unsupported", "calling anything but a function by its name"),
    ("'%s' % 1", "unsupported", "text ('%s')"),
    ("f'{(1).__class__}'", "unsupported", "an f-string"),
    ("f'{1:{9**9**9}}'", "unsupported", "an f-string"),
    ("'a' * 10 ** 9", "unsupported", "text"),
    ("b'a' * 10 ** 9", "unsupported", "text"),
    ("[1] * 10 ** 9", "unsupported", "a list"),
    ("(1,) * 10 ** 9", "unsupported", "a tuple"),
    ("{1: 2}", "unsupported", "a dictionary"),
    ("{1}", "unsupported", "a set"),
    ("[x for x in [1]]", "unsupported", "a comprehension"),
    ("sum(x for x in [1])", "undefined_name", "unknown function 'sum'"),
    ("max(x for x in [1, 2])", "unsupported", "a generator expression"),
    ("(lambda: 1)()", "unsupported", "calling anything but a function by its name"),
    ("max(lambda: 1, 2)", "unsupported", "a lambda function"),
    ("__import__('os').system('id')", "unsupported", "calling anything but a function by its name"),
    ("__import__('os')", "undefined_name", "unknown function '__import__'"),
    ("eval('1')", "undefined_name", "unknown function 'eval'"),
    ("type(1)", "undefined_name", "unknown function 'type'"),
    ("__builtins__", "undefined_name", "unknown name '__builtins__'"),
    ("True.__class__", "unsupported", "attribute access"),
    ("x[0]", "unsupported", "indexing or slicing"),
    ("(x := 1)", "unsupported", "an assignment with ':='"),
    ("max(*[1, 2])", "unsupported", "unpacking with '*'"),
    ("round(2.5, ndigits=1)", "unsupported", "the keyword argument 'ndigits='"),
    ("round(2.5, **{})", "unsupported", "unpacking with '**'"),
    ("1 if 1 else (1).__class__", "unsupported", "attribute access"),
    ("0 and __import__('os')", "undefined_name", "unknown function '__import__'"),
    ("1 << 10 ** 9", "unsupported", "the operator '<<'"),
    ("1 >> 2", "unsupported", "the operator '>>'"),
    ("1 | 2", "unsupported", "the operator '|'"),
    ("1 & 2", "unsupported", "the operator '&'"),
    ("1 ^ 2", "unsupported", "the operator '^'"),
    ("~1", "unsupported", "the operator '~'"),
    ("1 @ 2", "unsupported", "the operator '@'"),
    ("1 is 1", "unsupported", "the operator 'is'"),
    ("1 is not 2", "unsupported", "the operator 'is not'"),
    ("1 in 2", "unsupported", "the operator 'in'"),
    ("1 not in 2", "unsupported", "the operator 'not in'"),
    ("1j", "unsupported", "the complex number '1j'"),
    ("None", "unsupported", "'None'"),
    ("...", "unsupported", "'...'"),
    ("pi(2)", "unsupported", "calling the constant 'pi'"),
    ("x = 1", "unsupported", "assignment ('=')"),
    ("x += 1", "unsupported", "assignment ('+=' and the like)"),
    ("import os", "unsupported", "import is not supported"),
    ("from os import system", "unsupported", "import is not supported"),
    ("del x", "unsupported", "'del' is not supported"),
    ("def f(): pass", "unsupported", "the statement 'def'"),
    ("1; 2", "unsupported", "several expressions or statements"),
    ("await x", "unsupported", "'await'"),
]

# Work that bare simpleeval would start and not finish in time; each is refused before it starts.
BOMBS = [
    "4000000 ** 4000000", "10 ** 4000000 // 3", "9 ** 9 ** 9", "10 ** 10 ** 10", "2 ** 4000000",
    "(10 ** 100000) ** 100", "10 ** 1000000 * 10 ** 1000000", "factorial(10 ** 6)", "factorial(10 ** 100)",
    "factorial(factorial(20))", "(-10) ** 10 ** 8", "(10 ** 5000) ** (10 ** 5000)",
    "10 ** 300000 + 10 ** 300000 + 10 ** 300000",
    "10 ** 200000 // (10 ** 100000 + 1)", "10 ** 200000 % (10 ** 100000 + 1)",
    "gcd(10 ** 400000 + 1, 10 ** 399999 + 7)", "round(10 ** 500000 + 1, -499000)",
    "abs(-10 ** 400000) + abs(-10 ** 400000) + abs(-10 ** 400000)",
    "-(10 ** 400000) - (10 ** 400000) - (10 ** 400000)", "10 ** 8000000 / 3",
    "2 ** 2 ** 2 ** 2 ** 2", "factorial(100000) % 7", "(10 ** 400000 + 1) % (10 ** 200000 + 7)",
]

DEEP = [
    "-" * 20_000 + "1",
    "+".join(["1"] * 20_000),
    "(" * 500 + "1" + ")" * 500,
    "not " * 101 + "1",
    "sqrt(" * 150 + "1" + ")" * 150,
    "2 ** " * 101 + "1",
    "1 if 1 else " * 101 + "1",
    "1 < " * 3000 + "1",
    "max(" + ", ".join(["1"] * 3000) + ")",
    "-(" * 120 + "1" + ")" * 120,
]


@pytest.mark.parametrize("text,code,fragment", ESCAPES)
def test_an_escape_is_refused_with_a_precise_code_and_message(text, code, fragment):
    with pytest.raises(EvaluationError) as caught:
        evaluator.evaluate(text)
    assert caught.value.code == code
    assert fragment in caught.value.message


@pytest.mark.parametrize("text", BOMBS)
def test_a_number_bomb_is_refused_before_it_is_computed(text):
    with pytest.raises(EvaluationError) as caught:
        evaluator.evaluate(text)
    assert caught.value.code == "number_too_large"


@pytest.mark.parametrize("text", DEEP)
def test_deep_or_long_nesting_is_too_complex_never_a_crash(text):
    for ev in (evaluator, roomy):
        with pytest.raises(EvaluationError) as caught:
            ev.evaluate(text)
        assert caught.value.code == "too_complex"


def test_a_long_flat_sum_is_fine_because_chains_are_walked_in_a_loop():
    assert evaluator.evaluate("+".join(["1"] * 1000)) == 1000
    assert evaluator.evaluate("-".join(["1"] * 1000)) == -998


def test_big_integers_within_the_budget_are_computed():
    assert evaluator.evaluate("10 ** 300000 // 10 ** 299990") == 10**10
    assert evaluator.evaluate("factorial(20000) % 1000003") == _factorial_mod(20000, 1000003)
    assert evaluator.evaluate("round(5, -(10 ** 9))") == 0
    assert evaluator.evaluate("round(-(10 ** 4000), -(10 ** 400))") == 0
    assert evaluator.evaluate("gcd(2 ** 100000, 6 ** 1000)") == 2**1000


def _factorial_mod(n: int, m: int) -> int:
    result = 1
    for i in range(2, n + 1):
        result = result * i % m
    return result


def test_the_budget_is_per_evaluation_not_cumulative_across_tasks():
    # Three of these together would exceed one evaluation's budget.
    for _ in range(4):
        assert evaluator.evaluate("10 ** 300000 // 10 ** 299999") == 10


def test_a_smaller_time_budget_refuses_sooner():
    strict = Evaluator(Limits(max_time_seconds=0.001))
    assert evaluator.evaluate("2 ** 100000 % 7") == pow(2, 100000, 7)
    with pytest.raises(EvaluationError) as caught:
        strict.evaluate("3 ** 1000000 % 7")
    assert caught.value.code == "number_too_large"


def test_a_smaller_memory_budget_refuses_smaller_numbers():
    small = Evaluator(Limits(max_memory_bytes=1024))
    with pytest.raises(EvaluationError) as caught:
        small.evaluate("2 ** 3000 % 7")
    assert caught.value.code == "number_too_large"
    assert "memory limit" in caught.value.message


def test_the_meter_refuses_work_beyond_the_budget_before_it_is_spent():
    meter = Meter(Limits())
    meter.charge(meter.work_limit / 2, 100)
    with pytest.raises(Exception, match="time limit"):
        meter.charge(meter.work_limit, 100)


def test_the_evaluator_keeps_serving_after_every_hostile_expression():
    for text in [t for t, _, _ in ESCAPES] + BOMBS + DEEP:
        with pytest.raises(EvaluationError):
            roomy.evaluate(text)
        assert roomy.evaluate("(1 + 2) * 3") == 9
