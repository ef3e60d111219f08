"""dalc's in-place OTLP encoding against the library's own: the same request, byte for byte."""
from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as library_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from app.telemetry import otlp_encoding


def _spans():
    """Spans of every shape dalc makes and then some, from two resources and several scopes."""
    exported = InMemorySpanExporter()
    web = TracerProvider(resource=Resource({"service.name": "dalc-web", "k8s.pod.ip": "10.0.0.7"},
                                           schema_url="https://opentelemetry.io/schemas/1.26.0"))
    worker = TracerProvider(resource=Resource({"service.name": "dalc-worker", "process.pid": 42}))
    for provider in (web, worker):
        provider.add_span_processor(SimpleSpanProcessor(exported))
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1"), ("dalc", "x")]))
    other = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))
    server = web.get_tracer("opentelemetry.instrumentation.flask", "0.66b1")
    dalc = web.get_tracer("dalc", schema_url="https://opentelemetry.io/schemas/1.30.0",
                          attributes={"scope.attr": True})
    with server.start_as_current_span("POST /tasks", context=set_span_in_context(NonRecordingSpan(remote)),
                                      kind=SpanKind.SERVER, attributes={
                                          "http.request.method": "POST", "server.port": 8080,
                                          "http.response.status_code": 202, "url.path": "/tasks"}):
        statement = {"db.query.text": "INSERT INTO task …", "db.system.name": "postgresql"}
        with dalc.start_as_current_span("INSERT", kind=SpanKind.CLIENT, attributes=statement):
            pass
        with dalc.start_as_current_span("send dalc", kind=SpanKind.PRODUCER, links=[
                Link(other, {"dalc.task.ids": [3, 4]}), Link(remote)]) as producer:
            producer.set_attribute("dalc.task.ids", [1, 2, 3])
            producer.set_attribute("ratio", 0.5)
            producer.set_attribute("flags", [True, False])
            producer.set_attribute("names", ["a", "b"])
            producer.set_attribute("weights", [1.5, 2.0])
    evaluate = worker.get_tracer("dalc")
    with evaluate.start_as_current_span("evaluate", kind=SpanKind.INTERNAL) as span:
        span.add_event("task failed", {"dalc.task.id": 7, "dalc.task.error_code": "division_by_zero"})
        span.add_event("bare")
        span.set_status(Status(StatusCode.ERROR, "1 of 2 tasks FAILED"))
    with pytest.raises(ValueError):
        with evaluate.start_as_current_span("process dalc", kind=SpanKind.CONSUMER):
            raise ValueError("boom")  # recorded as an exception event with a stack trace
    with evaluate.start_as_current_span("ok", kind=SpanKind.INTERNAL) as span:
        span.set_status(Status(StatusCode.OK))
    return exported.get_finished_spans()


def test_the_request_is_byte_for_byte_the_library_s():
    spans = _spans()
    assert len(spans) == 6
    ours = otlp_encoding.encode_spans(spans)
    theirs = library_encode(spans)
    assert ours == theirs
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    assert len(ours.resource_spans) == 2 and len(ours.resource_spans[0].scope_spans) == 2


def test_spans_of_equal_resources_share_one_resource_entry_as_in_the_library():
    # Resources are looked up by identity first; distinct but equal ones must still be grouped by equality.
    exported = InMemorySpanExporter()
    for _ in range(2):
        provider = TracerProvider(resource=Resource({"service.name": "dalc-web", "process.pid": 7}))
        provider.add_span_processor(SimpleSpanProcessor(exported))
        with provider.get_tracer("dalc").start_as_current_span("one"):
            pass
    spans = exported.get_finished_spans()
    assert spans[0].resource is not spans[1].resource and spans[0].resource == spans[1].resource
    ours = otlp_encoding.encode_spans(spans)
    assert ours == library_encode(spans)
    assert len(ours.resource_spans) == 1 and len(ours.resource_spans[0].scope_spans[0].spans) == 2


def test_an_empty_batch_is_an_empty_request():
    assert otlp_encoding.encode_spans([]).SerializeToString() == library_encode([]).SerializeToString() == b""


def test_both_exporters_send_what_the_in_place_encoder_builds(monkeypatch):
    from app.telemetry import tracing

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    tracing._exporter().shutdown()
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    assert trace_exporter.encode_spans is otlp_encoding.encode_spans
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    grpc_exporter = tracing._exporter()
    try:
        spans = _spans()
        assert grpc_exporter._translate_data(spans) == library_encode(spans)
    finally:
        grpc_exporter.shutdown()
