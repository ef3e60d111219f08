"""What dalc tells its operators: OpenTelemetry traces, Prometheus metrics, and the context for its logs.

Tracing is on only when an OTLP endpoint (or a trace exporter) is configured; otherwise every hook here
returns at once, so an untraced dalc pays close to nothing. See docs/observability.md.
"""
