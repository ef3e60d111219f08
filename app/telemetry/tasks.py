"""The two events in a task's life that dalc reports: accepted by the web, evaluated by a worker."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from app.models import COMPLETED
from app.telemetry import metrics, tracing

log = logging.getLogger("app.tasks")

# Expressions may be 10,000 characters; a span keeps enough of one to recognise it.
MAX_EXPRESSION_ATTRIBUTE = 1_000


def accepted(tasks: Sequence) -> None:
    """Count tasks the web stored, note them on the request's span, and log one line."""
    metrics.web().tasks_accepted.inc(len(tasks))
    first = tasks[0]
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("dalc.task.id", first.id)
        span.set_attribute("dalc.task.count", len(tasks))
        if len(tasks) == 1:
            span.set_attribute("dalc.task.expression", _clip(first.expression))
    if log.isEnabledFor(logging.INFO):
        log.info("task %d accepted%s", first.id, f" with {len(tasks) - 1} more" if len(tasks) > 1 else "",
                 extra={"task_id": first.id, "task_count": len(tasks)})


class Evaluation:
    """Observe one evaluation: its span (when tracing), its latency, its outcome counted and logged.

    Use it as `with Evaluation(task) as evaluation: outcome = evaluation.record(compute())`.
    """

    __slots__ = ("task", "span", "started")

    def __init__(self, task):
        self.task = task
        self.span = _evaluation_span(task)
        self.started = time.perf_counter()

    def __enter__(self) -> Evaluation:
        return self

    def record(self, outcome):
        """Report the outcome (a store.Outcome) and return it."""
        elapsed = time.perf_counter() - self.started
        m = metrics.worker()
        m.evaluation_duration.observe(elapsed)
        m.tasks_finished.labels(outcome.status, outcome.error_code or "").inc()
        span = self.span
        if span is not None:
            span.set_attribute("dalc.task.status", outcome.status)
            if outcome.status == COMPLETED:
                span.set_status(Status(StatusCode.OK))
            elif outcome.error_code:
                span.set_attribute("dalc.task.error_code", outcome.error_code)
                span.set_attribute("error.type", outcome.error_code)
                span.set_status(Status(StatusCode.ERROR, outcome.error_code))
        if log.isEnabledFor(logging.INFO):
            extra = {"task_id": outcome.id, "status": outcome.status, "error_code": outcome.error_code,
                     "attempt": self.task.attempts, "duration_ms": round(elapsed * 1000, 3)}
            if span is not None:
                context = span.get_span_context()
                extra.update(trace_id=format(context.trace_id, "032x"), span_id=format(context.span_id, "016x"))
            code = f" ({outcome.error_code})" if outcome.error_code else ""
            log.info("task %d %s%s", outcome.id, outcome.status, code, extra=extra)
        return outcome

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.span is None:
            return
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, str(exc)))
        self.span.end()


def _evaluation_span(task):
    tracer = tracing.tracer()
    if tracer is None:
        return None
    parents = otel_context.get_value(tracing.TASK_PARENTS)
    parent = parents.get(task.id) if parents else None
    if parent is None and not trace.get_current_span().get_span_context().is_valid:
        return None  # evaluated outside any message (a direct call): no orphan root spans
    return tracer.start_span("evaluate", context=parent, attributes={
        "dalc.task.id": task.id,
        "dalc.task.expression": _clip(task.expression),
        "dalc.task.attempt": task.attempts,
    })


def _clip(text: str) -> str:
    return text if len(text) <= MAX_EXPRESSION_ATTRIBUTE else text[:MAX_EXPRESSION_ATTRIBUTE] + "…"
