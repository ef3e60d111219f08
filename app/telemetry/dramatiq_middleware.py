"""Trace context through Dramatiq messages: injected when a message is enqueued, a CONSUMER span when processed."""
from __future__ import annotations

import threading

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from app.telemetry import publishing, tracing

# Message options. TRACE_CONTEXT is the W3C carrier ({"traceparent": …}) of the message's PRODUCER span;
# TRACE_LINKS lists [carrier, task ids] for the other traces whose tasks the same message carries.
TRACE_CONTEXT = "trace_context"
TRACE_LINKS = "trace_links"


class TracingMiddleware(dramatiq.Middleware):
    """Carry the W3C trace context inside each message and give its processing a CONSUMER span.

    before_enqueue writes the context of the PRODUCER span(s) open around the publish (or of the current
    span) into the message's options; a message re-enqueued outside any span (a retry, a delayed message
    moving queues) keeps the context it had, so its next delivery lands in the same trace.
    before_process_message opens the CONSUMER span as a child of that context and attaches it; the span
    ends, and the context is detached, after the message however it ends: result, exception or skip.
    """

    def __init__(self):
        self._local = threading.local()

    def before_enqueue(self, broker, message, delay):
        producers = publishing.current_producers()
        if producers:
            system = _system(broker)
            for span, _ in producers:
                span.set_attribute("messaging.system", system)
                span.set_attribute("messaging.message.id", message.message_id)
            (first, _), *others = producers
            message.options[TRACE_CONTEXT] = _carrier(first)
            if others:
                message.options[TRACE_LINKS] = [[_carrier(span), ids] for span, ids in others]
            return
        span = trace.get_current_span()
        if span.get_span_context().is_valid:
            message.options[TRACE_CONTEXT] = _carrier(span)

    def before_process_message(self, broker, message):
        tracer = tracing.tracer()
        if tracer is None:
            return
        self._finish(None, skipped=False)  # defensive: never let an earlier message's context linger
        name = f"process {message.queue_name}"
        attributes = _consumer_attributes(broker, message)
        parent = propagate.extract(message.options.get(TRACE_CONTEXT) or {})
        span = tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes)
        spans = [span]
        task_parents = {}
        for carrier, ids in message.options.get(TRACE_LINKS) or ():
            # The database work of the message happens once, in `span`; each other trace gets a CONSUMER
            # span of its own, linked to it, holding the evaluations of its tasks.
            other = tracer.start_span(
                name, context=propagate.extract(carrier), kind=SpanKind.CONSUMER,
                attributes={**attributes, "dalc.task.ids": ids}, links=[Link(span.get_span_context())],
            )
            spans.append(other)
            other_context = trace.set_span_in_context(other)
            task_parents.update(dict.fromkeys(ids, other_context))
        context = trace.set_span_in_context(span)
        if task_parents:
            context = otel_context.set_value(tracing.TASK_PARENTS, task_parents, context)
        self._local.active = (spans, otel_context.attach(context))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self._finish(exception, skipped=False)

    def after_skip_message(self, broker, message):
        self._finish(None, skipped=True)

    def after_worker_shutdown(self, broker, worker):
        tracing.shutdown()

    def _finish(self, exception: BaseException | None, *, skipped: bool) -> None:
        active = getattr(self._local, "active", None)
        if active is None:
            return
        self._local.active = None
        spans, token = active
        try:
            for span in spans:
                _end(span, exception, skipped)
        finally:
            otel_context.detach(token)


def _end(span: Span, exception: BaseException | None, skipped: bool) -> None:
    if skipped:
        span.set_attribute("dalc.message.skipped", True)
    if exception is not None:
        span.record_exception(exception)
        span.set_attribute("error.type", type(exception).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(exception) or type(exception).__qualname__))
    span.end()


def _carrier(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _system(broker) -> str:
    return "rabbitmq" if isinstance(broker, RabbitmqBroker) else "dramatiq"


def _consumer_attributes(broker, message) -> dict:
    attributes = {
        "messaging.system": _system(broker),
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": message.queue_name,
        "messaging.message.id": message.message_id,
    }
    retries = message.options.get("retries")
    if retries:
        attributes["dalc.message.retries"] = retries
    ids = message.args[0] if message.args else None
    if isinstance(ids, list) and all(type(i) is int for i in ids):
        attributes["dalc.task.ids"] = ids
    return attributes
