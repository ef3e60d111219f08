"""Fixtures: real PostgreSQL and RabbitMQ, isolated per run (database) and per test (queue)."""
from __future__ import annotations

import uuid

import dramatiq
import pytest

from app import create_app
from app.config import Config
from support import (
    AMQP_URL,
    CHROMIUM,
    CHROMIUM_ARGS,
    RUN_ID,
    clean_tables,
    delete_queues,
    own_database,
    require,
    require_service,
    serve,
)


@pytest.fixture(scope="session")
def pg_url():
    """This run's own PostgreSQL database, dropped when the run ends."""
    with own_database(f"dalc_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url():
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture
def queue_name(amqp_url):
    """Give the test its own queue, and delete it (with its delay and dead-letter queues) afterwards."""
    name = f"dalc-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    yield name
    delete_queues(amqp_url, name)


@pytest.fixture
def pg_config(pg_url, amqp_url, queue_name) -> Config:
    """A production-shaped configuration on the real services, with this test's own queue."""
    return Config(database_url=pg_url, broker_url=amqp_url, queue_name=queue_name, sweep_interval_seconds=3600)


@pytest.fixture
def app(pg_config):
    """A fresh web app on real PostgreSQL and RabbitMQ, with empty tables."""
    application = create_app(pg_config)
    clean_tables()
    yield application
    application.extensions["dalc"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(app):
    return app.extensions["dalc"]


@pytest.fixture
def worker(runtime):
    """Run a real Dramatiq worker, in threads of the test process, on the test's RabbitMQ queue."""
    w = dramatiq.Worker(runtime.broker, worker_threads=2, worker_timeout=100)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def embedded_app(tmp_path):
    """A fresh app in the embedded shape: SQLite file, in-process broker and workers."""
    config = Config(database_url=f"sqlite:///{tmp_path / 'dalc.db'}", broker_url=None)
    application = create_app(config)
    yield application
    application.extensions["dalc"].close()



@pytest.fixture
def live_url(app):
    """The test's app served over real HTTP (PostgreSQL and RabbitMQ behind it)."""
    with serve(app) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright, one for the whole run."""
    require(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser page; the test fails if the page logs an error or breaks its Content-Security-Policy."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("dialog", lambda dialog: (errors.append(f"dialog opened: {dialog.message}"), dialog.dismiss()))
    yield tab
    context.close()
    assert errors == [], f"the page reported errors: {errors}"
