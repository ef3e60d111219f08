"""Audit the installed dependencies with pip-audit: `make audit`, and the end of `make test`.

pip-audit asks a vulnerability service about each installed package. Where that service does not
answer (no network, or a package mirror without it), pip-audit reports every package as "not found"
and nothing as vulnerable, which would read as a pass. This says so instead: `make audit` fails, and
`--if-reachable` (used by `make test`) prints why it audited nothing and passes.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIP_AUDIT = Path(sys.executable).with_name("pip-audit")


def main(argv: list[str]) -> int:
    if_reachable = "--if-reachable" in argv
    done = subprocess.run(
        [str(PIP_AUDIT), "--skip-editable", "--progress-spinner", "off", "--format", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        print(f"audit: pip-audit gave no report (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")
        return 0 if if_reachable else 2
    audited = [d for d in report["dependencies"] if "skip_reason" not in d]
    skipped = len(report["dependencies"]) - len(audited)
    if not audited:
        print(f"audit: the vulnerability service answered for none of the {skipped} installed packages; "
              "nothing was audited")
        return 0 if if_reachable else 2
    vulnerable = [d for d in audited if d["vulns"]]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            print(f"audit: {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in: {fixed})")
    print(f"audit: {len(audited)} packages audited, {len(vulnerable)} vulnerable, {skipped} not known to "
          "the service (dalc itself and anything not published)")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
