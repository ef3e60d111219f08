"""The Dramatiq actor that evaluates tasks; messages carry task ids only."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

import dramatiq
from dramatiq.middleware import CurrentMessage

from app import store
from app.config import Config
from app.evaluator import EvaluationError, Evaluator
from app.queue.dispatch import EXPRESSIONS_OPTION
from app.store.database import UNAVAILABLE_ERRORS, discard_connections, refresh_connection
from app.store.models import COMPLETED, FAILED, RETRIES_EXHAUSTED
from app.telemetry.tasks import Evaluations

log = logging.getLogger(__name__)

ACTOR_NAME = "evaluate_tasks"

# A message's tasks are evaluated within this budget; the ones left then go back to the queue in a new
# message. A message carries up to DALC_MESSAGE_CHUNK_SIZE tasks of up to DALC_EVAL_MAX_SECONDS each, and
# the TimeLimit middleware stops a message at 60 s: this way a message of slow expressions makes progress
# instead of being stopped and retried whole.
MESSAGE_BUDGET_SECONDS = 10.0


def process_tasks(
    task_ids: Sequence[int],
    evaluator: Evaluator,
    max_attempts: int,
    *,
    claim: bool = True,
    expressions: Sequence[str] | None = None,
    requeue: Callable[[list[int]], object] | None = None,
    budget_seconds: float = MESSAGE_BUDGET_SECONDS,
) -> int:
    """Evaluate and record the open tasks among `task_ids`; return how many outcomes landed.

    With `claim`, the tasks are first marked RUNNING and their attempt counted: for a message that was
    delivered before, whose try may have died. Without it (a first delivery) they are only read, and the
    outcome counts the attempt: one write per task instead of two. A first delivery that carries the
    tasks' `expressions` (parallel to `task_ids`) is not even read: it is the tasks' first attempt, and
    an outcome lands only if the stored expression is the one evaluated and the task is still open.
    Tasks still waiting when `budget_seconds` have passed (at least one is evaluated) are handed to
    `requeue` after the outcomes so far are recorded.
    Database errors propagate, so the broker retries the message with backoff; a bad expression is an
    outcome (FAILED), never an exception.
    """
    deadline = time.monotonic() + budget_seconds
    try:
        # The thread keeps its connection from one message to the next, as a web thread does
        # (app.store.database): taking one from the pool and handing it back cost 0.05 to 0.08 ms
        # of every task's latency here. One opened before the database was last found gone is
        # dropped first; the first query opens a new one.
        refresh_connection()
        started = None if claim else time.monotonic()
        carried = None if claim else expressions
        if carried is not None:
            tasks = [store.Claimed(task_id, expression, 1)
                     for task_id, expression in zip(task_ids, carried, strict=True)]
        else:
            tasks = store.claim(task_ids) if claim else store.read_open(task_ids)
        outcomes: list[store.Outcome] = []
        # Spans, latency, counts and log lines, reported once the outcomes are written (see Evaluations).
        with Evaluations(tasks) as evaluations:
            for task in tasks:
                if outcomes and time.monotonic() > deadline:
                    break
                outcomes.append(evaluations.record(task, _outcome(task, evaluator, max_attempts)))
            checked = None if carried is None else [task.expression for task in tasks[:len(outcomes)]]
            landed = store.finish(outcomes, started=started, expressions=checked)
    except UNAVAILABLE_ERRORS:
        discard_connections()  # the pool's other idle connections most likely died with this one
        raise
    left = [task.id for task in tasks[len(outcomes):]]
    if left:
        if requeue is None:
            raise RuntimeError(f"{len(left)} task(s) left past the budget and nowhere to send them")
        log.info("message budget of %gs spent: %d task(s) done, %d sent again", budget_seconds,
                 len(outcomes), len(left))
        requeue(left)  # if the broker refuses, the message is retried: its recorded tasks are final
    return landed


def _outcome(task: store.Claimed, evaluator: Evaluator, max_attempts: int) -> store.Outcome:
    if task.attempts > max_attempts:
        return store.Outcome(
            task.id, FAILED, error_code=RETRIES_EXHAUSTED,
            error_message=f"The task was tried {max_attempts} times without finishing; submit it again.",
        )
    try:
        value = evaluator.evaluate(task.expression)
    except EvaluationError as exc:
        return store.Outcome(task.id, FAILED, error_code=exc.code, error_message=exc.message)
    except Exception:
        # The evaluator promises EvaluationError only; anything else is a bug in it, and deterministic,
        # so retrying cannot help: record it once, loudly, and keep the worker serving.
        log.exception("evaluator failed unexpectedly on task %s", task.id)
        return store.Outcome(
            task.id, FAILED, error_code="internal_error",
            error_message="The calculator failed unexpectedly on this expression; please report it.",
        )
    return store.Outcome(task.id, COMPLETED, result=json.dumps(value))


def delivered_before(message: dramatiq.Message | None) -> bool:
    """Tell whether a worker may already have tried this message: RabbitMQ redelivers it (a worker died
    or lost its connection holding it), or Dramatiq retries it. Unknown counts as yes, the safe side."""
    if message is None:
        return True
    return bool(getattr(message, "redelivered", False) or message.options.get("retries"))


def carried_expressions(message: dramatiq.Message | None, task_ids: Sequence[int]) -> list[str] | None:
    """Return the expressions the publisher put beside the ids (see app.queue.dispatch), or None.

    They travel as a message option, not an argument, so that workers of an older release, which do not
    know it, still take the message (and read the expressions from the database).
    """
    carried = message.options.get(EXPRESSIONS_OPTION) if message is not None else None
    if not isinstance(carried, list) or len(carried) != len(task_ids) or not all(isinstance(e, str) for e in carried):
        return None
    return carried


def declare_actors(broker: dramatiq.Broker, config: Config, evaluator: Evaluator) -> dramatiq.Actor:
    """Declare the evaluate actor on `broker` with the configured queue and retry policy."""

    def evaluate_tasks(task_ids: list[int]) -> None:
        message = CurrentMessage.get_current_message()
        process_tasks(task_ids, evaluator, config.max_attempts, claim=delivered_before(message),
                      expressions=carried_expressions(message, task_ids), requeue=actor.send)

    actor = dramatiq.actor(
        evaluate_tasks,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=config.queue_name,
        max_retries=config.max_retries,
        min_backoff=config.retry_min_backoff_ms,
        max_backoff=config.retry_max_backoff_ms,
    )
    return actor
