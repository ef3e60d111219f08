"""The /tasks API on real PostgreSQL and RabbitMQ, as docs/api.md specifies it."""
from __future__ import annotations

import json
import threading

import pytest

from app import store
from app.store.database import db
from support import wait_until


def post(client, body, **headers):
    return client.post("/tasks", data=json.dumps(body), content_type="application/json", headers=headers)


def assert_problem(response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    if code is not None:
        assert body["code"] == code
    return body


def test_creating_a_task_answers_202_with_the_stored_task_and_its_location(client):
    response = post(client, {"expression": "1 + 1"})
    assert response.status_code == 202
    task = response.get_json()
    assert task["status"] == "SCHEDULED"
    assert task["expression"] == "1 + 1"
    assert task["result"] is None and task["attempts"] == 0
    assert task["created_at"].endswith("Z") and "." in task["created_at"]
    assert response.headers["Location"] == f"/tasks/{task['id']}"
    assert client.get(response.headers["Location"]).get_json()["id"] == task["id"]


def test_a_task_is_evaluated_by_a_worker_and_reads_back_completed(client, worker):
    task = post(client, {"expression": "(1 + 2) * 3"}).get_json()
    done = client.get(f"/tasks/{task['id']}?wait=10").get_json()
    assert done["status"] == "COMPLETED"
    assert done["result"] == 9
    assert done["attempts"] == 1
    assert done["started_at"] <= done["finished_at"]


def test_the_original_query_form_reads_the_same_task(client, worker):
    task = post(client, {"expression": "2 ** 10"}).get_json()
    client.get(f"/tasks/{task['id']}?wait=10")
    assert client.get(f"/tasks?id={task['id']}").get_json() == client.get(f"/tasks/{task['id']}").get_json()
    assert client.get(f"/tasks?id={task['id']}").get_json()["result"] == 1024


def test_a_bad_expression_is_accepted_and_ends_failed_with_its_code(client, worker):
    task = post(client, {"expression": "1 +"}).get_json()
    done = client.get(f"/tasks/{task['id']}?wait=10").get_json()
    assert done["status"] == "FAILED"
    assert done["error_code"] == "syntax_error"
    assert done["error_message"]
    assert done["result"] is None


def test_division_by_zero_fails_with_its_code(client, worker):
    task = post(client, {"expression": "1 / 0"}).get_json()
    assert client.get(f"/tasks/{task['id']}?wait=10").get_json()["error_code"] == "division_by_zero"


def test_large_integers_come_back_exact(client, worker):
    task = post(client, {"expression": "2 ** 200 + 1"}).get_json()
    raw = client.get(f"/tasks/{task['id']}?wait=10").get_data(as_text=True)
    assert json.loads(raw)["result"] == 2**200 + 1
    assert str(2**200 + 1) in raw


def test_a_batch_creates_every_task_in_order_and_all_complete(client, worker):
    expressions = [f"{i} * {i}" for i in range(250)]
    response = post(client, [{"expression": e} for e in expressions])
    assert response.status_code == 202
    tasks = response.get_json()
    assert [t["expression"] for t in tasks] == expressions
    ids = [t["id"] for t in tasks]
    assert ids == sorted(ids)
    last = client.get(f"/tasks/{ids[-1]}?wait=20").get_json()
    assert last["status"] == "COMPLETED"

    def all_done():
        got = [client.get(f"/tasks/{i}").get_json() for i in ids]
        return got if all(t["status"] == "COMPLETED" for t in got) else None

    got = wait_until(all_done, timeout=20)
    assert [t["result"] for t in got] == [i * i for i in range(250)]


@pytest.mark.parametrize(
    "body, code",
    [
        ("not json", "invalid_json"),
        ('"just a string"', "invalid_task"),
        ("42", "invalid_task"),
        ("{}", "invalid_task"),
        ('{"expression": 12}', "invalid_task"),
        ('{"expression": ""}', "invalid_task"),
        ('{"expression": "   "}', "invalid_task"),
        ('{"expression": null}', "invalid_task"),
        ('{"expression": "1", "extra": 1}', "invalid_task"),
        ("[]", "empty_batch"),
        ('[{"expression": "1"}, 5]', "invalid_task"),
        ('[{"expression": "1"}, {"nope": "1"}]', "invalid_task"),
        (b"\xff\xfe{}", "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
        ('{"expression": "1 + \\ud800"}', "invalid_task"),
        ('{"expression": "1 +\\u0000 1"}', "invalid_task"),
        ('{"expression": 1' + "0" * 5000 + "}", "invalid_json"),
    ],
)
def test_malformed_bodies_answer_400_and_store_nothing(client, body, code):
    response = client.post("/tasks", data=body, content_type="application/json")
    assert_problem(response, 400, code)
    assert client.get("/tasks").get_json()["items"] == []


def test_batch_errors_point_at_the_offending_items(client):
    response = post(client, [{"expression": "1"}, {"expression": 2}, {}])
    body = assert_problem(response, 400, "invalid_task")
    assert [e["pointer"] for e in body["errors"]] == ["/1/expression", "/2/expression"]


def test_a_body_that_is_not_json_typed_answers_415(client):
    response = client.post("/tasks", data='{"expression": "1"}', content_type="text/plain")
    assert_problem(response, 415, "unsupported_media_type")
    assert_problem(client.post("/tasks", data="expression=1"), 415)


def test_an_expression_over_the_limit_answers_413(client):
    response = post(client, {"expression": "1+" * 5000 + "1"})
    assert_problem(response, 413, "expression_too_long")


def test_a_batch_over_1000_answers_413(client):
    response = post(client, [{"expression": "1"}] * 1001)
    assert_problem(response, 413, "batch_too_large")
    assert client.get("/tasks").get_json()["items"] == []


def test_a_body_over_the_size_limit_answers_413(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post("/tasks", data=b"[" + b" " * limit + b"]", content_type="application/json")
    assert_problem(response, 413)


@pytest.mark.parametrize("path", ["/tasks/abc", "/tasks/1.5", "/tasks?id=abc", "/tasks/1e3", "/tasks/0%1F",
                                  "/tasks/%201", "/tasks/1_000", "/tasks?id=%D9%A1"])
def test_a_malformed_id_answers_400(client, path):
    assert_problem(client.get(path), 400, "invalid_task_id")


@pytest.mark.parametrize("path", ["/tasks/999999999", "/tasks/0", "/tasks/-3", "/tasks?id=0",
                                  "/tasks/99999999999999999999999"])
def test_an_unknown_or_non_positive_id_answers_404(client, path):
    assert_problem(client.get(path), 404, "task_not_found")


def test_unknown_paths_answer_404_problem(client):
    assert_problem(client.get("/nowhere"), 404)


def test_wrong_methods_answer_405_problem_with_allow(client):
    response = client.delete("/tasks/1")
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]
    assert_problem(client.put("/tasks"), 405)


def test_wait_returns_early_when_the_task_finishes(client, worker):
    task = post(client, {"expression": "6 * 7"}).get_json()
    done = client.get(f"/tasks/{task['id']}?wait=30").get_json()
    assert done["status"] == "COMPLETED" and done["result"] == 42


def test_wait_gives_up_after_the_timeout_and_answers_the_current_state(client):
    task = post(client, {"expression": "1"}).get_json()  # no worker runs: stays SCHEDULED
    got = client.get(f"/tasks/{task['id']}?wait=0.3")
    assert got.status_code == 200
    assert got.get_json()["status"] == "SCHEDULED"


@pytest.mark.parametrize("wait", ["-1", "31", "soon", "nan", "inf"])
def test_a_bad_wait_answers_400(client, wait):
    task = post(client, {"expression": "1"}).get_json()
    assert_problem(client.get(f"/tasks/{task['id']}?wait={wait}"), 400, "invalid_query")


def test_listing_pages_newest_first_with_a_cursor(client):
    ids = [t["id"] for t in post(client, [{"expression": str(i)} for i in range(7)]).get_json()]
    first = client.get("/tasks?limit=3").get_json()
    assert [t["id"] for t in first["items"]] == ids[::-1][:3]
    second = client.get(f"/tasks?limit=3&before={first['next']}").get_json()
    assert [t["id"] for t in second["items"]] == ids[::-1][3:6]
    third = client.get(f"/tasks?limit=3&before={second['next']}").get_json()
    assert [t["id"] for t in third["items"]] == ids[::-1][6:]
    assert third["next"] is None


def test_listing_filters_by_status(client, worker):
    done = post(client, {"expression": "1"}).get_json()
    client.get(f"/tasks/{done['id']}?wait=10")
    with db.connection_context():  # stored but not published, so no worker can finish it first
        cancelled = store.create_tasks(["2"])[0][0].to_dict()
    assert client.post(f"/tasks/{cancelled['id']}/cancel").status_code == 200
    completed = client.get("/tasks?status=COMPLETED").get_json()["items"]
    assert [t["id"] for t in completed] == [done["id"]]
    assert [t["id"] for t in client.get("/tasks?status=cancelled").get_json()["items"]] == [cancelled["id"]]


@pytest.mark.parametrize("query", ["status=DONE", "limit=0", "limit=100000", "limit=x", "before=abc", "before=-1"])
def test_bad_list_parameters_answer_400(client, query):
    assert_problem(client.get(f"/tasks?{query}"), 400, "invalid_query")


def test_cancelling_an_open_task_makes_it_final(client):
    task = post(client, {"expression": "1 + 1"}).get_json()
    response = client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "CANCELLED" and body["finished_at"]
    assert_problem(client.post(f"/tasks/{task['id']}/cancel"), 409, "task_final")


def test_a_cancelled_task_is_never_evaluated(client, runtime, worker):
    with db.connection_context():  # stored, not yet published
        task = store.create_tasks(["1 + 1"])[0][0].to_dict()
    assert client.post(f"/tasks/{task['id']}/cancel").status_code == 200
    runtime.dispatcher.publish([task["id"]])  # its message arrives after the cancel
    marker = post(client, {"expression": "2"}).get_json()
    client.get(f"/tasks/{marker['id']}?wait=10")
    after = client.get(f"/tasks/{task['id']}").get_json()
    assert after["status"] == "CANCELLED" and after["attempts"] == 0 and after["result"] is None


def test_cancelling_an_unknown_task_answers_404(client):
    assert_problem(client.post("/tasks/424242/cancel"), 404)


def test_the_same_idempotency_key_and_body_answer_the_first_task(client):
    first = post(client, {"expression": "1 + 1"}, **{"Idempotency-Key": "k-1"})
    again = post(client, {"expression": "1 + 1"}, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert len(client.get("/tasks").get_json()["items"]) == 1


def test_the_same_idempotency_key_with_another_body_answers_409(client):
    post(client, {"expression": "1 + 1"}, **{"Idempotency-Key": "k-2"})
    assert_problem(post(client, {"expression": "1 + 2"}, **{"Idempotency-Key": "k-2"}), 409)
    assert_problem(post(client, [{"expression": "1 + 1"}], **{"Idempotency-Key": "k-2"}), 409)


def test_idempotent_batches_replay_the_whole_list(client):
    body = [{"expression": "1"}, {"expression": "2"}]
    first = post(client, body, **{"Idempotency-Key": "batch-1"}).get_json()
    again = post(client, body, **{"Idempotency-Key": "batch-1"})
    assert again.status_code == 200
    assert [t["id"] for t in again.get_json()] == [t["id"] for t in first]


def test_concurrent_requests_with_one_key_create_one_task(app):
    answers = []

    def send():
        with app.test_client() as c:
            answers.append(post(c, {"expression": "7"}, **{"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202]
    assert len({a.get_json()["id"] for a in answers}) == 1


def test_an_invalid_idempotency_key_answers_400(client):
    assert_problem(post(client, {"expression": "1"}, **{"Idempotency-Key": "x" * 300}), 400)
