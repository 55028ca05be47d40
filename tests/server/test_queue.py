"""The queue: a run is claimed by one worker, recorded once, resumed after a crash or a
restart, failed with a reason after its attempts; the real engine end to end."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from autograder.judge.results import SubmissionResult
from server.app import create_app
from server.models import GradingRun, TestResultRow, utcnow


def queued_run(c, who="alice", slug="open", text="# fake-score: 8\n") -> int:
    sid = c.submit(who, slug, text).json()["submission"]["id"]
    return c.get("admin", f"/api/v1/submissions/{sid}").json()["run"]["id"]


def test_one_claim_wins_among_racing_workers(course_app):
    c = course_app
    run_id = queued_run(c)
    q = c.app.state.queue
    wins, barrier = [], threading.Barrier(8)

    def race(i):
        barrier.wait()
        if q.claim(run_id, f"w{i}") is not None:
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_result_is_recorded_once_and_only_by_the_holder(course_app):
    c = course_app
    run_id = queued_run(c)
    q = c.app.state.queue
    attempt = q.claim(run_id, "w1")
    r = SubmissionResult(assignment="open", submission="x", score=1, max_score=10)
    assert not q.record(run_id, "w2", attempt, r)  # not the holder
    assert not q.record(run_id, "w1", attempt + 1, r)  # not this attempt
    assert q.record(run_id, "w1", attempt, r)
    assert not q.record(run_id, "w1", attempt, r)  # a second delivery of the same job
    with c.app.state.db.session() as s:
        run = s.get(GradingRun, run_id)
        assert run.status == "done" and run.score == 1


def test_a_worker_that_dies_mid_job_loses_nothing(course_app):
    c = course_app
    run_id = queued_run(c)
    q = c.app.state.queue
    assert q.claim(run_id, "dead-worker") == 1  # ...and then it dies: no heartbeat, no record
    assert q.claim(run_id, "w2") is None  # the lease still holds
    with c.app.state.db.session() as s:  # time passes
        s.execute(update(GradingRun).where(GradingRun.id == run_id).values(lease_until=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert q.reap() == [run_id]
    assert q.execute(run_id, "w2") == "graded"
    # the dead worker comes back to life and tries to record: refused
    assert not q.record(run_id, "dead-worker", 1, SubmissionResult(assignment="open", submission="x"))
    with c.app.state.db.session() as s:
        run = s.get(GradingRun, run_id)
        assert run.status == "done" and run.attempts == 2 and run.worker == "w2" and run.score == 8
        assert s.scalar(select(func.count(TestResultRow.id)).where(TestResultRow.run_id == run_id)) == 3


def test_a_run_that_keeps_killing_workers_fails_with_a_reason(course_app):
    c = course_app
    run_id = queued_run(c)
    q = c.app.state.queue
    for i in range(q.settings.max_attempts):
        assert q.claim(run_id, f"w{i}") == i + 1
        with c.app.state.db.session() as s:
            s.execute(update(GradingRun).where(GradingRun.id == run_id).values(lease_until=utcnow() - timedelta(seconds=1)))
            s.commit()
        q.reap()
    sub = c.get("alice", "/api/v1/submissions").json()[0]
    assert sub["status"] == "failed" and "3 times" in sub["run"]["error"]
    assert run_id in [f["run_id"] for f in c.get("ta1", "/api/v1/runs/failed").json()]


def test_the_lease_is_renewed_while_grading(make_course):
    c = make_course(workers=1, lease_seconds=1.0)
    sid = c.submit("alice", "open", "# fake-sleep: 2.5\n# fake-score: 4\n").json()["submission"]["id"]
    d = c.wait_graded(sid, timeout=30)
    assert d["status"] == "done" and d["score"] == 4 and d["run"]["attempts"] == 1  # never taken over


def test_a_restarted_server_resumes_unfinished_jobs(make_course, settings_for):
    c = make_course(workers=0)
    ids = [c.submit("alice", "open", f"# fake-score: {s}\n").json()["submission"]["id"] for s in (3, 5)]
    run = c.get("admin", f"/api/v1/submissions/{ids[0]}").json()["run"]["id"]
    # the first was being graded by an embedded worker of the server that died
    c.app.state.queue.claim(run, "embedded@oldhost:1:1")
    c.client.__exit__(None, None, None)
    from fastapi.testclient import TestClient
    app = create_app(settings_for(workers=2))
    with TestClient(app):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with app.state.db.session() as s:
                if s.scalar(select(func.count(GradingRun.id)).where(GradingRun.status == "done")) == 2:
                    break
            time.sleep(0.1)
        with app.state.db.session() as s:
            runs = s.scalars(select(GradingRun).order_by(GradingRun.id)).all()
            assert [(r.status, r.score) for r in runs] == [("done", 3), ("done", 5)]
            assert runs[0].attempts == 2


def test_the_real_engine_end_to_end(make_course):
    """A real submission through the real engine and sandbox (the probe suite, 10 points)."""
    c = make_course(workers=1, grade_function="autograder.grading:grade")
    good = "def double(x):\n    return 2 * x\n\ndef square(v):\n    return v * v\n"
    a = c.submit("alice", "open", good).json()["submission"]["id"]
    b = c.submit("bob", "open", "def double(x):\n    return 3 * x\n").json()["submission"]["id"]
    e = c.submit("carol", "open", "def double(x) return\n").json()["submission"]["id"]
    da, db_, de = (c.wait_graded(i, timeout=120) for i in (a, b, e))
    assert (da["score"], da["max_score"]) == (10, 10)
    assert db_["score"] == 4  # double wrong (2 + 4 lost), square missing... only the grader-bug test's 4 points
    assert de["score"] == 0 and de["run"]["error"] is None and de["run"]["notes"]  # explained, not crashed
    staff = c.get("ta1", f"/api/v1/submissions/{a}").json()["run"]
    assert staff["engine_version"] and staff["runner"] == "local" and "strong" in staff["sandbox"]
