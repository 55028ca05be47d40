"""Results as each role sees them, the final score per student, and the exports."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import pytest

# The behaviour here rests on the database: SQLite and PostgreSQL both (conftest.py).
pytestmark = pytest.mark.every_database


def src(score: float) -> str:
    return f"# fake-score: {score}\ndef double(x):\n    return 2 * x\n"


def test_students_see_hidden_tests_as_score_only_and_staff_see_everything(graded):
    c = graded
    sid = c.submit("alice", "open", src(10)).json()["submission"]["id"]
    c.wait_graded(sid)
    mine = c.get("alice", f"/api/v1/submissions/{sid}").json()
    assert mine["status"] == "done" and mine["score"] == 10 and mine["max_score"] == 10
    tests = {t["name"]: t for t in mine["run"]["tests"]}
    assert tests["test_public"]["feedback"] == "public feedback"
    assert tests["test_hidden"]["feedback"] is None and tests["test_hidden"]["points"] == 4
    assert tests["test_after"]["feedback"] is None  # before the deadline
    assert mine["run"]["grader_errors"] is None and mine["run"]["sandbox"] is None and mine["run"]["worker"] is None
    staff = c.get("ta1", f"/api/v1/submissions/{sid}").json()
    assert {t["name"]: t["feedback"] for t in staff["run"]["tests"]}["test_hidden"].startswith("hidden feedback")
    assert staff["run"]["worker"].startswith("embedded@") and staff["run"]["sandbox"] == {"strong": False, "runner": "fake"}
    assert staff["run"]["engine_version"] == "fake" and staff["run"]["attempts"] == 1


def test_after_the_deadline_the_rules_open_up(graded):
    c = graded  # past_last: deadline an hour ago, feedback_after_deadline = true
    sid = c.submit("alice", "past_last", src(7)).json()["submission"]["id"]
    c.wait_graded(sid)
    tests = {t["name"]: t for t in c.get("alice", f"/api/v1/submissions/{sid}").json()["run"]["tests"]}
    assert tests["test_after"]["feedback"] == "after-deadline feedback"
    assert tests["test_hidden"]["feedback"].startswith("hidden feedback")
    # "late" has a passed deadline but no feedback_after_deadline: hidden stays hidden
    sid = c.submit("alice", "late", src(7)).json()["submission"]["id"]
    c.wait_graded(sid)
    tests = {t["name"]: t for t in c.get("alice", f"/api/v1/submissions/{sid}").json()["run"]["tests"]}
    assert tests["test_after"]["feedback"] == "after-deadline feedback" and tests["test_hidden"]["feedback"] is None


def test_final_scores_by_policy_with_late_penalty(graded):
    c = graded
    ids = [c.submit("alice", "open", src(s)).json()["submission"]["id"] for s in (6, 9, 7)]
    ids += [c.submit("bob", "late", src(10)).json()["submission"]["id"]]  # late 3 days: x 0.7
    ids += [c.submit("bob", "past_last", src(s)).json()["submission"]["id"] for s in (9, 5)]  # last, 1 day late
    for i in ids:
        c.wait_graded(i)
    rows = {r["login"]: r for r in c.get("ta1", "/api/v1/assignments/open/scores").json()["rows"]}
    assert rows["alice"]["score"] == 9 and rows["alice"]["submission_id"] == ids[1] and rows["alice"]["submissions"] == 3
    assert rows["bob"]["score"] is None and rows["carol"]["score"] is None  # nothing submitted
    late = {r["login"]: r for r in c.get("ta1", "/api/v1/assignments/late/scores").json()["rows"]}
    assert late["bob"]["score"] == pytest.approx(7.0) and late["bob"]["late"] and late["bob"]["days_late"] == 3
    last = {r["login"]: r for r in c.get("ta1", "/api/v1/assignments/past_last/scores").json()["rows"]}
    assert last["bob"]["score"] == pytest.approx(5 * 0.75) and last["bob"]["submission_id"] == ids[-1]
    # the student's own view shows the penalty too
    mine = c.get("bob", f"/api/v1/submissions/{ids[3]}").json()
    assert mine["score"] == 10 and mine["final_score"] == pytest.approx(7.0)


def test_csv_and_gradescope_exports(graded):
    c = graded
    c.wait_graded(c.submit("alice", "late", src(8)).json()["submission"]["id"])
    r = c.get("ta1", "/api/v1/assignments/late/scores.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith("\ufeff".encode())  # UTF-8 with a byte-order mark
    rows = {row["login"]: row for row in csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")))}
    assert set(rows) == {"alice", "bob", "carol"}  # every student, graded or not
    assert float(rows["alice"]["late"]) == pytest.approx(8 * 0.7) and rows["bob"]["late"] == ""
    assert rows["alice"]["late_days"] == "3" and rows["alice"]["max_points"] == "10"
    z = zipfile.ZipFile(io.BytesIO(c.get("ta1", "/api/v1/assignments/late/gradescope.zip").content))
    assert z.namelist() == ["alice/results.json"]
    gs = json.loads(z.read("alice/results.json"))
    # Gradescope's results.json: score, tests with name/score/max_score/output/visibility
    assert gs["score"] == pytest.approx(5.6) and "late by 3 day(s)" in gs["output"]
    assert {t["visibility"] for t in gs["tests"]} == {"visible", "hidden", "after_due_date"}
    assert all({"name", "score", "max_score", "output", "status"} <= set(t) for t in gs["tests"])
    from test_results import validate_gradescope
    validate_gradescope(gs)


def _lms(c, fmt, **params):
    r = c.get("ta1", "/api/v1/assignments/late/scores.csv", params={"format": fmt, **params})
    assert r.status_code == 200, r.text
    return list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))


def test_canvas_import_rules(graded):
    """Canvas's gradebook import (its CSV documentation): the header starts Student, ID,
    SIS User ID, SIS Login ID, Section; then one column per assignment, `Title (id)` for an
    existing one; an optional "Points Possible" row; nothing else numeric (it would become
    an assignment); every student row matched by an identifier."""
    c = graded
    c.wait_graded(c.submit("alice", "late", src(8)).json()["submission"]["id"])
    rows = _lms(c, "canvas", lms_id="1234")
    header, points, students = rows[0], rows[1], rows[2:]
    assert header[:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assert len(header) == 6 and re.fullmatch(r".+ \(\d+\)", header[5]), header
    assert points[0].strip() == "Points Possible" and points[5] == "10"
    by_login = {r[3]: r for r in students}
    assert set(by_login) == {"alice", "bob", "carol"} and all(r[2] == r[3] for r in students)
    assert float(by_login["alice"][5]) == pytest.approx(5.6) and by_login["bob"][5] == ""
    assert _lms(c, "canvas")[0][5] == "Probe late"  # no id: a new column named by the title


def test_blackboard_and_moodle_import_rules(graded):
    """Blackboard's Grade Center upload: a Username column and `Title [Total Pts: N Score]`
    (`|id` appended for an existing column); Moodle's grade import: a column it maps to
    username, and the grade column."""
    c = graded
    c.wait_graded(c.submit("alice", "late", src(8)).json()["submission"]["id"])
    bb = _lms(c, "blackboard")
    assert bb[0][0] == "Username" and re.fullmatch(r".+ \[Total Pts: 10 Score\]", bb[0][1]) and len(bb[0]) == 2
    assert _lms(c, "blackboard", lms_id="_77_1")[0][1].endswith("|_77_1")
    md = _lms(c, "moodle")
    assert md[0] == ["Username", "Probe late"]
    assert {r[0]: r[1] for r in md[1:]}["alice"] == "5.6"
    r = c.get("ta1", "/api/v1/assignments/late/scores.csv", params={"format": "excel"})
    assert r.status_code == 422


def test_regrade_makes_a_new_run_and_failed_runs_are_listed(graded):
    c = graded
    sid = c.submit("alice", "open", "# fake-raise\n").json()["submission"]["id"]
    d = c.wait_graded(sid)
    assert d["status"] == "done" and "grader failed" in d["run"]["error"]  # an engine crash is a result
    failed = c.get("ta1", "/api/v1/runs/failed?assignment=open").json()
    assert [f["submission_id"] for f in failed] == [sid] and "the engine broke" in failed[0]["grader_errors"][0]
    assert "the engine broke" not in json.dumps(c.get("alice", f"/api/v1/submissions/{sid}").json())
    r = c.post("ta1", f"/api/v1/submissions/{sid}/regrade")
    assert r.status_code == 202
    run_id = r.json()["runs"][0]
    d = c.wait_graded(sid)
    assert d["run"]["id"] == run_id and d["run"]["reason"] == "regrade"
    r = c.post("ta1", "/api/v1/assignments/open/regrade?only_failed=true")
    assert len(r.json()["runs"]) == 1
    c.wait_graded(sid)
    assert len(c.post("ta1", "/api/v1/assignments/open/regrade").json()["runs"]) == 1
