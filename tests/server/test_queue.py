"""The queue: a run is claimed by one worker, recorded once, resumed after a crash or a
restart, failed with a reason after its attempts; the real engine end to end."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from autograder.judge.results import SubmissionResult
from server.app import create_app
from server.models import GradingRun, TestResultRow, utcnow

# The behaviour here rests on the database: SQLite and PostgreSQL both (conftest.py).
pytestmark = pytest.mark.every_database


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
    refused = c.submit("carol", "open", "def double(x) return\n")  # refused before it counts (a student's upload)
    assert refused.status_code == 422 and "syntax error at line 1" in refused.json()["detail"]
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # a TA's batch grades it as it stands
        zf.writestr("carol.py", "def double(x) return\n")
    e = c.post("ta1", "/api/v1/assignments/open/batch", files={"file": ("b.zip", buf.getvalue())}).json()["by_login"]["carol"]
    da, db_, de = (c.wait_graded(i, timeout=120) for i in (a, b, e))
    assert (da["score"], da["max_score"]) == (10, 10)
    assert db_["score"] == 4  # double wrong (2 + 4 lost), square missing... only the grader-bug test's 4 points
    assert de["score"] == 0 and de["run"]["error"] is None and de["run"]["notes"]  # explained, not crashed
    staff = c.get("ta1", f"/api/v1/submissions/{a}").json()["run"]
    assert staff["engine_version"] and staff["runner"] == "local" and "strong" in staff["sandbox"]


# -- fairness: one running run per student, round-robin among students, a bounded queue ----
def add_queued_runs(c, who: str, n: int, slug: str = "open") -> list[int]:
    """`n` queued runs of `who`'s uploads, written straight into the database (as if the
    upload limits had let them through)."""
    from server.models import AssignmentRow, Submission, User
    with c.app.state.db.session() as s:
        user = s.scalar(select(User).where(User.login == who))
        a = s.scalar(select(AssignmentRow).where(AssignmentRow.slug == slug))
        runs = []
        for i in range(n):
            sub = Submission(user_id=user.id, assignment_id=a.id, filename=f"s{i}.py", kind="py",
                             content_hash="0" * 64, size=1)
            run = GradingRun(submission=sub, reason="submit", status="queued", queue="cpu", enqueued_at=utcnow())
            s.add(run)
            runs.append(run)
        s.commit()
        return [r.id for r in runs]


def owner(c, run_id: int) -> str:
    with c.app.state.db.session() as s:
        return s.get(GradingRun, run_id).submission.user.login


def test_one_students_forty_uploads_delay_another_student_by_at_most_one_run(course_app):
    """The queue-monopoly attack: alice has 40 runs queued before bob's one; a single
    worker takes bob's run second (right after the run it had started), not 41st."""
    c = course_app
    q = c.app.state.queue
    alice = add_queued_runs(c, "alice", 40)
    first = q.claim_next(("cpu", "gpu"), "w1")
    assert first is not None and first[0] == alice[0]
    bob = queued_run(c, "bob")  # bob uploads while alice's first run is being graded
    order = [first[0]]
    done = SubmissionResult(assignment="open", submission="x", score=1, max_score=10)
    assert q.record(first[0], "w1", first[1], done)
    while (taken := q.claim_next(("cpu", "gpu"), "w1")) is not None:
        order.append(taken[0])
        assert q.record(taken[0], "w1", taken[1], done)
    assert order.index(bob) == 1  # waited for one run: the one the worker was already grading
    assert sorted(order) == sorted(alice + [bob])  # and every run was taken once

    # Both students with many runs: taken in turn, one of each.
    add_queued_runs(c, "alice", 3)
    add_queued_runs(c, "bob", 3)
    turns = []
    while (taken := q.claim_next(("cpu",), "w1")) is not None:
        turns.append(owner(c, taken[0]))
        q.record(taken[0], "w1", taken[1], done)
    assert len(turns) == 6 and all(turns[i] != turns[i + 1] for i in range(5)), turns


def test_with_two_workers_one_student_holds_at_most_one(course_app):
    """Two workers: alice's 40 runs take one worker at a time; the other is free for bob,
    whose run is taken at once, though all of alice's were queued first."""
    c = course_app
    q = c.app.state.queue
    alice = add_queued_runs(c, "alice", 40)
    bob = add_queued_runs(c, "bob", 1)[0]
    one, two = q.claim_next(("cpu",), "w1"), q.claim_next(("cpu",), "w2")
    assert (one[0], two[0]) == (alice[0], bob)
    assert q.claim_next(("cpu",), "w3") is None  # a third worker finds no student free


def test_a_students_second_run_waits_while_their_first_runs(course_app):
    c = course_app
    q = c.app.state.queue
    first, second = add_queued_runs(c, "alice", 2)
    assert q.claim(first, "w1") == 1
    assert q.claim(second, "w2") is None  # alice already has a run running
    assert second not in q.next_queued(("cpu", "gpu"))
    assert q.claim_next(("cpu", "gpu"), "w2") is None
    # her first run's worker dies: once its lease is past, the second may be taken
    with c.app.state.db.session() as s:
        s.execute(update(GradingRun).where(GradingRun.id == first).values(lease_until=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert q.claim_next(("cpu", "gpu"), "w2") == (second, 1)
    # a run on the other queue (a GPU assignment) is not held back by a cpu run
    gpu = add_queued_runs(c, "alice", 1, slug="gpu_only")[0]
    with c.app.state.db.session() as s:
        s.execute(update(GradingRun).where(GradingRun.id == gpu).values(queue="gpu"))
        s.commit()
    assert q.claim_next(("cpu", "gpu"), "w3") == (gpu, 1)


def test_racing_workers_never_run_two_of_one_students_runs(course_app):
    c = course_app
    q = c.app.state.queue
    runs = add_queued_runs(c, "alice", 8)
    wins, barrier = [], threading.Barrier(8)

    def race(i):
        barrier.wait()
        if q.claim(runs[i], f"w{i}") is not None:
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_the_embedded_pool_is_fair(make_course):
    """End to end with one embedded worker: bob's upload, sent after alice's five, is
    graded second."""
    c = make_course(workers=0)
    alice = [c.submit("alice", "late", "# fake-sleep: 0.2\n# fake-score: 3\n").json()["submission"]["id"]
             for _ in range(5)]
    bob = c.submit("bob", "late", "# fake-score: 5\n").json()["submission"]["id"]
    c.client.__exit__(None, None, None)
    from fastapi.testclient import TestClient
    app = create_app(c.app.state.settings.model_copy(update={"workers": 1}))
    with TestClient(app):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            with app.state.db.session() as s:
                if s.scalar(select(func.count(GradingRun.id)).where(GradingRun.status == "done")) == 6:
                    break
            time.sleep(0.1)
        with app.state.db.session() as s:
            runs = s.scalars(select(GradingRun).order_by(GradingRun.started_at)).all()
            assert [r.submission_id for r in runs][:2] == [alice[0], bob]
            assert all(r.status == "done" for r in runs)


def test_a_students_queued_uploads_are_bounded_but_not_staff_runs(make_course):
    c = make_course(workers=0, max_queued_per_student=3)
    for _ in range(3):
        assert c.submit("alice", "late").status_code == 201
    r = c.submit("alice", "past_last")  # the bound counts every assignment
    assert r.status_code == 429 and "3 submission(s) waiting to be graded" in r.json()["detail"]
    assert c.submit("bob", "late").status_code == 201  # another student is not affected
    # a TA's regrade and batch are not refused, and do not count against her uploads
    sub = c.get("alice", "/api/v1/submissions").json()[0]["id"]
    assert c.post("ta1", f"/api/v1/submissions/{sub}/regrade").status_code == 202
    from test_submissions import zip_of
    assert c.post("ta1", "/api/v1/assignments/late/batch",
                  files={"file": ("b.zip", zip_of({"alice.py": "x = 1\n"}))}).status_code == 201
    # once one of her uploads is graded, she may upload again
    q = c.app.state.queue
    taken = q.claim_next(("cpu",), "w1")
    q.record(taken[0], "w1", taken[1], SubmissionResult(assignment="late", submission="x"))
    assert c.submit("alice", "late").status_code == 201
