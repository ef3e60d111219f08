"""Assembling a dalc process: database, broker, actor, dispatcher, and the embedded worker."""
from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import logging
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, wait

import dramatiq
import peewee

from app import store
from app.config import Config
from app.evaluator import Evaluator, Limits
from app.queue.actors import declare_actors
from app.queue.broker import DeadLetterQueue, build_broker
from app.queue.dispatch import BackgroundPublisher, Dispatcher
from app.queue.sweeper import Sweeper
from app.store import FINAL_CHANNEL, retention
from app.store.database import UNAVAILABLE_ERRORS, db, init_db, is_postgres, retire_connections
from app.store.group_insert import GroupInserter
from app.store.notify import PostgresListener
from app.telemetry import tracing
from app.telemetry.dramatiq_middleware import TracingMiddleware

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Runtime:
    """The parts one dalc process works with, built from one Config."""

    config: Config
    broker: dramatiq.Broker
    actor: dramatiq.Actor
    dispatcher: Dispatcher
    evaluator: Evaluator
    sweeper: Sweeper
    publisher: BackgroundPublisher | None = None
    inserter: GroupInserter | None = None
    worker: dramatiq.Worker | None = None
    listener: PostgresListener | None = None

    def start_intake(self) -> None:
        """Start the web's helper threads: group inserts of new tasks, and publishing without waiting."""
        self.inserter = GroupInserter(store.insert_rows, max_rows=max(self.config.max_batch_size, 100))
        self.publisher = BackgroundPublisher(self.dispatcher)

    def start_embedded_worker(self) -> None:
        """Run workers and the sweeper in this process, and publish what a restart left unfinished."""
        self.worker = dramatiq.Worker(
            self.broker, worker_threads=self.config.embedded_worker_threads, worker_timeout=100
        )
        self.worker.start()
        # The in-process queue died with the last process; the database still has every open task.
        self.sweeper.sweep_once(older_than=_far_future())
        self.sweeper.start_thread()

    def finals_pushed(self) -> bool:
        """Tell whether this process hears at once of tasks becoming final (else a waiter must poll)."""
        return self.config.embedded_broker or (self.listener is not None and self.listener.connected.is_set())

    def start_listener(self) -> None:
        """Listen for final tasks on PostgreSQL so `?wait=` answers the moment a worker finishes."""
        if not is_postgres():
            return
        params = dict(db.obj.connect_params, dbname=db.obj.database)
        # A listener that loses the server is the first to know: retire the pool's connections at once,
        # rather than letting each of them fail one request.
        self.listener = PostgresListener(params, FINAL_CHANNEL, on_lost=retire_connections)
        self.listener.start()

    def close(self) -> None:
        """Stop the threads this process started and close the broker's connections."""
        self.sweeper.stop()
        if self.publisher is not None:
            self.publisher.close()
        if self.listener is not None:
            self.listener.stop()
        if self.worker is not None:
            self.worker.stop()
        self.broker.close()


def _far_future() -> dt.datetime:
    return dt.datetime(9999, 1, 1)


def evaluator_limits(config: Config) -> Limits:
    """Return the evaluator's bounds as configured."""
    # Results are written as decimal text (JSON); Python refuses ints longer than its own limit.
    if config.eval_max_result_digits > sys.get_int_max_str_digits():
        sys.set_int_max_str_digits(config.eval_max_result_digits)
    return Limits(
        max_time_seconds=config.eval_max_seconds,
        max_memory_bytes=config.eval_max_memory_bytes,
        max_result_digits=config.eval_max_result_digits,
        max_length=config.max_expression_length,
    )


# How long a thread may hold the GIL while another waits for it: CPython's default, set here so that
# nothing imported changes it. Each forced switch costs two context switches: at 0.5 ms (dalc's setting
# until 2026-12-04) the machine made 62 to 68 context switches per task under load against 39 to 47 at
# 5 ms, and single submissions ran 12 to 33% faster at 5 ms in five interleaved pairs. The shorter
# interval was chosen for latency when every publish went through another thread; now p50 at 200 tasks/s
# is the same at both (2.0 ms, median of six runs each).
GIL_SWITCH_INTERVAL_SECONDS = 0.005


def freeze_startup_objects() -> None:
    """Keep what a process built at start-up (modules, the app, the runtime) out of full collections.

    They live as long as the process, yet each full (generation 2) collection walked them all: 21 to
    66 ms pauses in a web or worker process under load, time added to every task in flight then, which
    is a p99. After gc.freeze() the same collections took under 2 ms. Call it once start-up is done.
    """
    gc.collect()
    gc.freeze()


# Warming up waits at most this long for a process's threads, database or broker away or not.
WARM_UP_SECONDS = 10.0


def warm_up_thread(runtime: Runtime, *, publishes: bool) -> None:
    """Open, in the calling thread, what its first task would otherwise wait for.

    Each server or worker thread opened its database connection (and a web thread its RabbitMQ channel)
    on its first task, and the first message of a worker process created its metrics and their files:
    with every thread doing so at once after a start, tasks of the first second took 50 to 130 ms
    (p95, p99) instead of about 2. The connection then runs the thread's statements once (see
    store.warm_statements), and a worker thread evaluates once (each thread builds its own engine). A
    service that is away is only logged: the first task opens it then.
    """
    try:
        db.connection()  # the thread keeps it (app.store.database)
        store.warm_statements(web=publishes)
    except UNAVAILABLE_ERRORS as exc:
        log.warning("warm-up: the database is unreachable: %s", exc)
    except peewee.DatabaseError as exc:  # no task table yet, say: the first task finds out for itself
        log.warning("warm-up: the task statements failed: %s", exc)
    if publishes:
        open_channel = getattr(runtime.broker, "open_channel", None)  # RabbitMQ's; the stub has none
        if open_channel is not None:
            open_channel()
    else:
        runtime.evaluator.evaluate("1 + 1")


def warm_up_pool(pool: Executor, threads: int, warm: Callable[[], None], timeout: float = WARM_UP_SECONDS) -> None:
    """Run `warm` in each of the `threads` threads of `pool`, which starts them now if it has not yet.

    The calls wait for each other, so that each one takes a thread of its own.
    """
    together = threading.Barrier(threads)

    def one() -> None:
        try:
            together.wait(timeout)
        except threading.BrokenBarrierError:
            pass  # a thread did not come in time: warm this one anyway
        warm()

    futures = [pool.submit(one) for _ in range(threads)]
    done, not_done = wait(futures, timeout)
    for future in done:
        if future.exception() is not None:
            log.warning("warm-up of a thread failed: %s", future.exception())
    if not_done:
        log.warning("warm-up: %d of %d threads still opening connections after %gs", len(not_done), threads, timeout)


def build_runtime(config: Config) -> Runtime:
    """Build the parts of a dalc process and make its broker Dramatiq's global one."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    init_db(config)
    broker = build_broker(config, [TracingMiddleware()] if tracing.enabled() else [])
    dramatiq.set_broker(broker)
    evaluator = Evaluator(evaluator_limits(config))
    actor = declare_actors(broker, config, evaluator)
    dispatcher = Dispatcher(actor, chunk_size=config.message_chunk_size)
    sweeper = Sweeper(
        dispatcher,
        DeadLetterQueue(broker, config.queue_name),
        after_seconds=config.sweep_after_seconds,
        interval_seconds=config.sweep_interval_seconds,
        purge_policy=retention.Policy.from_config(config),
        purge_interval_seconds=config.purge_interval_seconds,
    )
    return Runtime(config, broker, actor, dispatcher, evaluator, sweeper)
