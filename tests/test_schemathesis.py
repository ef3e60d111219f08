"""Schemathesis against the live API, from its own description: every operation, every response checked."""
from __future__ import annotations

import subprocess

import pytest

from app.config import Config
from support import BIN, ROOT

CONFIG = ROOT / "tests" / "schemathesis.toml"

# Enough cases per operation to find a mismatch, few enough to fit the suite's time (about a minute).
MAX_EXAMPLES = 60


@pytest.fixture
def pg_config(pg_url, amqp_url, queue_name) -> Config:
    # ?wait= is bounded by the description too: one second keeps generated waits short.
    return Config(database_url=pg_url, broker_url=amqp_url, queue_name=queue_name, sweep_interval_seconds=3600,
                  max_wait_seconds=1)


def test_the_live_api_answers_as_its_description_says(live_url, worker, tmp_path):
    command = [
        str(BIN / "st"), "--config-file", str(CONFIG), "run", f"{live_url}/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--workers", "1",
        "--seed", "10",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-15000:]
    print(output)  # the run report, shown with -rP
    assert "passed" in output
