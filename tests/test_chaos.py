"""The fault-injection suite in its bounded form: every accepted task survives every fault."""
from __future__ import annotations

from harness.chaos import CI, run_suite
from harness.private_services import postgres_available, rabbitmq_available
from support import require


def test_no_accepted_task_is_lost_or_wrong_under_any_fault(tmp_path):
    if not (rabbitmq_available() and postgres_available()):
        require(False, "RabbitMQ and PostgreSQL binaries are needed to start private instances")
    lines = []
    rows, changed = run_suite(tmp_path, CI, out=lines.append)
    table = "\n".join(lines)
    print(table)
    assert len(rows) == CI.worker_kills + 4, table
    for row in rows:
        assert row.accepted > 0, table
        assert (row.lost, row.wrong, row.failed) == (0, 0, 0), table
        assert row.completed == row.accepted, table
    assert changed == 0, table
