"""Long fuzz runs of the evaluator's properties, for `make fuzz` only (DALC_FUZZ_EXAMPLES sets the size)."""
from __future__ import annotations

import gc
import os
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.evaluator import EvaluationError

try:  # tests/ is a plain directory today; keep working if it becomes a package
    from tests.test_evaluator_properties import agrees_with_python, evaluator, expressions, never_escapes, texts
except ImportError:
    from test_evaluator_properties import agrees_with_python, evaluator, expressions, never_escapes, texts

EXAMPLES = int(os.environ.get("DALC_FUZZ_EXAMPLES", "20000"))
pytestmark = [
    pytest.mark.fuzz,
    # The suite's 300 s per-test timeout would cut a big run short; a stuck evaluation still fails.
    pytest.mark.timeout(max(300, EXAMPLES // 20)),
    # pytest resets warning filters per test, dropping the evaluator's own filter for Python's warnings
    # about odd source text.
    pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning"),
]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

figures: dict[str, Counter] = {}
slowest: dict[str, tuple[float, float, str]] = {}


class CollectorClock:
    """Add up the CPU time the garbage collector takes, a gc.callbacks hook."""

    def __init__(self):
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.thread_time()
        else:
            self.total += time.thread_time() - self._start


collector = CollectorClock()


def timed(name: str, check, text: str) -> None:
    """Run one check, recording its outcome code and the input that took the most CPU time."""
    # A long run grows Hypothesis's heap, and a full collection landing inside one evaluation would
    # charge it seconds that are not the evaluator's: the collector's time is counted apart.
    collected, wall, cpu = collector.total, time.perf_counter(), time.thread_time()
    try:
        evaluator.evaluate(text)
        outcome = "value"
    except EvaluationError as error:
        outcome = error.code
    collected = collector.total - collected
    cpu, wall = time.thread_time() - cpu - collected, time.perf_counter() - wall
    figures.setdefault(name, Counter())[outcome] += 1
    if cpu > slowest.get(name, (0.0, 0.0, ""))[0]:
        slowest[name] = (cpu, wall, text[:80])
    check(text)


# Big numbers only: powers, products, factorials and divisions of integers up to ten million, the
# material of every arithmetic bomb.
big_leaves = st.integers(-(10**7), 10**7).map(lambda n: f"({n})")
bombs = st.recursive(
    big_leaves,
    lambda children: st.one_of(
        st.tuples(children, st.sampled_from(["**", "*", "//", "%", "+", "-"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        children.map(lambda c: f"factorial({c})"),
        st.tuples(children, children).map(lambda t: f"gcd({t[0]}, {t[1]})"),
        st.tuples(children, children).map(lambda t: f"round({t[0]}, {t[1]})"),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """Print the run's figures after the fuzz tests."""
    start = time.perf_counter()
    gc.callbacks.append(collector)
    yield
    gc.callbacks.remove(collector)
    plugins = request.config.pluginmanager
    write = plugins.get_plugin("terminalreporter").write_line
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        write(f"\nfuzz: {EXAMPLES:,} examples per property, {time.perf_counter() - start:.1f} s in all")
        for name, counts in figures.items():
            cpu, wall, text = slowest[name]
            write(f"  {name}: {sum(counts.values()):,} evaluations; outcomes {dict(counts.most_common())}")
            write(
                f"  {name}: slowest {cpu * 1000:.1f} ms CPU without garbage collection"
                f" ({wall * 1000:.1f} ms wall) for {text!r}"
            )
        write(f"  garbage collection took {collector.total:.1f} s of CPU in all")


@FUZZ
@given(expressions)
def test_fuzz_random_expression_trees_give_pythons_value(text):
    timed("trees", agrees_with_python, text)


@FUZZ
@given(texts)
def test_fuzz_any_text_gives_a_value_or_an_evaluation_error(text):
    timed("texts", never_escapes, text)


@FUZZ
@given(bombs)
def test_fuzz_big_number_expressions_are_answered_or_refused(text):
    timed("bombs", never_escapes, text)
