"""The OpenTelemetry SDK of one dalc process, configured by the standard OTEL_* variables.

Tracing is on when OTEL_SDK_DISABLED is not `true` and a destination is named: OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER (`otlp`, `console`; `none` turns it off).
Everything else (sampler, batching, headers, timeouts, resource) is read by the SDK itself.
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import os
import threading
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace

TRACER_NAME = "dalc"
# Have the Flask and psycopg2 instrumentations emit the stable HTTP and database conventions
# (http.request.method, http.route, db.system.name, db.query.text, ...).
SEMCONV_OPT_IN = ("http", "database")
# Probes and scrapes would drown the traces people look for (patterns on the request's full URL).
UNTRACED_URLS = r"//[^/]+/(healthz|readyz|metrics)(\?|$)"
# A process that stops waits at most this long for its last spans to leave, collector or not.
SHUTDOWN_SECONDS = 5.0

# In a CONSUMER span's context: task id -> the context its evaluation span belongs in, for tasks of
# other traces that shared the message (see TracingMiddleware).
TASK_PARENTS = otel_context.create_key("dalc.task_parents")

_provider = None  # the process's own SDK, once setup_tracing started it
_tracer: trace.Tracer | None = None
_tracer_provider = None  # what _tracer comes from: _provider, or a test's (see using)
_shut_down = False
# Set while a span must become a root in a trace that already exists (see StoredTrace).
_forced_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("dalc_forced_trace_id", default=None)


@dataclasses.dataclass(frozen=True)
class StoredTrace:
    """A trace known only by the id stored on a task; spans started for it are roots in that same trace."""

    trace_id: int


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Tell whether the OTEL_* variables ask for traces: a destination is named and the SDK is not disabled."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str:
        return env.get(name, "").strip()

    if get("OTEL_SDK_DISABLED").lower() == "true":
        return False
    exporter = get("OTEL_TRACES_EXPORTER").lower()
    if exporter == "none":
        return False
    return bool(exporter or get("OTEL_EXPORTER_OTLP_ENDPOINT") or get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service_name: str) -> bool:
    """Start the SDK in this process if OTEL_* asks for it, and return whether tracing is on.

    `service_name` applies unless OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) is set.
    Call it after fork (the exporter's threads and connections do not survive one) and before the first
    database connection, since it instruments psycopg2 for every connection made afterwards.
    """
    global _provider
    if _provider is not None:
        return True
    if not tracing_requested():
        return False
    opt_in_to_stable_conventions()
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource(service_name), id_generator=_id_generator(), shutdown_on_exit=False)
    provider.sampler = _no_orphan_statements(provider.sampler)  # the OTEL_TRACES_SAMPLER one, wrapped
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    _use(provider)
    Psycopg2Instrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    atexit.register(shutdown)
    return True


def enabled() -> bool:
    """Tell whether this process records spans."""
    return _tracer is not None


def tracer() -> trace.Tracer | None:
    """Return dalc's tracer, or None when tracing is off."""
    return _tracer


def current_context() -> otel_context.Context | None:
    """Return the active context to hand to another thread, or None (cheaply) when tracing is off."""
    return otel_context.get_current() if _tracer is not None else None


def current_trace_id() -> str | None:
    """Return the active trace's id as 32 hex digits when it is being recorded, else None."""
    if _tracer is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    if not (span_context.is_valid and span_context.trace_flags.sampled):
        return None
    return hex_ids(span_context)["trace_id"]


def hex_ids(span_context) -> dict[str, str]:
    """Write a span's ids as W3C trace context does, and as logs, task resources and Jaeger show them."""
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


def stored_trace(trace_id: str | None) -> StoredTrace | None:
    """Turn a task's stored trace id back into something spans can join, or None."""
    try:
        return StoredTrace(int(trace_id, 16)) if trace_id else None
    except ValueError:
        return None


@contextlib.contextmanager
def root_in(trace_id: int) -> Iterator[None]:
    """Make spans started without a parent inside the block take `trace_id` instead of a new one."""
    token = _forced_trace_id.set(trace_id)
    try:
        yield
    finally:
        _forced_trace_id.reset(token)


def opt_in_to_stable_conventions() -> None:
    """Ask the instrumentations for the stable HTTP and database conventions, once for the process.

    opentelemetry-instrumentation reads OTEL_SEMCONV_STABILITY_OPT_IN the first time any instrumentor
    asks and never again, so this runs before dalc's first instrumentation, whichever it is.
    """
    wanted = [v.strip() for v in os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",") if v.strip()]
    for signal in SEMCONV_OPT_IN:
        if signal not in wanted and f"{signal}/dup" not in wanted:
            wanted.append(signal)
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = ",".join(wanted)


def instrument_app(app) -> None:
    """Give each HTTP request a SERVER span (opentelemetry-instrumentation-flask), if tracing is on.

    It continues a caller's W3C trace context and leaves the probes and the metrics scrape untraced.
    Its HTTP metrics are not wanted (dalc's own are in app.telemetry.metrics), nor its sqlcommenter hook.
    """
    if _tracer is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    opt_in_to_stable_conventions()
    FlaskInstrumentor.instrument_app(
        app, tracer_provider=_tracer_provider, meter_provider=NoOpMeterProvider(), excluded_urls=UNTRACED_URLS,
        enable_commenter=False,
    )


def shutdown(timeout: float = SHUTDOWN_SECONDS) -> None:
    """Send the spans still queued, waiting at most `timeout` seconds even if the collector is away."""
    global _shut_down
    if _provider is None or _shut_down:
        return
    _shut_down = True
    stopper = threading.Thread(target=_provider.shutdown, name="dalc-otel-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout)


@contextlib.contextmanager
def using(provider) -> Iterator[None]:
    """Record dalc's own spans with `provider` inside the block, without touching the global SDK (tests)."""
    global _tracer, _tracer_provider
    previous = _tracer, _tracer_provider
    _use(provider)
    try:
        yield
    finally:
        _tracer, _tracer_provider = previous


def _use(provider) -> None:
    global _tracer, _tracer_provider
    _tracer = trace.get_tracer(TRACER_NAME, tracer_provider=provider)
    _tracer_provider = provider


def _resource(service_name: str):
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: service_name}))
    return detected


def _exporter():
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind!r}: dalc supports otlp, console or none")
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip().lower()
    from app.telemetry import otlp_encoding  # only with tracing on: it loads opentelemetry-proto

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        class GrpcExporter(Grpc):
            def _translate_data(self, data):  # the exporter's own hook for building its request
                return otlp_encoding.encode_spans(data)

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http import trace_exporter

        # The HTTP exporter calls its module's encode_spans, with no hook of its own to override.
        trace_exporter.encode_spans = otlp_encoding.encode_spans
        return trace_exporter.OTLPSpanExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: dalc supports grpc or http/protobuf")


def _no_orphan_statements(sampler):
    """Wrap `sampler` so a database statement outside any request or message is not traced.

    Migrations, the sweeper's periodic queries and helper threads would otherwise each start a trace
    of one lone CLIENT span.
    """
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class NoOrphanStatements(Sampler):
        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                          trace_state=None):
            if kind is SpanKind.CLIENT and not trace.get_current_span(parent_context).get_span_context().is_valid:
                return SamplingResult(Decision.DROP)
            return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self):
            return f"NoOrphanStatements{{{sampler.get_description()}}}"

    return NoOrphanStatements()


def _id_generator():
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _JoiningIdGenerator(RandomIdGenerator):
        """Random ids, except a root span started inside root_in() takes that trace's id."""

        def generate_trace_id(self) -> int:
            return _forced_trace_id.get() or super().generate_trace_id()

    return _JoiningIdGenerator()
