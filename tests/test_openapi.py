"""/openapi.json and /docs: the description is valid OpenAPI 3.1, and it agrees with the code."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from app.config import Config
from app.store.models import OPEN_STATUSES, STATUSES
from app.web import problems, tasks
from app.web.openapi import description

WEB = Path(tasks.__file__).parent
# Routes that serve files rather than operations of the API.
FILE_ROUTES = {"page.static", "openapi.asset"}
# Raised for a bug on our side, never for anything a client sends: not part of the contract.
UNDOCUMENTED_CODES = {"internal_error"}
# Codes Werkzeug's own errors produce (named after their HTTP reason phrase), documented where they occur.
WERKZEUG_CODES = {"request_entity_too_large"}


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def _operations(spec) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def test_the_description_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_the_server_is_the_address_the_description_was_fetched_from(client):
    spec = client.get("/openapi.json", base_url="http://dalc.example:8080").get_json()
    assert spec["servers"] == [{"url": "http://dalc.example:8080", "description": "this dalc"}]


def test_every_route_is_described_and_every_description_is_routed(app, spec):
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in FILE_ROUTES:
            continue
        path = re.sub(r"<(?:[^:>]+:)?raw_id>", "{id}", rule.rule)
        routed |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed == _operations(spec)


def _raised_codes() -> set[tuple[int, str]]:
    """Every (status, code) the web package raises as ProblemError(status, code, ...)."""
    found = set()
    for source in WEB.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ProblemError":
                status, code = node.args[:2]
                if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                    found.add((status.value, code.value))
    return found


def _documented_codes(spec) -> set[tuple[int, str]]:
    """Every (status, code) the description gives an example of."""
    found = set()
    responses = [r for item in spec["paths"].values() for op in item.values() for r in op["responses"].values()]
    responses += spec["components"]["responses"].values()
    for response in responses:
        content = response.get("content", {}).get("application/problem+json", {})
        for example in content.get("examples", {}).values():
            found.add((example["value"]["status"], example["value"]["code"]))
    return found


def test_every_problem_the_code_raises_is_documented_with_its_status(spec):
    raised = {pair for pair in _raised_codes() if pair[1] not in UNDOCUMENTED_CODES}
    documented = _documented_codes(spec)
    assert raised - documented == set(), "raised but not documented"
    assert {code for _, code in documented} - {code for _, code in raised} <= WERKZEUG_CODES


def test_the_retry_after_status_is_the_one_the_code_sends(spec):
    header = spec["components"]["responses"]["ServiceUnavailable"]["headers"]["Retry-After"]
    assert header["$ref"] == "#/components/headers/Retry-After"
    example = spec["components"]["headers"]["Retry-After"]["example"]
    assert example == str(problems.RETRY_AFTER_SECONDS)


def test_the_statuses_are_the_stores(spec):
    assert spec["components"]["schemas"]["Status"]["enum"] == list(STATUSES)
    assert set(spec["components"]["schemas"]["Stats"]["properties"]["open_tasks"]["required"]) == set(OPEN_STATUSES)


def test_the_limits_are_the_configured_ones():
    config = Config(max_expression_length=77, max_batch_size=5, max_wait_seconds=3, max_page_size=60,
                    default_page_size=7)
    spec = description(config)
    schemas, parameters = spec["components"]["schemas"], spec["components"]["parameters"]
    assert schemas["NewTask"]["properties"]["expression"]["maxLength"] == 77
    assert schemas["NewTaskList"]["maxItems"] == 5
    assert parameters["wait"]["schema"]["maximum"] == 3
    assert (parameters["limit"]["schema"]["maximum"], parameters["limit"]["schema"]["default"]) == (60, 7)


_PATTERN = re.compile(description(Config())["components"]["schemas"]["NewTask"]["properties"]["expression"]["pattern"])


def _accepted_by_code(expression: str) -> bool:
    try:
        tasks._expressions([{"expression": expression}], batch=False, max_length=10_000)
    except tasks.ProblemError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=6))
def test_the_expression_pattern_accepts_exactly_what_the_code_accepts(expression):
    assert bool(_PATTERN.search(expression)) == _accepted_by_code(expression)


def test_the_docs_list_every_operation(live_url, page, spec):
    page.goto(f"{live_url}/docs")
    operations = page.locator(".opblock")
    operations.first.wait_for()
    shown = {
        (block.locator(".opblock-summary-method").inner_text().upper(),
         block.locator(".opblock-summary-path").get_attribute("data-path"))
        for block in operations.all()
    }
    assert shown == _operations(spec)
    # A person can try a request from the page (the form is open: tryItOutEnabled).
    page.locator("#operations-tasks-createTasks .opblock-summary").click()
    page.locator("#operations-tasks-createTasks .execute").click()
    page.locator("#operations-tasks-createTasks .live-responses-table .response-col_status").first.wait_for()
    assert "202" in page.locator("#operations-tasks-createTasks .live-responses-table").inner_text()
