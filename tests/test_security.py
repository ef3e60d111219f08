"""Every answer is safe to open in a browser: a strict Content-Security-Policy, no sniffing, no inline script."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

PAGES = ["/", "/dashboard", "/docs"]


@pytest.mark.parametrize("path", [*PAGES, "/tasks", "/openapi.json", "/stats", "/static/page.js", "/nowhere"])
def test_every_answer_carries_the_security_headers(client, path):
    response = client.get(path)
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


class _Inline(HTMLParser):
    """Collect whatever would run or style inline: script bodies, on* handlers, style attributes."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"<{tag} {name}=…>")
        if tag == "script":
            if "src" not in dict(attrs):
                self.found.append("<script> without src")
            self._in_script = True

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"inline script: {data.strip()[:40]}")


@pytest.mark.parametrize("path", PAGES)
def test_the_pages_have_no_inline_script_or_style(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    parser = _Inline()
    parser.feed(response.get_data(as_text=True))
    assert parser.found == []


def test_the_page_scripts_never_write_html():
    from app.web import page

    scripts = list(Path(page.bp.static_folder).glob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in text, f"{script.name} uses {sink}"
