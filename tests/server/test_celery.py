"""The broker path with the real Redis on loopback and real `dlopt worker` processes:
jobs reach the right queue, and a worker killed mid-job loses nothing (the run is graded
again by another worker and recorded once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.app import create_app
from server.models import GradingRun, TestResultRow

from server_course import Course

# The scaled-out setup (Celery workers, a shared database): SQLite and PostgreSQL both.
pytestmark = pytest.mark.every_database
REDIS_URL = "redis://127.0.0.1:6379/9"
HERE = Path(__file__).resolve().parent


@pytest.fixture
def redis_url():
    try:
        import redis
        r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        r.ping()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no Redis answers on 127.0.0.1:6379 ({e}); the broker path cannot be tested here")
    r.flushdb()
    yield REDIS_URL
    r.flushdb()


@pytest.fixture
def broker_course(tmp_path, course, redis_url, database_url):
    from server.config import Settings
    env = {"DLOPT_DATA_DIR": str(tmp_path / "data"), "DLOPT_ASSIGNMENTS_DIR": str(course),
           "DLOPT_BROKER_URL": redis_url, "DLOPT_GRADE_FUNCTION": "server_fakes:grade",
           "DLOPT_LEASE_SECONDS": "3", "DLOPT_DATABASE_URL": database_url, "DLOPT_FAKE_CALLS": str(tmp_path / "calls.log")}
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", assignments_dir=course, broker_url=redis_url,
                        database_url=database_url, grade_function="server_fakes:grade", lease_seconds=3.0)
    app = create_app(settings)
    workers: list[subprocess.Popen] = []

    def start_worker(queues: str = "cpu") -> subprocess.Popen:
        e = dict(os.environ, **env, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        p = subprocess.Popen([sys.executable, "-m", "autograder.cli", "worker", "--queues", queues],
                             env=e, stdout=open(tmp_path / f"worker-{len(workers)}.log", "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        workers.append(p)
        return p

    with TestClient(app) as client:
        c = Course(app, client)
        c.start_worker, c.tmp = start_worker, tmp_path
        yield c
    for p in workers:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    app.state.db.engine.dispose()


def run_of(c, sid):
    with c.app.state.db.session() as s:
        return s.scalar(select(GradingRun).where(GradingRun.submission_id == sid).order_by(GradingRun.id.desc()))


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_mid_job_loses_nothing(broker_course):
    c = broker_course
    first = c.start_worker("cpu")
    sid = c.submit("alice", "open", "# fake-sleep: 8\n# fake-score: 6\n").json()["submission"]["id"]
    wait_for(lambda: run_of(c, sid).status == "running", 60, "the first worker to take the job")
    assert run_of(c, sid).worker.startswith("celery@")
    # "running" is set when the job is claimed; on a loaded machine the grader may not have
    # started yet: kill only once it has (its call is logged), so the kill is really mid-job.
    log = c.tmp / "calls.log"
    wait_for(lambda: log.exists() and log.read_text().strip(), 60, "the first worker's grader to start")
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker, mid-job
    first.wait()
    c.start_worker("cpu")
    d = c.wait_graded(sid, timeout=90)
    run = run_of(c, sid)
    assert d["status"] == "done" and d["score"] == 6
    assert run.attempts == 2  # taken twice...
    with c.app.state.db.session() as s:  # ...recorded once
        assert s.scalar(select(func.count(TestResultRow.id)).where(TestResultRow.run_id == run.id)) == 3
        assert s.scalar(select(func.count(GradingRun.id))) == 1
    calls = (c.tmp / "calls.log").read_text().splitlines()
    assert len(calls) == 2, calls  # the killed attempt and the one that finished


def test_gpu_jobs_wait_for_a_gpu_worker_and_every_job_is_graded_once(broker_course):
    c = broker_course
    c.start_worker("cpu")
    cpu = [c.submit(w, "open", f"# fake-score: {i}\n").json()["submission"]["id"]
           for i, w in enumerate(["alice", "bob", "carol", "alice", "bob"])]
    gpu = c.submit("alice", "gpu_only", "# fake-score: 9\n").json()["submission"]["id"]
    for sid in cpu:
        c.wait_graded(sid, timeout=60)
    assert run_of(c, gpu).queue == "gpu" and run_of(c, gpu).status == "queued"  # no gpu worker yet
    c.start_worker("gpu")
    assert c.wait_graded(gpu, timeout=60)["score"] == 9
    calls = (c.tmp / "calls.log").read_text().splitlines()
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 6


def test_a_worker_takes_runs_in_turn_by_student_and_none_is_left_behind(broker_course):
    """Messages name runs; the worker takes the fairest run of the queue instead, and keeps
    taking until none is free: bob's run, queued after alice's three, is graded second,
    and alice's runs held back while one of hers ran are all graded, each once."""
    c = broker_course
    alice = [c.submit("alice", "late", f"# fake-sleep: 1\n# fake-score: {i}\n").json()["submission"]["id"]
             for i in range(3)]
    bob = c.submit("bob", "late", "# fake-score: 7\n").json()["submission"]["id"]
    c.start_worker("cpu")
    for sid in alice + [bob]:
        assert c.wait_graded(sid, timeout=90)["status"] == "done"
    with c.app.state.db.session() as s:
        runs = s.scalars(select(GradingRun).order_by(GradingRun.started_at)).all()
        assert [r.submission_id for r in runs] == [alice[0], bob, alice[1], alice[2]]
        assert all(r.attempts == 1 for r in runs)
    calls = (c.tmp / "calls.log").read_text().splitlines()
    assert len(calls) == 4 and len(set(calls)) == 4
