"""Every operator and function against Python itself: the expected values are computed, not typed in."""
from __future__ import annotations

import ast
import json
import math

import pytest

from app.evaluator import EvaluationError, Evaluator

# The language as docs/api.md lists it, mapped to what Python calls it: the table's source of truth.
REFERENCE = {
    "__builtins__": {},
    "abs": abs, "round": round, "min": min, "max": max,
    **{name: getattr(math, name) for name in (
        "sqrt exp log log2 log10 sin cos tan asin acos atan atan2 hypot floor ceil factorial gcd".split()
    )},
    "pi": math.pi, "e": math.e, "tau": math.tau,
}

VALUES = [
    # numbers
    "0", "42", "3.25", ".5", "5.", "1e3", "1E-3", "2.5e+2", "1_000_000", "0x1F", "0o17", "0b101",
    "1e308", "5e-324", "123456789012345678901234567890", "True", "False",
    # addition and subtraction
    "1 + 2", "1 - 2", "0.1 + 0.2", "1 + 2.5", "10 ** 20 + 1", "-(10 ** 30) - 1", "1 - -1", "True + True",
    "2 - 0.5 - 0.25",
    # multiplication
    "6 * 7", "-3 * 4", "2.5 * 4", "10 ** 20 * 10 ** 20", "0 * -1.5", "True * 3", "9007199254740993 * 1.0",
    "0.1 * 3",
    # true division
    "7 / 2", "-7 / 2", "1 / 3", "10 ** 30 / 10 ** 10", "6 / 3", "1 / 3 * 3", "1 / 1e-300", "-0.0 / 5",
    "(10 ** 400 + 1) / 10 ** 399",
    # floor division
    "7 // 2", "-7 // 2", "7 // -2", "-7 // -2", "7.5 // 2", "-7.5 // 2", "7 // 2.5", "10 ** 30 // 7",
    "1e3 // 7", "-(10 ** 30) // 7",
    # modulo
    "7 % 3", "-7 % 3", "7 % -3", "-7 % -3", "7.5 % 2", "-7.5 % 2", "5 % 0.3", "10 ** 30 % 7",
    "-0.0 % 5", "5.5 % -2", "-(10 ** 30) % 7",
    # powers, and unary minus binding looser than **
    "2 ** 10", "2 ** -1", "2 ** 0.5", "(-2) ** 3", "(-2) ** -3", "-2 ** 2", "2 ** 3 ** 2", "(2 ** 3) ** 2",
    "0 ** 0", "0.0 ** 0", "4 ** 0.5", "2 ** 100", "10 ** -2", "1.5 ** 2.5", "(-1) ** (10 ** 20)",
    "1 ** (10 ** 100)", "0 ** (10 ** 100)", "2 ** -1074", "10 ** 2 ** 2", "-(2 ** 63)", "2 ** 64 - 1",
    "(-8) ** 3", "- 2 ** -1", "2 ** True", "(10 ** 100) ** 2",
    # unary operators
    "-(-3)", "--3", "-+-3", "+-3", "+3.5", "-0.0", "not 0", "not 1", "not 0.0", "not -1", "-True",
    # comparisons
    "1 < 2", "2 < 1", "1 <= 1", "1 > 0.5", "1 >= 2", "1 == 1.0", "1 != 1", "0.1 + 0.2 == 0.3",
    "1 < 2 < 3", "3 > 2 > 2", "1 < 3 > 2", "1 == 1 == 1.0", "10 ** 30 > 1e29", "(1 < 2) + 1", "True == 1",
    "2 ** 53 + 1 == 2.0 ** 53", "-0.0 == 0", "1e308 * 10 > 1e308",
    # and, or, not
    "1 and 2", "0 and 2", "1 or 2", "0 or 0.0", "0 or 2", "not 1 and 0", "1 < 2 and 2 < 3", "1 > 2 or 3",
    "True and False", "not True", "0 and 1 / 0", "1 or 1 / 0",
    # conditional expressions, evaluated lazily as in Python
    "1 if 1 < 2 else 2", "1 if 0 else 2", "1 if 0 else 2 if 0 else 3", "(1 / 0) if 0 else 5",
    "2 if 0.0 else 3.5",
    # constants
    "pi", "e", "tau", "2 * pi", "e ** 2", "tau / 2 == pi",
    # abs
    "abs(-3)", "abs(3.5)", "abs(-0.0)", "abs(-10 ** 30)", "abs(True)",
    # round: half to even, negative digit counts, floats and integers
    "round(2.5)", "round(3.5)", "round(-2.5)", "round(2.675, 2)", "round(1234, -2)", "round(1250, -2)",
    "round(1.5, 0)", "round(-0.5)", "round(7)", "round(123.456, -1)", "round(5, -1)", "round(15, -1)",
    "round(10 ** 20 + 5, -1)", "round(1.5, 10 ** 100)", "round(-1.5, -(10 ** 100))", "round(1e300)",
    "round(99, -2)", "round(-150, -2)", "round(5, -50)", "round(True, 2)",
    # min and max
    "min(3, 1, 2)", "max(3, 1, 2)", "min(1, 1.0)", "max(-1, -1.5)", "min(2, True)", "max(10 ** 30, 1e30)",
    "max(0.0, -0.0)",
    # square roots, exponentials and logarithms
    "sqrt(16)", "sqrt(2)", "sqrt(0)", "sqrt(-0.0)", "sqrt(1e308)", "sqrt(10 ** 300)",
    "exp(0)", "exp(1)", "exp(-1000)", "exp(709)",
    "log(e)", "log(1)", "log(8, 2)", "log(100, 10)", "log(10 ** 400)", "log(2, 0.5)", "log(0.5)",
    "log2(1024)", "log2(10 ** 400)", "log2(0.125)", "log10(1000)", "log10(10 ** 500)", "log10(0.001)",
    # trigonometry
    "sin(0)", "sin(pi / 2)", "sin(-pi)", "cos(0)", "cos(pi)", "tan(pi / 4)", "tan(0)", "sin(1e22)",
    "cos(10 ** 20)", "asin(1)", "asin(-0.5)", "acos(1)", "acos(-1)", "acos(0.5)", "atan(1)",
    "atan(-1e308)", "atan2(1, 1)", "atan2(1, -1)", "atan2(-0.0, -1)", "atan2(0, 0)", "atan2(0.0, -0.0)",
    "hypot(3, 4)", "hypot()", "hypot(5)", "hypot(1, 2, 2)", "hypot(-3, -4)", "hypot(1e308, 1e308)",
    # floor and ceil
    "floor(2.5)", "floor(-2.5)", "floor(3)", "floor(1e300)", "ceil(2.1)", "ceil(-2.1)", "ceil(-0.5)",
    "floor(10 ** 30)", "ceil(True)",
    # factorial and gcd
    "factorial(0)", "factorial(1)", "factorial(5)", "factorial(20)", "factorial(100)", "factorial(True)",
    "factorial(1000)", "gcd(12, 18)", "gcd(0, 0)", "gcd()", "gcd(-4, 6)", "gcd(7)", "gcd(12, 18, 27)",
    "gcd(2 ** 100, 6 ** 50)", "gcd(True, 4)",
    # combinations, layout and the edges of the result size
    "(1 + 2) * 3", "2 + 3 * 4 ** 2 / 8 - 1", "sqrt(abs(-16)) + floor(2.7) * ceil(0.2)",
    "max(min(1, 2), 0.5) ** 2", "log(exp(2))", "hypot(sin(1), cos(1))", "2 ** 0.5 * 2 ** 0.5 == 2",
    "factorial(10) // gcd(12, 18) % 1000", "round(pi, 5) * 10 ** 5", " 1 + 2 ", "(\n1 + 2\n)",
    "((((((1))))))", "10 ** 4300 - 1", "-(10 ** 4300 - 1)", "2 ** 14000", "factorial(1700) // factorial(1690)",
]

# Python gives no JSON-safe answer for these (it raises, or gives inf, nan, a complex number or an integer
# too long for the result limit); each must fail with its code.
FAILURES = [
    ("1 / 0", "division_by_zero"), ("1 // 0", "division_by_zero"), ("1 % 0", "division_by_zero"),
    ("1.5 / 0.0", "division_by_zero"), ("1.0 // 0", "division_by_zero"), ("5 % 0.0", "division_by_zero"),
    ("0 ** -1", "division_by_zero"), ("0.0 ** -2", "division_by_zero"), ("10 ** 40 // 0", "division_by_zero"),
    ("sqrt(-1)", "domain_error"), ("log(0)", "domain_error"), ("log(-1)", "domain_error"),
    ("log(5, 1)", "domain_error"), ("log(5, 0)", "domain_error"), ("log2(0)", "domain_error"),
    ("log10(-5)", "domain_error"), ("asin(2)", "domain_error"), ("acos(2)", "domain_error"),
    ("acos(-1.5)", "domain_error"), ("factorial(-1)", "domain_error"), ("sin(1e309)", "domain_error"),
    ("cos(-1e309)", "domain_error"), ("tan(1e309)", "domain_error"), ("(-8) ** 0.5", "domain_error"),
    ("(-8.0) ** (1 / 3)", "domain_error"),
    ("factorial(2.5)", "invalid_argument"), ("factorial(5.0)", "invalid_argument"),
    ("gcd(2.5, 1)", "invalid_argument"), ("round(2.5, 1.5)", "invalid_argument"),
    ("round(10, 0.5)", "invalid_argument"),
    ("sqrt(10 ** 400)", "number_too_large"), ("exp(1000)", "number_too_large"),
    ("10 ** 400 / 3", "number_too_large"), ("10.0 ** 400", "number_too_large"),
    ("2.0 ** 10000", "number_too_large"), ("10 ** 5000 % 7.0", "number_too_large"),
    ("atan(10 ** 400)", "number_too_large"), ("10 ** 4300", "number_too_large"),
    ("-(10 ** 4300)", "number_too_large"), ("factorial(2000)", "number_too_large"),
    ("2 ** 20000", "number_too_large"), ("2 ** -(10 ** 400)", "number_too_large"),
    ("1e308 * 10", "non_finite_result"), ("1e308 + 1e308", "non_finite_result"),
    ("-1e308 * 10", "non_finite_result"), ("1e309 - 1e309", "non_finite_result"),
    ("1e309", "non_finite_result"), ("exp(709) * 10", "non_finite_result"),
    ("floor(1e309)", "non_finite_result"), ("ceil(-1e309)", "non_finite_result"),
    ("round(1e309)", "non_finite_result"), ("floor(1e309 - 1e309)", "non_finite_result"),
    ("round(1e309, 2)", "non_finite_result"), ("max(1e309, 1)", "non_finite_result"),
]

evaluator = Evaluator()


def real_power(base, exponent):
    """Raise to a power as Python does, except that the language has no complex numbers."""
    result = base**exponent
    if isinstance(result, complex):
        raise ValueError("complex result")
    return result


class RealPowers(ast.NodeTransformer):
    """Rewrite a ** b as real_power(a, b): the language's one deliberate difference from Python."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Pow):
            return node
        call = ast.Call(ast.Name("real_power", ast.Load()), [node.left, node.right], [])
        return ast.copy_location(call, node)


def python(text: str):
    """Evaluate with Python itself over the same names, with real-only powers."""
    # eval() itself skips leading blanks, ast.parse does not.
    tree = ast.fix_missing_locations(RealPowers().visit(ast.parse(text.lstrip(" \t"), mode="eval")))
    return eval(compile(tree, "<reference>", "eval"), {**REFERENCE, "real_power": real_power})


def same(ours, theirs) -> bool:
    """Tell whether two results are the same value of the same type, down to the sign of a zero."""
    if type(ours) is not type(theirs) or ours != theirs:
        return False
    return not isinstance(ours, float) or math.copysign(1, ours) == math.copysign(1, theirs)


def json_safe(value) -> bool:
    """Tell whether JSON can carry a value exactly within the default result limit."""
    if type(value) not in (int, float, bool):
        return False
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:  # inf, nan, or an integer over Python's 4,300-digit text limit
        return False
    return True


def test_the_table_is_large_and_covers_every_function_and_operator():
    texts = " ".join(VALUES + [text for text, _ in FAILURES])
    assert len(VALUES) + len(FAILURES) >= 150
    for name in REFERENCE:
        assert name == "__builtins__" or name in texts
    for operator in ["+", "-", "*", "/", "//", "%", "**", "<", "<=", ">", ">=", "==", "!=", "and", "or",
                     "not", " if "]:
        assert operator in texts


@pytest.mark.parametrize("text", VALUES)
def test_expression_gives_the_value_python_gives(text):
    expected = python(text)
    assert json_safe(expected)
    assert same(evaluator.evaluate(text), expected)


@pytest.mark.parametrize("text,code", FAILURES)
def test_expression_python_cannot_answer_fails_with_its_code(text, code):
    try:
        answer = python(text)
    except (ArithmeticError, ValueError, TypeError):
        pass
    else:
        assert not json_safe(answer)
    with pytest.raises(EvaluationError) as failure:
        evaluator.evaluate(text)
    assert failure.value.code == code


def test_rounding_to_negative_digits_matches_python_around_the_shortcut_to_zero():
    # round(x, -k) skips building 10**k once x must round to 0; check the edge against Python itself.
    numbers = [0, 1, 4, 5, 6, 15, 25, 49, 50, 51, 99, 149, 150, 151, 250, 10**20 // 2, 10**40 + 1, 2**200]
    for number in numbers + [-n for n in numbers]:
        for places in range(len(str(number)) + 4):
            assert same(evaluator.evaluate(f"round({number}, -{places})"), round(number, -places)), (
                number, places)
