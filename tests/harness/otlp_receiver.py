"""An OTLP trace receiver inside the test process, over HTTP/protobuf or gRPC, decoding with opentelemetry-proto."""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.telemetry import tracing
from support import free_port, wait_until

_KINDS = {value: name.removeprefix("SPAN_KIND_") for name, value in trace_pb2.Span.SpanKind.items()}
_STATUS = {value: name.removeprefix("STATUS_CODE_") for name, value in trace_pb2.Status.StatusCode.items()}


@dataclasses.dataclass(frozen=True)
class Span:
    """One received span, flattened: ids as hex, kind and status as names, attributes as a dict."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict
    status: str
    status_message: str
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each link
    events: tuple[tuple[str, dict], ...]  # (name, attributes) of each event


class Receiver:
    """What the receivers share: a thread-safe list of the spans received so far."""

    def __init__(self):
        self._spans: list[Span] = []
        self._lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                spans += [_span(resource.get("service.name", ""), s) for s in scope_spans.spans]
        with self._lock:
            self._spans += spans

    def spans(self, trace_id: str | None = None) -> list[Span]:
        """Return the spans received, all of them or those of one trace."""
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(self, predicate, timeout: float = 30.0) -> list[Span]:
        """Wait until `predicate(spans)` holds for the spans received, and return them."""
        return wait_until(lambda: predicate(self.spans()) and self.spans(), timeout=timeout, interval=0.1)


class HttpReceiver(Receiver):
    """OTLP/HTTP with protobuf bodies, on 127.0.0.1: POST /v1/traces."""

    def __init__(self):
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                body = gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body) if encoding else body
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcReceiver(Receiver):
    """OTLP/gRPC on 127.0.0.1: the TraceService Export call."""

    def __init__(self):
        import grpc

        super().__init__()
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the generated service's name
                receiver.add(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(grace=None)


@contextlib.contextmanager
def recorded_spans():
    """Record dalc's own spans in memory inside the block, without the global SDK; yield the exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    exporter.provider = provider
    with tracing.using(provider):
        yield exporter


def _span(service: str, span: trace_pb2.Span) -> Span:
    return Span(
        service=service,
        name=span.name,
        kind=_KINDS[span.kind],
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes=_attributes(span.attributes),
        status=_STATUS[span.status.code],
        status_message=span.status.message,
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
        events=tuple((event.name, _attributes(event.attributes)) for event in span.events),
    )


def _attributes(key_values) -> dict:
    return {kv.key: _value(kv.value) for kv in key_values}


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind) if kind else None
