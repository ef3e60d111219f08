"""One evaluator shared by many threads: valid expressions never fail, whatever the interleaving."""
from __future__ import annotations

import sys
import threading

import pytest

from app.evaluator import EvaluationError, Evaluator, Limits, syntax

THREADS = 8
PER_THREAD = 2_500


class Cycle:
    """Cyclic garbage with a finalizer: collecting it runs Python code, letting threads switch mid-parse."""

    def __init__(self):
        self.me = self

    def __del__(self):
        pass


@pytest.fixture
def constant_switching():
    """Make the interpreter switch threads as often as it can for the test's duration."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_valid_expressions_never_fail_from_many_threads_switching_constantly(constant_switching):
    # No parse cache, so every evaluation parses: on CPython 3.11.7 unguarded ast.parse under these
    # conditions fails with "SystemError: AST constructor recursion depth mismatch" (gh-106905).
    evaluator = Evaluator(Limits(parse_cache_size=0))
    failures = []

    def work(thread: int) -> None:
        for i in range(PER_THREAD):
            Cycle()
            try:
                value = evaluator.evaluate(f"({i} + {thread}) * 3 - {i} // 7 + max({thread}, 2) % 5")
            except Exception as exc:  # noqa: BLE001 - the test records every failure of any kind
                failures.append((thread, i, repr(exc)))
                continue
            if value != (i + thread) * 3 - i // 7 + max(thread, 2) % 5:
                failures.append((thread, i, value))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_each_thread_has_its_own_work_budget(constant_switching):
    evaluator = Evaluator()
    results = []

    def work() -> None:
        # Alone, each of these fits the budget; a shared meter would refuse some of them.
        results.extend(evaluator.evaluate("10 ** 250000 // 10 ** 249999") for _ in range(3))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [10] * 12


def test_an_interpreter_fault_while_parsing_is_retried(monkeypatch):
    calls = []

    def flaky_compile(*args):
        calls.append(args)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=21, after=16)")
        return compile(*args)

    monkeypatch.setattr(syntax, "compile", flaky_compile, raising=False)
    assert Evaluator().evaluate("6 * 7") == 42
    assert len(calls) == 2


def test_a_persistent_interpreter_fault_is_an_evaluation_error_not_a_crash(monkeypatch):
    def broken_compile(*args):
        raise SystemError("AST constructor recursion depth mismatch (before=21, after=16)")

    monkeypatch.setattr(syntax, "compile", broken_compile, raising=False)
    with pytest.raises(EvaluationError) as caught:
        Evaluator().evaluate("6 * 7")
    assert caught.value.code == "internal_error"
    assert "SystemError" in caught.value.message
