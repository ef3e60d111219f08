"""The dashboard: /stats counts what happened to the tasks, and /dashboard draws it in Chromium."""
from __future__ import annotations

import datetime as dt

import requests
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app import store
from app.queue.depth import queue_depth
from app.store import stats
from app.store.models import COMPLETED, FAILED, Task, utcnow
from support import wait_until

LATER = dt.timedelta(seconds=2 * stats.BUCKET_SECONDS)  # far enough ahead that the tasks' bucket is complete


def _totals(activity: stats.Activity) -> tuple[int, int, int]:
    return (sum(b.submitted for b in activity.buckets), sum(b.finished for b in activity.buckets),
            sum(b.failed for b in activity.buckets))


def _record(task_ids, *outcomes):
    """Finish the tasks, then set each one's finished_at to the outcome's (the database stamps its own time)."""
    store.claim(task_ids)
    store.finish([store.Outcome(id=i, **{k: v for k, v in outcome.items() if k != "finished_at"})
                  for i, outcome in zip(task_ids, outcomes, strict=True)])
    for task_id, outcome in zip(task_ids, outcomes, strict=True):
        Task.update(finished_at=outcome["finished_at"]).where(Task.id == task_id).execute()


def test_activity_counts_submitted_finished_and_failed_tasks_by_bucket(app):
    with app.app_context():
        tasks, _ = store.create_tasks(["6 * 7", "1 / 0", "2 + 2"])
        created = store.get_task(tasks[0].id).created_at
        finished = created + dt.timedelta(milliseconds=30)
        _record([tasks[0].id, tasks[1].id],
                {"status": COMPLETED, "result": "42", "finished_at": finished},
                {"status": FAILED, "error_code": "division_by_zero", "error_message": "no", "finished_at": finished})
        activity = stats.Tracker().activity(now=utcnow() + LATER)
    assert _totals(activity) == (3, 2, 1)
    assert activity.failures == {"division_by_zero": 1}
    assert activity.open_tasks == {"SCHEDULED": 1, "RUNNING": 0}
    [busy] = [b for b in activity.buckets if b.finished]
    assert 0.02 <= busy.latency_p50 <= 0.05  # both took 30 ms (estimated within its bin)
    assert len(activity.buckets) == stats.WINDOW_SECONDS // stats.BUCKET_SECONDS


def test_the_bucket_still_filling_is_left_out(app):
    with app.app_context():
        before = utcnow()
        store.create_tasks(["1 + 1"])
        assert _totals(stats.Tracker().activity(now=before)) == (0, 0, 0)
        assert _totals(stats.Tracker().activity(now=utcnow() + LATER)) == (1, 0, 0)


def test_a_tracker_reads_only_new_buckets_and_answers_as_a_fresh_one_would(app):
    with app.app_context():
        tracker = stats.Tracker()
        first, _ = store.create_tasks(["1 + 1", "2 + 2"])
        tracker.activity(now=utcnow() + LATER)
        later = dt.timedelta(seconds=3 * stats.BUCKET_SECONDS)
        # What happens next happens after the buckets the tracker read (time moves on by `later`).
        _record([first[0].id], {"status": COMPLETED, "result": "2", "finished_at": utcnow() + later})
        [(third, _)] = store.insert_rows([("3 + 3", None, 0)])
        Task.update(created_at=utcnow() + later).where(Task.id == third).execute()
        now = utcnow() + later + LATER
        kept, fresh = tracker.activity(now=now), stats.Tracker().activity(now=now)
    assert kept.buckets == fresh.buckets
    assert _totals(kept) == (3, 1, 0)


def test_activity_reads_the_embedded_shapes_sqlite_too(embedded_app):
    client = embedded_app.test_client()
    ids = [t["id"] for t in client.post("/tasks", json=[{"expression": "1 + 1"}, {"expression": "x"}]).json]
    for task_id in ids:
        assert client.get(f"/tasks/{task_id}?wait=10").json["status"] in (COMPLETED, FAILED)
    with embedded_app.app_context():
        activity = stats.Tracker().activity(now=utcnow() + LATER)
    assert _totals(activity) == (2, 2, 1)
    assert activity.failures == {"undefined_name": 1}
    assert all(b.latency_p95 is not None for b in activity.buckets if b.finished)


def test_quantiles_are_interpolated_within_their_bin():
    counts = [0] * (len(stats.LATENCY_BOUNDS) + 1)
    assert stats.quantile(0.5, counts) is None
    upper = stats.LATENCY_BOUNDS.index(0.05)
    counts[upper] = 10  # ten tasks in the bin that ends at 50 ms
    low = stats.LATENCY_BOUNDS[upper - 1]
    assert abs(stats.quantile(0.5, counts) - (low + (0.05 - low) / 2)) < 1e-9
    counts[-1] = 90  # ninety beyond the last bound: only that bound is known
    assert stats.quantile(0.95, counts) == stats.LATENCY_BOUNDS[-1]


def test_queue_depth_counts_ready_messages_and_the_workers_consuming_them(runtime, request):
    config = runtime.config
    for task_id in (1, 2, 3):
        runtime.actor.send([task_id])  # ids of no task: a worker acknowledges them without work
    depth = wait_until(lambda: (d := queue_depth(runtime.broker, config.queue_name, broker_url=config.broker_url))
                       and d.ready == 3 and d)
    assert (depth.delayed, depth.dead_letters, depth.workers) == (0, 0, 0)
    request.getfixturevalue("worker")  # one worker process: one consumer on the queue
    wait_until(lambda: queue_depth(runtime.broker, config.queue_name, broker_url=config.broker_url).workers == 1)


def test_queue_depth_is_unknown_when_the_broker_cannot_be_reached(runtime):
    broker = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F")
    assert queue_depth(broker, "dalc", broker_url="amqp://guest:guest@127.0.0.1:1/%2F") is None


def test_stats_answers_the_documented_shape_and_shares_one_computation(client, runtime):
    first = client.get("/stats")
    assert first.status_code == 200
    body = first.get_json()
    assert body["queue"]["name"] == runtime.config.queue_name
    assert body["window_seconds"] == stats.WINDOW_SECONDS and body["bucket_seconds"] == stats.BUCKET_SECONDS
    assert set(body["open_tasks"]) == {"SCHEDULED", "RUNNING"}
    # Polls within the cache's lifetime get the same answer instead of new queries.
    assert client.get("/stats").get_json()["generated_at"] == body["generated_at"]


def test_the_dashboard_draws_its_charts_after_some_load(live_url, worker, page):
    expressions = [f"{n} * {n}" for n in range(30)] + ["1 / 0"] * 3 + ["nothing"] * 2
    for e in expressions[:5]:
        requests.post(f"{live_url}/tasks", json={"expression": e}, timeout=10)
    batch = requests.post(f"{live_url}/tasks", json=[{"expression": e} for e in expressions[5:]], timeout=10).json()
    for task in batch:
        requests.get(f"{live_url}/tasks/{task['id']}?wait=10", timeout=20)

    def finished() -> int:
        return sum(b["finished"] for b in requests.get(f"{live_url}/stats", timeout=10).json()["buckets"])

    wait_until(lambda: finished() == len(expressions), timeout=30, interval=0.5)  # the bucket completes
    page.goto(f"{live_url}/dashboard")
    page.locator('#throughput-chart [data-series="finished"]').first.wait_for(state="attached")
    page.locator('#latency-chart [data-series="p95"]').first.wait_for(state="attached")
    # Some value of each series stands above the baseline of its chart.
    lowest = page.evaluate("""(selector) => Math.min(...[...document.querySelectorAll(selector)].flatMap((n) =>
        n.tagName === 'circle' ? [Number(n.getAttribute('cy'))]
                               : n.getAttribute('points').split(' ').map((p) => Number(p.split(',')[1]))))""",
                           '#throughput-chart [data-series="finished"]')
    baseline = page.evaluate("Math.max(...[...document.querySelectorAll('#throughput-chart line')].map("
                             "(l) => Number(l.getAttribute('y1'))))")
    assert lowest < baseline
    assert page.locator('#failures [data-error-code="division_by_zero"] .count').inner_text() == "3"
    assert page.locator('#failures [data-error-code="undefined_name"] .count').inner_text() == "2"
    assert int(page.locator("#tile-workers").inner_text()) >= 1
    assert f"{len(expressions)} finished" in page.locator("#throughput-summary").inner_text()
