"""Spans to an OTLP export request, built in place: the same bytes as the library's encoder, for a third of its CPU.

opentelemetry-exporter-otlp-proto-common builds each protobuf message bottom-up and hands it to its parent's
constructor, and protobuf copies every message it is handed: a span's attributes are copied into the span,
the span into its scope, the scope into its resource. Measured here on spans like dalc's (13 attributes):
85 µs a span that way, 32 µs built in place with `.add()` on the repeated fields, byte for byte the same
request (tests/test_otlp_encoding.py compares the two on every kind of span dalc makes). With six spans a
task, exporting was the largest part of what tracing costs. The messages are still opentelemetry-proto's;
only the order of building differs.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.trace import ReadableSpan

log = logging.getLogger(__name__)

_HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def encode_spans(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """Return the export request for `spans`, grouped by resource and then by instrumentation scope."""
    request = ExportTraceServiceRequest()
    resources: dict = {}
    # A Resource hashes by dumping its attributes to JSON, each time: look each one up by identity first
    # (a process's spans share one Resource object), and by equality only once per object, as the library groups.
    by_identity: dict[int, tuple] = {}
    for span in spans:
        found = by_identity.get(id(span.resource))
        if found is None:
            found = resources.get(span.resource)
            if found is None:
                resource_spans = request.resource_spans.add()
                _add_attributes(resource_spans.resource.attributes, span.resource.attributes)
                if span.resource.schema_url:
                    resource_spans.schema_url = span.resource.schema_url
                found = resources[span.resource] = (resource_spans, {})
            by_identity[id(span.resource)] = found
        resource_spans, scopes = found
        scope = span.instrumentation_scope or None
        scope_spans = scopes.get(scope)
        if scope_spans is None:
            scope_spans = scopes[scope] = resource_spans.scope_spans.add()
            scope_spans.scope.SetInParent()
            if scope is not None:
                scope_spans.scope.name = scope.name
                if scope.version:
                    scope_spans.scope.version = scope.version
                _add_attributes(scope_spans.scope.attributes, scope.attributes)
                if scope.schema_url:
                    scope_spans.schema_url = scope.schema_url
        _add_span(scope_spans.spans.add(), span)
    return request


def _add_span(out, span: ReadableSpan) -> None:
    context = span.get_span_context()
    out.trace_id = context.trace_id.to_bytes(16, "big")
    out.span_id = context.span_id.to_bytes(8, "big")
    if context.trace_state:
        out.trace_state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
    if span.parent:
        out.parent_span_id = span.parent.span_id.to_bytes(8, "big")
    out.name = span.name
    out.kind = span.kind.value + 1  # the API's kinds start at INTERNAL = 0, OTLP's at UNSPECIFIED = 0
    out.start_time_unix_nano = span.start_time
    out.end_time_unix_nano = span.end_time
    _add_attributes(out.attributes, span.attributes)
    for event in span.events:
        added = out.events.add()
        added.name = event.name
        added.time_unix_nano = event.timestamp
        _add_attributes(added.attributes, event.attributes)
        added.dropped_attributes_count = event.dropped_attributes
    for link in span.links:
        added = out.links.add()
        added.trace_id = link.context.trace_id.to_bytes(16, "big")
        added.span_id = link.context.span_id.to_bytes(8, "big")
        _add_attributes(added.attributes, link.attributes)
        added.dropped_attributes_count = link.dropped_attributes
        added.flags = _flags(link.context)
    if span.status is not None:
        out.status.code = span.status.status_code.value
        if span.status.description:
            out.status.message = span.status.description
    out.dropped_attributes_count = span.dropped_attributes
    out.dropped_events_count = span.dropped_events
    out.dropped_links_count = span.dropped_links
    out.flags = _flags(span.parent)


def _flags(context) -> int:
    if context is not None and context.is_remote:
        return _HAS_IS_REMOTE | _IS_REMOTE
    return _HAS_IS_REMOTE


def _add_attributes(repeated, attributes) -> None:
    if not attributes:
        return
    for key, value in attributes.items():
        pair = repeated.add()
        pair.key = key
        try:
            _set_value(pair.value, value)
        except Exception:  # as the library does: leave that attribute out, keep the span
            del repeated[-1]
            log.exception("Failed to encode key %s", key)


def _set_value(out, value) -> None:
    # The order of the checks is the library's: bool before int, str and bytes before Sequence.
    if value is None:
        out.SetInParent()  # an empty value, present, as the library writes it
        return
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, Sequence):
        values = out.array_value.values
        for item in value:
            _set_value(values.add(), item)
    elif isinstance(value, Mapping):
        values = out.kvlist_value.values
        for key, item in value.items():
            pair = values.add()
            pair.key = str(key)
            _set_value(pair.value, item)
    else:
        raise TypeError(f"Invalid type {type(value)} of value {value}")
