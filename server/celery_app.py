"""The broker path: Celery workers (`dlopt worker`) take run ids from Redis.

Jobs stay in the database; a message only names a run, and so the queue that has work:
the worker grades the fairest runs of that queue until none can be taken (server.queue:
one running run per student, round-robin by student). `task_acks_late` with
`task_reject_on_worker_lost`: a message is acknowledged after the run is recorded, so a
worker killed mid-job leaves it to be delivered again; the run's lease (see
server.queue) makes sure only one worker grades it at a time and it is recorded once,
and each worker's reaper sends again any run whose worker stopped renewing its lease,
whatever the broker did with the message. GPU assignments go to the `gpu` queue, the
rest to `cpu`.
"""

from __future__ import annotations

import logging
import threading
from functools import cache

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down
from sqlalchemy import select

from server.config import Settings

log = logging.getLogger("dlopt.worker")


def make_celery(settings: Settings) -> Celery:
    app = Celery("dlopt", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue="cpu", task_ignore_result=True, broker_connection_retry_on_startup=True,
        # Redelivery of a message whose worker vanished; the lease and the reaper are the real guard.
        broker_transport_options={"visibility_timeout": max(60, int(settings.lease_seconds * 2))},
        worker_hijack_root_logger=False,
    )
    return app


@cache
def settings() -> Settings:
    return Settings()


app = make_celery(settings()) if settings().broker_url else Celery("dlopt")


@cache
def grading_queue():
    from server.db import Database
    from server.queue import GradingQueue
    from server.storage import Store

    s = settings()
    db = Database(s.database)
    db.migrate()
    q = GradingQueue(s, db, Store(s.store))
    q.dispatcher = broker_dispatcher(s)
    return q


@app.task(name="dlopt.grade_run", bind=True, acks_late=True, reject_on_worker_lost=True)
def grade_run(self, run_id: int) -> str:
    """The message names a run to say that its queue has work; the worker takes the
    fairest runs of that queue (server.queue: one running per student, round-robin by
    student) until none can be taken, which may be other runs than the one named."""
    from server.models import GradingRun
    from server.queue import worker_id

    q = grading_queue()
    with q.db.session() as s:
        queue = s.scalar(select(GradingRun.queue).where(GradingRun.id == int(run_id))) or "cpu"
    outcomes = q.drain((queue,), worker_id("celery"))
    log.info("message for run %s (%s queue): %s", run_id, queue, outcomes or "nothing to take")
    return ", ".join(outcomes) or "unavailable"


def broker_dispatcher(s: Settings):
    celery = make_celery(s)

    def send(run_ids: list[int], queues: dict[int, str]) -> None:
        for rid in run_ids:
            celery.send_task("dlopt.grade_run", args=[rid], queue=queues.get(rid, "cpu"))

    return send


_reaper_stop = threading.Event()


@worker_ready.connect
def _start_reaper(**_kw) -> None:
    """Every worker sends again the runs whose worker died (lease expired)."""
    q = grading_queue()

    def loop() -> None:
        while True:
            try:
                back = q.reap()
                if back:
                    with q.db.session() as s:
                        from server.models import GradingRun

                        queues = {r.id: r.queue for r in s.query(GradingRun).filter(GradingRun.id.in_(back))}
                    q.dispatcher(back, queues)
                    log.warning("sent again %d run(s) whose worker stopped: %s", len(back), back)
            except Exception:  # noqa: BLE001 - keep reaping
                log.exception("reaper")
            if _reaper_stop.wait(max(1.0, q.settings.lease_seconds / 2)):
                return

    threading.Thread(target=loop, daemon=True, name="reaper").start()


@worker_shutting_down.connect
def _stop_reaper(**_kw) -> None:
    _reaper_stop.set()
