"""PRODUCER spans around the publish of a message, one for each trace whose tasks the message carries.

Under load one message carries the ids of several requests. Each request's trace gets its own PRODUCER
span, so every task's trace shows its publish; TracingMiddleware.before_enqueue writes their contexts
into the message.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from app.telemetry import tracing

Producers = tuple[tuple[Span, list[int]], ...]

_producers: contextvars.ContextVar[Producers] = contextvars.ContextVar("dalc_producers", default=())


def current_producers() -> Producers:
    """Return the (PRODUCER span, task ids) pairs of the message being published in this thread."""
    return _producers.get()


@contextlib.contextmanager
def producing(queue_name: str, ids: Sequence[int], contexts: Sequence | None) -> Iterator[None]:
    """Open a PRODUCER span per trace around one message's publish; `contexts` runs parallel to `ids`.

    A context is the request's (an OpenTelemetry Context), a tracing.StoredTrace for a re-publish, or None
    for ids that belong to no trace. The spans end when the block does, recording an exception that
    escapes it (the broker refused the message).
    """
    tracer = tracing.tracer()
    if tracer is None or not contexts:
        yield
        return
    producers = tuple(
        (_start(tracer, queue_name, context, group), group) for context, group in _by_context(ids, contexts)
    )
    token = _producers.set(producers)
    try:
        yield
    except BaseException as exc:
        for span, _ in producers:
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        raise
    finally:
        _producers.reset(token)
        for span, _ in producers:
            span.end()


def stored_contexts(ids: Sequence[int], read_trace_ids: Callable[[Sequence[int]], Mapping]) -> list | None:
    """Return, parallel to `ids`, the traces their tasks were created in (for a re-publish); None if untraced.

    `read_trace_ids` (the store's) is asked only when tracing is on.
    """
    if not tracing.enabled():
        return None
    stored = read_trace_ids(ids)
    traces: dict[str, tracing.StoredTrace | None] = {}
    contexts = []
    for task_id in ids:
        trace_id = stored.get(task_id)
        if trace_id not in traces:
            traces[trace_id] = tracing.stored_trace(trace_id)
        contexts.append(traces[trace_id])
    return contexts


def _by_context(ids: Sequence[int], contexts: Sequence) -> list[tuple[object, list[int]]]:
    groups: dict[int, tuple[object, list[int]]] = {}
    for task_id, context in zip(ids, contexts, strict=True):
        if context is not None:
            groups.setdefault(id(context), (context, []))[1].append(task_id)
    return list(groups.values())


def _start(tracer, queue_name: str, context, group: list[int]) -> Span:
    attributes = {
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue_name,
        "dalc.task.ids": group,
    }
    name = f"send {queue_name}"
    if isinstance(context, tracing.StoredTrace):
        # Only the trace id was stored, not the request's span: join the trace as a second root.
        attributes["dalc.republished"] = True
        with tracing.root_in(context.trace_id):
            return tracer.start_span(name, context=otel_context.Context(), kind=SpanKind.PRODUCER,
                                     attributes=attributes)
    return tracer.start_span(name, context=context, kind=SpanKind.PRODUCER, attributes=attributes)
