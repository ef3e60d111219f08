"""The Dramatiq middleware's contract, in-process: Dramatiq's in-memory broker, spans recorded in memory."""
from __future__ import annotations

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, SkipMessage
from opentelemetry import context as otel_context
from opentelemetry import trace

from app.queue.dispatch import Dispatcher
from app.store import Claimed, Outcome
from app.telemetry import tracing
from app.telemetry.dramatiq_middleware import TRACE_CONTEXT, TracingMiddleware
from app.telemetry.tasks import Evaluations
from harness.otlp_receiver import recorded_spans


@pytest.fixture
def spans():
    with recorded_spans() as exporter:
        yield exporter


class Probe(dramatiq.Middleware):
    """Note the span current in the worker thread once every other middleware has finished a message."""

    def __init__(self):
        self.after = []

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self.after.append(trace.get_current_span())

    after_skip_message = after_process_message


class SkipWhenAsked(dramatiq.Middleware):
    def before_process_message(self, broker, message):
        if message.options.get("skip"):
            raise SkipMessage()


@pytest.fixture
def stub():
    """A StubBroker with the tracing middleware (between a probe and a skipper) and a one-thread worker."""
    probe = Probe()
    broker = StubBroker(middleware=[Retries(min_backoff=10, max_backoff=20), probe, TracingMiddleware(),
                                    SkipWhenAsked()])
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=10)
    worker.start()
    yield broker, probe
    worker.stop()
    broker.close()


def test_the_consumer_span_ends_and_its_context_is_detached_however_the_message_ends(spans, stub):
    broker, probe = stub

    @dramatiq.actor(broker=broker, max_retries=0, queue_name="t")
    def job(fail):
        if fail:
            raise ValueError("no")

    for fail, options in [(False, {}), (True, {}), (False, {"skip": True})]:
        job.send_with_options(args=(fail,), **options)
    broker.join("t", fail_fast=False)
    consumers = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CONSUMER]
    assert [s.status.status_code.name for s in consumers] == ["UNSET", "ERROR", "UNSET"]
    assert consumers[2].attributes["dalc.message.skipped"] is True
    assert [s.get_span_context().is_valid for s in probe.after] == [False, False, False]


def test_options_given_to_send_with_options_stay_as_they_are_beside_the_trace_context(spans, stub):
    broker, _ = stub

    @dramatiq.actor(broker=broker, queue_name="t")
    def job():
        pass

    with tracing.tracer().start_as_current_span("request") as request:
        message = job.send_with_options(max_retries=3, skip=False)
    assert (message.options["max_retries"], message.options["skip"]) == (3, False)
    parent = format(request.get_span_context().span_id, "016x")
    assert message.options[TRACE_CONTEXT]["traceparent"].split("-")[2] == parent


def test_a_retried_message_is_processed_again_in_the_same_trace(spans, stub):
    broker, _ = stub
    calls = []

    @dramatiq.actor(broker=broker, queue_name="t", max_retries=1)
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")

    with tracing.tracer().start_as_current_span("request") as request:
        flaky.send()
    broker.join("t", fail_fast=False)
    consumers = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.CONSUMER]
    assert [s.attributes.get("dalc.message.retries") for s in consumers] == [None, 1]
    assert {s.parent.span_id for s in consumers} == {request.get_span_context().span_id}


def test_a_message_serving_two_requests_puts_each_evaluation_in_its_own_trace(spans, stub):
    broker, _ = stub

    @dramatiq.actor(broker=broker, queue_name="t", actor_name="evaluate_tasks")
    def evaluate_tasks(task_ids):
        claimed = [Claimed(task_id, "1 + 1", 1) for task_id in task_ids]
        with Evaluations(claimed) as evaluations:
            for task in claimed:
                evaluations.record(task, Outcome(task.id, "COMPLETED", result="2"))

    tracer = tracing.tracer()
    with tracer.start_as_current_span("first") as first:
        first_context = otel_context.get_current()
    with tracer.start_as_current_span("second") as second:
        second_context = otel_context.get_current()
    assert Dispatcher(evaluate_tasks, chunk_size=10).publish([1, 2, 3], [first_context, first_context,
                                                                          second_context]) == []
    broker.join("t", fail_fast=True)
    finished = spans.get_finished_spans()
    trace_of = {tuple(s.attributes.get("dalc.task.ids", [s.attributes.get("dalc.task.id")])): s.context.trace_id
                for s in finished if s.name == "evaluate"}
    assert trace_of == {(1, 2): first.get_span_context().trace_id, (3,): second.get_span_context().trace_id}
    producers = [s for s in finished if s.kind == trace.SpanKind.PRODUCER]
    assert sorted(p.attributes["dalc.task.ids"] for p in producers) == [(1, 2), (3,)]
