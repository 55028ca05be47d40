"""The grading queue: every job is a `grading_runs` row, committed before the submit call
returns; the broker (or the embedded pool) only carries run ids.

A worker takes a run with one conditional UPDATE (`claim`): queued, or running with an
expired lease, and fewer than `max_attempts` attempts. While grading it renews the lease
(`heartbeat`); the result is written by another conditional UPDATE that names the
worker and the attempt (`record`), in the same transaction as the per-test rows, so a
run is recorded once even if a broker delivers it twice. A worker killed mid-job stops
renewing its lease; the next `reap` puts the run back in the queue, or fails it with a
reason once it has used its attempts.

The queue is fair across students. Each student has at most one running run per queue
(cpu, gpu), across all workers: `claim` refuses a run whose student already has one with
a live lease. Among queued runs, `next_queued` offers each other student's oldest run,
the student whose last run started longest ago (or never) first, ties by the oldest
enqueued; so however many runs one student has queued, another student's new run waits
for at most one run per worker. A worker takes the first of these it can claim
(`execute_next`); a Celery task names a run only to say which queue has work, and its
worker keeps taking the fairest run of that queue until none can be taken, so a run held
back because its student had one running is taken when that one ends. The number of
queued uploads per student is bounded at submit (`max_queued_per_student`).
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

from sqlalchemy import and_, func, or_, select, update

from autograder import assignment as engine_assignments
from autograder.judge.results import SubmissionResult
from server.config import Settings
from server.db import Database, begin_write, serialize_on
from server.models import AssignmentRow, FlagReview, GradingRun, Submission, TestResultRow, utcnow
from server.storage import Store

log = logging.getLogger("dlopt.queue")

# Second key of the transaction-level lock a claim holds on its student (PostgreSQL; see
# server.db.serialize_on): assignment ids, the other users of the pair, are positive.
CLAIM_LOCK = -1


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
        """The attempt number this worker now holds, or None if the run is not available:
        taken, finished, out of attempts, or its student already has a run running (a live
        lease) in its queue."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        with self.db.session() as s:
            begin_write(s)
            row = s.execute(select(Submission.user_id, GradingRun.queue)
                            .join(Submission, GradingRun.submission_id == Submission.id)
                            .where(GradingRun.id == run_id)).first()
            if row is None:
                s.rollback()
                return None
            student, queue = row
            # Two workers claiming two runs of one student: one after the other (SQLite's
            # BEGIN IMMEDIATE does it already), so the second sees the first's run running.
            serialize_on(s, student, CLAIM_LOCK)
            busy = s.scalar(select(GradingRun.id).join(Submission, GradingRun.submission_id == Submission.id)
                            .where(Submission.user_id == student, GradingRun.queue == queue,
                                   GradingRun.id != run_id, GradingRun.status == "running",
                                   GradingRun.lease_until >= now).limit(1))
            if busy is not None:
                s.rollback()
                return None
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
                engine_version=result.engine_version, result=result.as_dict(), flag_count=len(result.flags)))
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
        Returns the ids put back, and for a run failed the oldest queued run of its student
        in its queue (held back while it ran): for a broker to be told again."""
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
                    held = s.scalar(select(func.min(GradingRun.id))
                                    .join(Submission, GradingRun.submission_id == Submission.id)
                                    .where(Submission.user_id == run.submission.user_id,
                                           GradingRun.queue == run.queue, GradingRun.status == "queued"))
                    if held is not None:
                        back.append(held)
                else:
                    run.status = "queued"
                    back.append(run.id)
            s.commit()
            return list(dict.fromkeys(back))

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
        """Claim this run, grade, record. Returns what happened: graded, lost, unavailable."""
        attempt = self.claim(run_id, worker)
        if attempt is None:
            return "unavailable"
        return self._execute_claimed(run_id, worker, attempt)

    def claim_next(self, queues: tuple[str, ...], worker: str) -> tuple[int, int] | None:
        """Claim the fairest run of these queues that can be taken: (run id, attempt), or
        None when no queued run's student is free."""
        for run_id in self.next_queued(queues):
            attempt = self.claim(run_id, worker)
            if attempt is not None:
                return run_id, attempt
        return None

    def execute_next(self, queues: tuple[str, ...], worker: str) -> str | None:
        """Claim the fairest run (`claim_next`), grade, record; None if there was none."""
        taken = self.claim_next(queues, worker)
        if taken is None:
            return None
        return self._execute_claimed(taken[0], worker, taken[1])

    def drain(self, queues: tuple[str, ...], worker: str) -> list[str]:
        """Take the fairest run again and again until none can be taken (a Celery task:
        a run left queued because its student had one running is taken here, by the
        worker that graded that one, whose task is still going)."""
        outcomes = []
        while (outcome := self.execute_next(queues, worker)) is not None:
            outcomes.append(outcome)
        return outcomes

    def _execute_claimed(self, run_id: int, worker: str, attempt: int) -> str:
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
            # a TA cleared its flags (the newest review says so): its kernel boards are timed
            review = s.scalar(select(FlagReview).where(FlagReview.submission_id == sub.id, FlagReview.action != "note")
                              .order_by(FlagReview.id.desc()).limit(1))
            cleared = review is not None and review.action == "cleared"
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
                kw = {"flags_cleared": True} if cleared else {}
                return self._grade(a, path, label=label, runner=self.settings.runner, **kw)
            except Exception as e:  # noqa: BLE001 - the engine promises not to raise; if it does, say so
                r = SubmissionResult(assignment=slug, submission=label)
                r.error = "the grader failed on this submission (staff have been told)"
                r.grader_errors.append(f"{type(e).__name__}: {e}")
                return r

    def next_queued(self, queues: tuple[str, ...], limit: int = 50) -> list[int]:
        """The runs to offer next, fairest first: per student and queue the oldest queued
        run, none of a student with a run running (live lease) in that queue; the student
        whose last run in that queue started longest ago (never: first) goes first, ties by
        the oldest enqueued (the lowest id)."""
        now = utcnow()
        with self.db.session() as s:
            heads = s.execute(select(Submission.user_id, GradingRun.queue, func.min(GradingRun.id))
                              .join(Submission, GradingRun.submission_id == Submission.id)
                              .where(GradingRun.status == "queued", GradingRun.queue.in_(queues))
                              .group_by(Submission.user_id, GradingRun.queue)).all()
            if not heads:
                return []
            students = {h[0] for h in heads}
            busy = set(s.execute(select(Submission.user_id, GradingRun.queue)
                                 .join(Submission, GradingRun.submission_id == Submission.id)
                                 .where(GradingRun.status == "running", GradingRun.lease_until >= now,
                                        GradingRun.queue.in_(queues), Submission.user_id.in_(students))
                                 .distinct()).all())
            last = {(u, q): t for u, q, t in s.execute(
                select(Submission.user_id, GradingRun.queue, func.max(GradingRun.started_at))
                .join(Submission, GradingRun.submission_id == Submission.id)
                .where(GradingRun.started_at.is_not(None), GradingRun.queue.in_(queues),
                       Submission.user_id.in_(students))
                .group_by(Submission.user_id, GradingRun.queue))}
        free = [(last.get((u, q)), run_id) for u, q, run_id in heads if (u, q) not in busy]
        free.sort(key=lambda f: (f[0] is not None, f[0] or now, f[1]))
        return [run_id for _, run_id in free[:limit]]


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
                if self.stopping.is_set():
                    return
                if self.queue.execute_next(self.queues, worker) is None:
                    self.queue.wakeup.wait(self.queue.settings.poll_seconds)
                    self.queue.wakeup.clear()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the pool
                log.exception("grading worker loop")
                self.stopping.wait(self.queue.settings.poll_seconds)
