"""The page at `/`, driven in Chromium as a person would: calculate, batch, cancel, page through, stay safe."""
from __future__ import annotations

import json

import requests

from app import create_app
from app.store import tokens
from app.store.database import db
from support import serve

XSS = "<img src=x onerror=alert(1)>"


def _submit(live_url: str, expressions: list[str]) -> list[dict]:
    response = requests.post(f"{live_url}/tasks", json=[{"expression": e} for e in expressions], timeout=10)
    assert response.status_code == 202
    return response.json()


def test_a_calculation_shows_its_result_with_its_id_status_and_link(live_url, worker, page):
    page.goto(live_url)
    box = page.get_by_label("Expression")
    box.focus()
    page.keyboard.type("6 * 7")
    page.keyboard.press("Enter")  # keyboard only: Enter calculates
    card = page.locator(".result").first
    card.locator(".value").wait_for()
    assert card.locator(".value").inner_text() == "42"
    assert card.get_attribute("data-status") == "COMPLETED"
    task_id = card.get_attribute("data-task-id")
    assert card.locator(".task-link").get_attribute("href") == f"/tasks/{task_id}"
    assert "total" in card.locator(".meta").inner_text()
    assert page.locator("#results").get_attribute("aria-live") == "polite"
    # The recent tasks follow: the new task is listed first.
    page.locator(f'#tasks tr[data-task-id="{task_id}"][data-status="COMPLETED"]').wait_for()


def test_a_failing_expression_shows_its_code_and_message(live_url, worker, page):
    page.goto(live_url)
    page.get_by_label("Expression").fill("1 / 0")
    page.get_by_role("button", name="Calculate").click()
    card = page.locator('.result[data-status="FAILED"]')
    card.wait_for()
    assert card.locator(".error-code").inner_text() == "division_by_zero"
    assert card.locator(".error-message").inner_text().strip() != ""


def test_markup_in_an_expression_is_shown_as_text_and_runs_nothing(live_url, worker, page):
    # The page fixture fails the test if any dialog opens or any script error is logged.
    page.goto(live_url)
    page.get_by_label("Expression").fill(XSS)
    page.keyboard.press("Enter")
    card = page.locator('.result[data-status="FAILED"]')
    card.wait_for()
    assert card.locator(".expression").inner_text() == XSS
    row = page.locator("#tasks tbody tr").first
    row.wait_for()
    assert row.locator(".expression").inner_text() == XSS
    assert page.locator("main img").count() == 0


def test_pasted_lines_go_as_one_batch_and_fill_in_as_they_finish(live_url, worker, page):
    posts = []
    page.on("request", lambda r: posts.append(r.post_data) if r.method == "POST" and r.url.endswith("/tasks") else None)
    page.goto(live_url)
    page.get_by_label("Expression").fill("1 + 1\n2 * 3\n\n10 / 4")  # what a paste puts in the box
    page.keyboard.press("Enter")
    values = page.locator(".result .value")
    values.nth(2).wait_for()
    assert len(posts) == 1 and json.loads(posts[0]) == [
        {"expression": "1 + 1"}, {"expression": "2 * 3"}, {"expression": "10 / 4"}
    ]
    assert values.all_inner_texts() == ["2", "6", "2.5"]


def test_an_open_task_can_be_cancelled(live_url, page):
    # No worker runs: the task stays SCHEDULED until the button cancels it.
    [task] = _submit(live_url, ["2 + 2"])
    page.goto(live_url)
    row = page.locator(f'#tasks tr[data-task-id="{task["id"]}"]')
    row.get_by_role("button", name=f"Cancel task {task['id']}").click()
    page.locator(f'#tasks tr[data-task-id="{task["id"]}"][data-status="CANCELLED"]').wait_for()
    assert requests.get(f"{live_url}/tasks/{task['id']}", timeout=10).json()["status"] == "CANCELLED"


def test_more_pages_through_the_tasks_and_the_filter_narrows_them(live_url, page):
    tasks = _submit(live_url, [f"{n} + 1" for n in range(25)])
    page.goto(live_url)
    rows = page.locator("#tasks tbody tr")
    rows.nth(19).wait_for()
    assert rows.count() == 20
    assert rows.first.get_attribute("data-task-id") == str(tasks[-1]["id"])  # newest first
    page.get_by_role("button", name="More").click()
    rows.nth(24).wait_for()
    assert rows.count() == 25
    assert page.get_by_role("button", name="More").is_hidden()
    page.get_by_label("Status").select_option("COMPLETED")
    page.locator("#tasks-empty").wait_for()
    assert rows.count() == 0


def test_the_page_fits_a_360_pixel_screen_in_light_and_dark(live_url, page):
    _submit(live_url, ["2 ** 200", XSS])
    page.set_viewport_size({"width": 360, "height": 740})
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto(live_url)
        page.locator("#tasks tbody tr").nth(1).wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"  # the dark palette


def test_with_auth_required_the_page_asks_for_a_token_and_keeps_it_for_the_tab_only(pg_config, worker, page):
    application = create_app(pg_config.with_overrides(auth="required"))
    try:
        with db.connection_context():
            secret = tokens.create_token("page")[1]
        with serve(application) as url:
            calls = []
            page.on("request", lambda r: calls.append(r.url) if "/tasks" in r.url else None)
            page.goto(url)
            assert page.locator("#token-state").inner_text() == "No token is set yet."
            assert calls == []  # nothing is asked of the API before there is a token
            page.get_by_label("This dalc needs an API token").fill(secret)
            page.get_by_role("button", name="Use token").click()
            page.get_by_label("Expression").fill("6 * 7")
            page.keyboard.press("Enter")
            page.locator(".result .value").wait_for()
            assert page.locator(".result .value").inner_text() == "42"
            assert page.evaluate("sessionStorage.getItem('dalc-token')") == secret
            assert page.evaluate("localStorage.length") == 0
            page.get_by_role("button", name="Forget").click()
            assert page.evaluate("sessionStorage.getItem('dalc-token')") is None
    finally:
        application.extensions["dalc"].close()
