"""Measure evaluations per second of dalc's evaluator against bare simpleeval on the same inputs."""
from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

from simpleeval import SimpleEval

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.evaluator import Evaluator, Limits  # noqa: E402 - the path above makes the app importable

# A typical mix: short arithmetic, function calls and big-ish integers, with fresh numbers each time.
TEMPLATES = [
    "{a} + {b} * {c}",
    "({a} + {b}) * {c} - {d} / {e}",
    "{a} % {c} + {b} // {d}",
    "{a}.5 * 1e3 - 0.25",
    "-{a} ** 2 + {b}",
    "{a} < {b} and {b} >= {c}",
    "{a} if {a} > {b} else {b}",
    "sqrt({a}) + max({a}, {b}, {c})",
    "sin(pi / {c}) * 2 + cos({a})",
    "log({a}, 2) + log10({b})",
    "hypot({a}, {b}) - atan2({c}, {d})",
    "round({a} / 7, 3)",
    "2 ** {big} * 3 - {a}",
    "factorial({fact}) // {b}",
    "gcd({a} ** 20, {b} ** 15)",
]
MATH = "sqrt exp log log2 log10 sin cos tan asin acos atan atan2 hypot floor ceil factorial gcd"
FUNCTIONS = {"abs": abs, "round": round, "min": min, "max": max, **{n: getattr(math, n) for n in MATH.split()}}
NAMES = {"pi": math.pi, "e": math.e, "tau": math.tau}
# Rounds alternate between the two evaluators, in turn going first, and the best round of each counts:
# other load on the machine (a shared 2-core box) then disturbs both sides alike and mostly drops out.
ROUNDS = 20
CHUNK = 2_000


def expressions(count: int, rng: random.Random) -> list[str]:
    """Return count expressions cycling through the mix, each with its own numbers."""
    return [
        TEMPLATES[i % len(TEMPLATES)].format(
            a=rng.randint(1, 999), b=rng.randint(1, 999), c=rng.randint(1, 99), d=rng.randint(1, 99),
            e=rng.randint(1, 99), big=rng.randint(100, 300), fact=rng.randint(20, 60),
        )
        for i in range(count)
    ]


def seconds(evaluate, inputs: list[str]) -> float:
    """Return the CPU time one pass over the inputs takes."""
    start = time.process_time()
    for text in inputs:
        evaluate(text)
    return time.process_time() - start


def compare(hardened, bare, chunks: list[list[str]]) -> tuple[float, float]:
    """Return the best evaluations per second of each side, measured in alternating rounds."""
    best_hardened = best_bare = math.inf
    for round_ in range(ROUNDS):
        chunk = chunks[round_ % len(chunks)]
        if round_ % 2:
            best_bare = min(best_bare, seconds(bare, chunk))
        best_hardened = min(best_hardened, seconds(hardened, chunk))
        if not round_ % 2:
            best_bare = min(best_bare, seconds(bare, chunk))
    size = len(chunks[0])
    return size / best_hardened, size / best_bare


def main() -> None:
    """Print evaluations per second and the time ratio for distinct and for repeated inputs."""
    rng = random.Random(2026)
    # Every round of the "distinct" case sees expressions never seen before, so the parse cache misses.
    distinct = [expressions(CHUNK, rng) for _ in range(ROUNDS)]
    repeated = [expressions(200, rng) * (CHUNK // 200)]
    hardened = Evaluator()
    bare = SimpleEval(functions=FUNCTIONS, names=NAMES)
    for text in distinct[0][: len(TEMPLATES)]:
        assert hardened.evaluate(text) == bare.eval(text), text
    print(f"{'inputs':<36}{'hardened eval/s':>16}{'bare eval/s':>13}{'time ratio':>12}")
    for label, evaluator, chunks in [
        ("distinct (every parse new)", hardened, distinct),
        ("200 repeated, parse cache warm", hardened, repeated),
        ("200 repeated, parse cache off", Evaluator(Limits(parse_cache_size=0)), repeated),
    ]:
        ours, theirs = compare(evaluator.evaluate, bare.eval, chunks)
        print(f"{label:<36}{ours:>16,.0f}{theirs:>13,.0f}{theirs / ours:>12.2f}")
    print("time ratio: hardened time / bare simpleeval time on the same inputs (the goal is at most 1.5)")


if __name__ == "__main__":
    main()
