"""The architecture holds: import-linter's contracts (pyproject.toml), and an evaluator that is pure."""
from __future__ import annotations

import subprocess
import sys

from support import BIN, ROOT


def test_the_import_contracts_hold():
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_importing_the_evaluator_loads_neither_flask_nor_peewee_nor_dramatiq():
    script = (
        "import sys, app.evaluator; "
        "print(sorted(m for m in ('flask', 'werkzeug', 'peewee', 'dramatiq', 'pika', 'psycopg2', 'opentelemetry') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
