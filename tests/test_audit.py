"""scripts/audit.py reads pip-audit's report: vulnerabilities fail, a service that answered nothing is said."""
from __future__ import annotations

import importlib.util
import json
import subprocess

import pytest

from support import ROOT

spec = importlib.util.spec_from_file_location("audit", ROOT / "scripts" / "audit.py")
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)

NOT_FOUND = {"name": "dalc-private", "skip_reason": "Dependency not found and could not be audited"}
CLEAN = {"name": "flask", "version": "3.1.0", "vulns": []}
VULNERABLE = {"name": "werkzeug", "version": "3.0.0",
              "vulns": [{"id": "GHSA-test-0001", "fix_versions": ["3.0.6"], "description": "…"}]}


@pytest.fixture
def report(monkeypatch):
    """Make pip-audit answer with the given dependencies."""
    def give(*dependencies):
        stdout = json.dumps({"dependencies": list(dependencies), "fixes": []})
        monkeypatch.setattr(audit.subprocess, "run",
                            lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=stdout, stderr=""))
    return give


def test_a_clean_audit_passes(report, capsys):
    report(CLEAN, NOT_FOUND)
    assert audit.main([]) == 0
    assert "1 packages audited, 0 vulnerable" in capsys.readouterr().out


def test_a_vulnerability_fails_and_names_the_fix(report, capsys):
    report(CLEAN, VULNERABLE)
    assert audit.main(["--if-reachable"]) == 1
    assert "werkzeug 3.0.0: GHSA-test-0001 (fixed in: 3.0.6)" in capsys.readouterr().out


def test_nothing_audited_fails_make_audit_but_not_make_test(report, capsys):
    report(NOT_FOUND, dict(NOT_FOUND, name="flask"))
    assert audit.main([]) == 2
    assert audit.main(["--if-reachable"]) == 0
    assert "nothing was audited" in capsys.readouterr().out


def test_the_real_pip_audit_is_installed():
    assert audit.PIP_AUDIT.exists()
