"""Take the README's screenshots: the page and the dashboard of an embedded dalc under a little load.

Starts `dalc run` (the embedded shape, on a SQLite file of its own) on a free port, submits tasks for
about a minute at a varying rate (some of them failing), then opens the page and the dashboard in Debian's
Chromium and saves docs/page.png and docs/dashboard.png. Run it with `make screenshots`.
"""
from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import BIN, CHROMIUM, CHROMIUM_ARGS, Process, dalc_env, free_port, wait_for_http  # noqa: E402

LOAD_SECONDS = 75
FAILING = ["1 / 0", "sqrt(-1)", "2 +", "x * 2"]


def load(base: str) -> None:
    """Submit single tasks and small batches, the rate rising and falling, about one in twelve failing."""
    session = requests.Session()
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < LOAD_SECONDS:
        rate = 15 + 45 * abs(((elapsed / 25) % 2) - 1)  # 15 to 60 tasks/s and back, every 25 s
        if random.random() < 0.1:
            body = [{"expression": f"{random.randint(1, 99)} ** 2"} for _ in range(20)]
        elif random.random() < 0.08:
            body = {"expression": random.choice(FAILING)}
        else:
            body = {"expression": f"{random.randint(1, 999)} * {random.randint(1, 999)}"}
        session.post(f"{base}/tasks", json=body, timeout=10).raise_for_status()
        time.sleep(1 / rate)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dalc-screenshots-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dalc_env(DALC_PORT=str(port), DALC_DATABASE_URL=f"sqlite:///{workdir / 'dalc.db'}", DALC_LOG_LEVEL="WARNING")
    dalc = Process([str(BIN / "dalc"), "run"], env, workdir / "dalc.log")
    done = False
    try:
        wait_for_http(f"{base}/healthz", dalc)
        load(base)
        time.sleep(6)  # let the last bucket of the dashboard complete
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(base)
            page.get_by_label("Expression").fill("6 * 7")
            page.keyboard.press("Enter")
            page.locator(".result .value").first.wait_for()
            page.get_by_label("Expression").fill("2 ** 100\n1 / 0\n<img src=x onerror=alert(1)>")
            page.keyboard.press("Enter")
            page.locator('.result[data-status="FAILED"]').nth(1).wait_for()
            page.locator("#tasks tbody tr").nth(9).wait_for()
            page.screenshot(path=ROOT / "docs" / "page.png")
            page.set_viewport_size({"width": 1100, "height": 900})
            page.goto(f"{base}/dashboard")
            page.locator('#throughput-chart [data-series="finished"]').first.wait_for(state="attached")
            page.screenshot(path=ROOT / "docs" / "dashboard.png", full_page=True)
            browser.close()
        print("saved docs/page.png and docs/dashboard.png")
        done = True
    finally:
        dalc.stop()
        if done:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"dalc's log and database are kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
