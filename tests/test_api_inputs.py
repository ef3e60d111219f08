"""Whatever a client sends, the API answers it without a 500 (Hypothesis against the real stack)."""
from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
TASKISH = st.dictionaries(st.sampled_from(["expression", "Expression", "expr", "x"]), JSON, max_size=3)
BODIES = st.one_of(
    JSON.map(json.dumps),
    TASKISH.map(json.dumps),
    st.lists(TASKISH, max_size=4).map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(body=BODIES, content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                                  "application/problem+json", ""]))
def test_any_body_gets_an_answer_below_500(client, body, content_type):
    response = client.post("/tasks", data=body, content_type=content_type or None)
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"


@SETTINGS
@given(path=st.text(max_size=30), query=st.dictionaries(
    st.sampled_from(["id", "wait", "status", "limit", "before", "x"]), st.text(max_size=20), max_size=4))
def test_any_path_and_query_get_an_answer_below_500(client, path, query):
    qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
    for method in (client.get, client.post):
        response = method(f"/tasks/{quote(path)}?{qs}")
        assert response.status_code < 500, response.get_data(as_text=True)
    assert client.get(f"/tasks?{qs}").status_code < 500
