"""Logs: one JSON line per event carrying the trace and span ids, readable lines in a terminal."""
from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.telemetry.logs import JsonFormatter, OncePerInterval, TextFormatter
from support import ROOT, dalc_env


def record(message: str = "task %d %s", args=(7, "COMPLETED"), *, name: str = "app.tasks", level=logging.INFO,
           **extra):
    entry = logging.LogRecord(name, level, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    return entry


def test_a_json_line_carries_the_ids_of_the_active_span():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = json.loads(JsonFormatter().format(record(task_id=7, status="COMPLETED")))
    context = span.get_span_context()
    assert line["message"] == "task 7 COMPLETED"
    assert (line["task_id"], line["status"]) == (7, "COMPLETED")
    assert (line["trace_id"], line["span_id"]) == (format(context.trace_id, "032x"), format(context.span_id, "016x"))


def test_a_json_line_outside_any_span_has_no_trace_fields_and_ids_given_explicitly_win():
    assert "trace_id" not in json.loads(JsonFormatter().format(record()))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("consumer"):
        line = json.loads(JsonFormatter().format(record(trace_id="ab" * 16, span_id="cd" * 8)))
    assert (line["trace_id"], line["span_id"]) == ("ab" * 16, "cd" * 8)


def test_a_text_line_is_readable_with_its_fields_after_the_message():
    line = TextFormatter().format(record(task_id=7, status="COMPLETED", error_code=None))
    assert line.endswith("INFO app.tasks: task 7 COMPLETED  task_id=7 status=COMPLETED")


def test_exporter_complaints_are_let_through_once_per_interval_and_other_logs_untouched():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(OncePerInterval("opentelemetry", interval=3600))
    for name in ["opentelemetry.exporter", "opentelemetry.exporter", "opentelemetry.sdk", "app.tasks", "app.tasks"]:
        handler.handle(record("export failed", (), name=name, level=logging.WARNING))
    assert stream.getvalue().count("export failed") == 4  # one per opentelemetry logger, every app line


@pytest.mark.parametrize("terminal, expected", [(True, "text"), (False, "json")])
def test_the_auto_format_is_text_on_a_terminal_and_json_elsewhere(terminal, expected):
    script = "from app.config import Config; from app.telemetry.logs import log_format; print(log_format(Config()))"
    primary, secondary = pty.openpty() if terminal else os.pipe()
    try:
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dalc_env(), stderr=secondary,
                                stdout=subprocess.PIPE, text=True, timeout=30, check=True)
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.stdout.strip() == expected


def evaluate_message(caplog, level: int) -> list[logging.LogRecord]:
    """Record one message's outcomes (two completed, two failed) with app.tasks at `level`."""
    from app.store.tasks import Claimed, Outcome
    from app.telemetry.tasks import Evaluations

    claimed = [Claimed(task_id, "x", 1) for task_id in (11, 12, 13, 14)]
    outcomes = [Outcome(11, "COMPLETED", result="1"), Outcome(12, "FAILED", error_code="division_by_zero"),
                Outcome(13, "COMPLETED", result="2"), Outcome(14, "FAILED", error_code="syntax_error")]
    caplog.set_level(level, logger="app.tasks")
    with Evaluations(claimed) as evaluations:
        for task, outcome in zip(claimed, outcomes, strict=True):
            evaluations.record(task, outcome)
    return [r for r in caplog.records if r.name == "app.tasks"]


def test_at_info_a_message_logs_one_line_that_names_each_failed_task_by_id(caplog):
    [line] = evaluate_message(caplog, logging.INFO)
    assert line.getMessage() == "2 of 4 tasks FAILED: 12 (division_by_zero), 14 (syntax_error)"
    assert (line.failed_task_ids, line.task_count) == ([12, 14], 4)


def test_at_debug_every_task_also_gets_its_own_line(caplog):
    lines = evaluate_message(caplog, logging.DEBUG)
    assert [r.getMessage() for r in lines] == [
        "task 11 COMPLETED", "task 12 FAILED (division_by_zero)", "task 13 COMPLETED",
        "task 14 FAILED (syntax_error)", "2 of 4 tasks FAILED: 12 (division_by_zero), 14 (syntax_error)"]
