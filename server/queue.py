"""The grading queue: every job is a `grading_runs` row, committed before the submit call
returns; the broker (or the embedded pool) only carries run ids.

A worker takes a run with one conditional UPDATE (`claim`): queued, or running with an
expired lease, and fewer than `max_attempts` attempts. While grading it renews the lease
(`heartbeat`); the result is written by another conditional UPDATE that names the
worker and the attempt (`record`), in the same transaction as the per-test rows, so a
run is recorded once even if a broker delivers it twice. A worker killed mid-job stops
renewing its lease; the next `reap` puts the run back in the queue, or fails it with a
reason once it has used its attempts.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update

from autograder import assignment as engine_assignments
from autograder.judge.results import SubmissionResult
from server.config import Settings
from server.db import Database, begin_write
from server.models import AssignmentRow, GradingRun, Submission, TestResultRow, utcnow
from server.storage import Store

log = logging.getLogger("dlopt.queue")


def worker_id(kind: str) -> str:
    return f"{kind}@{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def queue_for(settings: Settings, gpu: str) -> str:
    return "gpu" if gpu in settings.gpu_queue_for else "cpu"


class GradingQueue:
    def __init__(self, settings: Settings, db: Database, store: Store) -> None:
        self.settings, self.db, self.store = settings, db, store
        self.wakeup = threading.Event()
        self.dispatcher: Callable[[list[int], dict[int, str]], None] | None = None  # the broker's send
        module, _, name = settings.grade_function.partition(":")
        self._grade = getattr(importlib.import_module(module), name)
        os.environ["DLOPT_RUNNER"] = settings.runner  # the judge processes this worker starts inherit it

    # -- enqueue -----------------------------------------------------------------
    def add_run(self, session, submission: Submission, assignment: AssignmentRow, reason: str) -> GradingRun:
        run = GradingRun(submission=submission, reason=reason, status="queued",
                         queue=queue_for(self.settings, assignment.gpu), enqueued_at=utcnow())
        session.add(run)
        return run

    def dispatch(self, runs: list[GradingRun]) -> None:
        """After the runs are committed: tell the broker, or wake the embedded pool."""
        if not runs:
            return
        if self.dispatcher is not None:
            self.dispatcher([r.id for r in runs], {r.id: r.queue for r in runs})
        self.wakeup.set()

    # -- take, renew, record -----------------------------------------------------
    def claim(self, run_id: int, worker: str) -> int | None:
        """The attempt number this worker now holds, or None if the run is not available."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        with self.db.session() as s:
            begin_write(s)
            res = s.execute(
                update(GradingRun)
                .where(GradingRun.id == run_id, GradingRun.attempts < self.settings.max_attempts,
                       or_(GradingRun.status == "queued",
                           and_(GradingRun.status == "running", GradingRun.lease_until < now)))
                .values(status="running", attempts=GradingRun.attempts + 1, worker=worker,
                        started_at=now, lease_until=lease, runner=self.settings.runner))
            if res.rowcount != 1:
                s.rollback()
                return None
            attempt = s.scalar(select(GradingRun.attempts).where(GradingRun.id == run_id))
            s.commit()
            return attempt

    def heartbeat(self, run_id: int, worker: str, attempt: int) -> bool:
        with self.db.session() as s:
            begin_write(s)
            res = s.execute(update(GradingRun).where(
                GradingRun.id == run_id, GradingRun.worker == worker, GradingRun.attempts == attempt,
                GradingRun.status == "running").values(
                lease_until=utcnow() + timedelta(seconds=self.settings.lease_seconds)))
            s.commit()
            return res.rowcount == 1

    def record(self, run_id: int, worker: str, attempt: int, result: SubmissionResult) -> bool:
        """Write the result if this worker still holds the run; False if it lost it."""
        with self.db.session() as s:
            begin_write(s)
            res = s.execute(update(GradingRun).where(
                GradingRun.id == run_id, GradingRun.worker == worker, GradingRun.attempts == attempt,
                GradingRun.status == "running").values(
                status="done", finished_at=utcnow(), lease_until=None, duration=result.duration,
                score=result.score, max_score=result.max_score, error=result.error,
                grader_errors=list(result.grader_errors), sandbox=dict(result.sandbox),
                engine_version=result.engine_version, result=result.as_dict()))
            if res.rowcount != 1:
                s.rollback()
                return False
            seen = set()
            for t in result.tests:
                name = t.name if t.name not in seen else f"{t.name} ({len(seen)})"
                seen.add(name)
                s.add(TestResultRow(run_id=run_id, name=name[:300], points=t.points, max_points=t.max_points,
                                    visibility=t.visibility, status=t.status, feedback=t.feedback,
                                    duration=t.duration, functions=list(t.function)))
            s.commit()
            return True

    def reap(self) -> list[int]:
        """Runs whose worker stopped renewing: back to the queue, or failed after max attempts.
        Returns the ids put back (for a broker to be told again)."""
        now = utcnow()
        with self.db.session() as s:
            begin_write(s)
            stale = s.scalars(select(GradingRun).where(GradingRun.status == "running",
                                                       GradingRun.lease_until < now)).all()
            back = []
            for run in stale:
                if run.attempts >= self.settings.max_attempts:
                    run.status, run.finished_at = "failed", now
                    run.error = (f"grading stopped {run.attempts} times without a result (the worker died "
                                 "or ran out of time); staff have been told")
                else:
                    run.status = "queued"
                    back.append(run)
            s.commit()
            return [r.id for r in back]

    def requeue_own(self, prefix: str) -> int:
        """At start: runs left running by an earlier process of this kind (it died) go back."""
        with self.db.session() as s:
            begin_write(s)
            res = s.execute(update(GradingRun).where(GradingRun.status == "running",
                                                     GradingRun.worker.like(prefix + "%"))
                            .values(lease_until=utcnow() - timedelta(seconds=1)))
            s.commit()
            return res.rowcount

    # -- run ---------------------------------------------------------------------
    def execute(self, run_id: int, worker: str) -> str:
        """Claim, grade, record. Returns what happened: graded, lost, unavailable."""
        attempt = self.claim(run_id, worker)
        if attempt is None:
            return "unavailable"
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.settings.lease_seconds / 3):
                if not self.heartbeat(run_id, worker, attempt):
                    return

        beat = threading.Thread(target=renew, daemon=True, name=f"lease-{run_id}")
        beat.start()
        try:
            result = self._grade_run(run_id)
        finally:
            stop.set()
        if self.record(run_id, worker, attempt, result):
            return "graded"
        log.warning("run %s: lost the lease before recording (attempt %s); result dropped", run_id, attempt)
        return "lost"

    def _grade_run(self, run_id: int) -> SubmissionResult:
        with self.db.session() as s:
            run = s.get(GradingRun, run_id)
            sub = run.submission
            slug, digest, kind = sub.assignment.slug, sub.content_hash, sub.kind
            label = f"submission {sub.id} ({sub.user.login})"
        try:
            a = engine_assignments.load(Path(self.settings.assignments_dir) / slug)
            data = self.store.get(digest)
        except Exception as e:  # noqa: BLE001 - a missing folder or file is a grading failure
            r = SubmissionResult(assignment=slug, submission=label)
            r.error = "this submission could not be graded (staff have been told)"
            r.grader_errors.append(f"{type(e).__name__}: {e}")
            return r
        with tempfile.TemporaryDirectory(prefix="dlopt-run-") as tmp:
            path = Path(tmp) / f"submission.{kind}"
            path.write_bytes(data)
            try:
                return self._grade(a, path, label=label)
            except Exception as e:  # noqa: BLE001 - the engine promises not to raise; if it does, say so
                r = SubmissionResult(assignment=slug, submission=label)
                r.error = "the grader failed on this submission (staff have been told)"
                r.grader_errors.append(f"{type(e).__name__}: {e}")
                return r

    def next_queued(self, queues: tuple[str, ...]) -> list[int]:
        with self.db.session() as s:
            return list(s.scalars(select(GradingRun.id).where(GradingRun.status == "queued",
                                                              GradingRun.queue.in_(queues))
                                  .order_by(GradingRun.id).limit(50)))


class EmbeddedPool:
    """Worker threads inside the server process (the default without a broker)."""

    def __init__(self, queue: GradingQueue, size: int, queues: tuple[str, ...] = ("cpu", "gpu")) -> None:
        self.queue, self.size, self.queues = queue, size, queues
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        n = self.queue.requeue_own("embedded@")
        if n:
            log.info("put %d unfinished runs of an earlier server back in the queue", n)
        for i in range(self.size):
            t = threading.Thread(target=self._loop, name=f"grader-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.queue.wakeup.set()
        for t in self.threads:
            t.join(timeout)

    def _loop(self) -> None:
        worker = worker_id("embedded")
        next_reap = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_reap:
                    self.queue.reap()
                    next_reap = time.monotonic() + max(1.0, self.queue.settings.lease_seconds / 4)
                did = False
                for run_id in self.queue.next_queued(self.queues):
                    if self.stopping.is_set():
                        return
                    if self.queue.execute(run_id, worker) != "unavailable":
                        did = True
                        break
                if not did:
                    self.queue.wakeup.wait(self.queue.settings.poll_seconds)
                    self.queue.wakeup.clear()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the pool
                log.exception("grading worker loop")
                self.stopping.wait(self.queue.settings.poll_seconds)
