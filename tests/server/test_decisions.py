"""Staff decisions: extensions (a student's own deadline), score overrides, the flag review,
the release of hidden feedback, and what the student and the exports see of each."""

from __future__ import annotations

import csv
import io
import re

import pytest

from server.auth import COOKIE, csrf_for

from server_course import fake_source as src
from server_course import final_row as final

# The behaviour here rests on the database: SQLite and PostgreSQL both (conftest.py).
pytestmark = pytest.mark.every_database


def test_an_extension_moves_the_students_deadline_and_recounts_their_lateness(graded):
    c = graded  # "late": the deadline was 2.5 days ago, 10% a day, 3 days at most
    sid = c.submit("alice", "late", src(10)).json()["submission"]["id"]
    c.wait_graded(sid)
    assert final(c, "late", "alice")["score"] == 7.0  # 3 days late (2.5 rounded up): x 0.7
    me = c.get("alice", "/api/v1/assignments/late").json()
    assert me["state"] == "late" and me["days_late_now"] == 3 and me["penalty_now"] == pytest.approx(0.3)
    assert "late: −30% now, closes in" in me["state_summary"]

    r = c.post("ta1", "/api/v1/assignments/late/extensions", json={"login": "alice", "late_days": 3, "reason": ""})
    assert r.status_code == 422  # a reason is required
    r = c.post("ta1", "/api/v1/assignments/late/extensions",
               json={"login": "alice", "late_days": 3, "reason": "accommodation letter 12"})
    assert r.status_code == 201, r.text
    row = final(c, "late", "alice")
    assert row["score"] == 10.0 and row["extended"] and row["days_late"] == 0
    me = c.get("alice", "/api/v1/assignments/late").json()
    assert me["extended"] and me["state"] == "open" and me["deadline"] != me["course_deadline"]
    assert c.get("bob", "/api/v1/assignments/late").json()["state"] == "late"  # only alice's moved
    # the student's own pages say so
    c.sign_in("alice")
    page = c.client.get("/ui/assignments/late").text
    assert "Your deadline:" in page and 'id="extended"' in page and "late-warning" not in page
    c.client.cookies.clear()
    # recorded with who, when and why, in the student's history
    events = c.get("ta1", "/api/v1/assignments/late/students/alice/history").json()
    assert events[0]["kind"] == "extension" and events[0]["by"] == "ta1" and events[0]["reason"] == "accommodation letter 12"
    # withdrawn: the course deadline again, the lateness counted again
    r = c.post("ta1", "/api/v1/assignments/late/extensions", json={"login": "alice", "reason": "sent in error"})
    assert r.status_code == 201
    assert final(c, "late", "alice")["score"] == 7.0
    assert len(c.get("ta1", "/api/v1/assignments/late/students/alice/history").json()) == 2


def test_an_extension_opens_a_closed_assignment_to_that_student_only(graded):
    c = graded  # "closed": the deadline 5 days ago, 2 days accepted
    assert c.submit("alice", "closed", src(10)).status_code == 403
    from datetime import UTC, datetime, timedelta
    soon = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    r = c.post("ta1", "/api/v1/assignments/closed/extensions",
               json={"login": "alice", "deadline": soon.astimezone().isoformat(), "reason": "hospital"})
    assert r.status_code == 201
    assert datetime.fromisoformat(r.json()["deadline"]) == soon
    far = c.post("ta1", "/api/v1/assignments/closed/extensions",
                 json={"login": "alice", "deadline": "2099-01-01T12:00:00-05:00", "reason": "typo"})
    assert far.status_code == 422 and "two years" in far.json()["detail"]
    assert c.submit("alice", "closed", src(10)).status_code == 201
    assert c.submit("bob", "closed", src(10)).status_code == 403
    bad = c.post("ta1", "/api/v1/assignments/closed/extensions",
                 json={"login": "alice", "deadline": "2027-01-01T12:00:00", "reason": "no zone"})
    assert bad.status_code == 422 and "UTC offset" in bad.json()["detail"]
    assert c.post("ta1", "/api/v1/assignments/closed/extensions",
                  json={"login": "ta1", "late_days": 1, "reason": "x"}).status_code == 422  # not a student


def test_an_accommodation_list_is_imported_whole_or_not_at_all(graded):
    c = graded
    bad = "login,late_days,deadline,reason\nalice,2,,letter\nnobody,1,,x\nbob,,,x\ncarol,1,2030-01-01T00:00:00,x\n"
    r = c.post("ta1", "/api/v1/assignments/late/extensions.csv", files={"file": ("a.csv", bad)})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "line 4" in detail and "line 5" in detail  # every bad line, not only the first
    assert c.get("ta1", "/api/v1/assignments/late/extensions").json() == []
    r = c.post("ta1", "/api/v1/assignments/late/extensions.csv", files={"file": ("a.csv", bad)})
    good = "login,late_days,reason\nalice,2,letter A\nbob,1,\n"
    r = c.post("ta1", "/api/v1/assignments/late/extensions.csv", files={"file": ("a.csv", good)},
               data={"reason": "dean's list"})
    assert r.status_code == 201, r.text
    got = {e["login"]: e["reason"] for e in c.get("ta1", "/api/v1/assignments/late/extensions").json()}
    assert got == {"alice": "letter A", "bob": "dean's list"}


def test_an_override_is_kept_beside_the_graded_score_and_used_in_the_exports(graded):
    c = graded
    sid = c.submit("alice", "open", src(6)).json()["submission"]["id"]
    c.wait_graded(sid)
    r = c.post("ta1", "/api/v1/assignments/open/overrides", json={"login": "alice", "score": 11, "reason": "x"})
    assert r.status_code == 422  # more than the assignment's points
    r = c.post("ta1", "/api/v1/assignments/open/overrides",
               json={"login": "alice", "score": 9.5, "reason": "regraded question 3 by hand"})
    assert r.status_code == 201, r.text
    assert r.json()["graded_score"] == 6 and r.json()["final_score"] == 9.5
    row = final(c, "open", "alice")
    assert row["score"] == 9.5 and row["graded_score"] == 6 and row["override_reason"] == "regraded question 3 by hand"
    rows = list(csv.reader(io.StringIO(c.get("ta1", "/api/v1/assignments/open/scores.csv").text.lstrip("\ufeff"))))
    assert [r[2] for r in rows if r[0] == "alice"] == ["9.5"]
    # the student reads it, with the reason
    c.sign_in("alice")
    assert "regraded question 3 by hand" in c.client.get("/ui/assignments/open").text
    c.client.cookies.clear()
    # withdrawn: the graded score again
    c.post("ta1", "/api/v1/assignments/open/overrides", json={"login": "alice", "score": None, "reason": "undo"})
    assert final(c, "open", "alice")["score"] == 6


def test_a_flag_review_can_zero_a_function_and_the_student_is_told(graded):
    c = graded
    sid = c.submit("alice", "open", src(10, "# fake-flag\n")).json()["submission"]["id"]
    c.wait_graded(sid)
    queue = c.get("ta1", "/api/v1/assignments/open/flags").json()
    assert [q["submission_id"] for q in queue] == [sid] and not queue[0]["reviewed"]
    flag = queue[0]["flags"][0]
    assert flag["line"] == 2 and flag["where"] == "line 2"  # one line number everywhere
    # the review page opens on the flags, then the source with the flagged line marked
    c.sign_in("ta1")
    page = c.client.get(f"/ui/ta/submissions/{sid}/review").text
    assert page.index('id="flags"') < page.index('id="source"')
    assert "getattr with a computed name" in page and 'class="hll"' in page and "flagged line(s) 2" in page
    dash = c.client.get("/ui/ta/open").text
    assert "1 flagged submission(s) unreviewed" in dash
    csrf = csrf_for(c.client.cookies[COOKIE])
    r = c.client.post(f"/ui/ta/submissions/{sid}/review", data={"action": "zeroed", "function": "double",
                                                                "reason": "calls the library through getattr",
                                                                "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    assert "no flagged submission waits for review" in c.client.get("/ui/ta/open").text
    c.client.cookies.clear()
    assert c.get("ta1", "/api/v1/assignments/open/flags").json() == []
    assert c.get("ta1", "/api/v1/assignments/open/flags?unreviewed=false").json()[0]["reviews"][0]["action"] == "zeroed"
    # double's tests (test_hidden, 4 points) score 0: 10 - 4
    row = final(c, "open", "alice")
    assert row["score"] == 6 and row["function_overrides"] == {"double": 0}
    c.sign_in("alice")
    assert "calls the library through getattr" in c.client.get("/ui/assignments/open").text
    c.client.cookies.clear()
    assert c.get("ta1", "/api/v1/assignments/open/students/alice/history").json()[0]["kind"] in ("flag review", "override")


def test_hidden_feedback_is_released_and_hidden_again_from_the_page(graded):
    c = graded
    sid = c.submit("alice", "open", src(4)).json()["submission"]["id"]
    c.wait_graded(sid)

    def hidden_feedback():
        tests = {t["name"]: t for t in c.get("alice", f"/api/v1/submissions/{sid}").json()["run"]["tests"]}
        return tests["test_hidden"]["feedback"], tests["test_hidden"]["title"]

    assert hidden_feedback() == (None, "double of a hidden vector")
    secret = c.sign_in("ta1")
    r = c.client.post("/ui/ta/open/release", data={"released": "1", "csrf": csrf_for(secret)}, follow_redirects=True)
    assert "released to students" in r.text
    c.client.cookies.clear()
    assert hidden_feedback()[0].startswith("hidden feedback")
    c.post("ta1", "/api/v1/assignments/open/release", json={"released": False, "reason": "released by mistake"})
    assert hidden_feedback()[0] is None


def test_a_late_upload_from_the_page_states_the_penalty_and_needs_confirming(graded):
    c = graded
    secret = c.sign_in("alice")
    page = c.client.get("/ui/assignments/late").text
    assert 'id="late-warning"' in page and "3 day(s) late" in page and "−30%" in page
    assert "a day that has begun counts as a whole day" in page
    files = {"file": ("s.py", src(10).encode())}
    r = c.client.post("/ui/assignments/late/submit", data={"csrf": csrf_for(secret)}, files=files)
    assert r.status_code == 409 and "late by 3 day(s)" in r.text and "multiplied by 0.7" in r.text
    r = c.client.post("/ui/assignments/late/submit", data={"csrf": csrf_for(secret), "accept_days_late": "3"},
                      files=files, follow_redirects=False)
    assert r.status_code == 303
    home = c.client.get("/ui").text
    assert re.search(r'data-state="late">late: −30% now, closes in', home)
    assert re.search(r'data-state="closed">closed', home) and re.search(r'data-state="open">open, due in', home)
    assert "<time datetime=" in home and "data-local" in home
    c.client.cookies.clear()


def test_the_dashboard_drills_into_a_test_and_sorts_filters_and_pages(graded):
    c = graded
    logins = [f"s{i:03d}" for i in range(120)]
    roster = "login,name\n" + "".join(f"{x},Student {x}\n" for x in logins)
    c.post("admin", "/api/v1/roster", files={"file": ("r.csv", roster)})
    for who, score in (("alice", 4), ("bob", 10), ("carol", 5)):
        c.wait_graded(c.submit(who, "open", src(score)).json()["submission"]["id"])
    c.sign_in("ta1")
    dash = c.client.get("/ui/ta/open").text
    assert 'href="/ui/ta/open/tests/test_hidden"' in dash  # each bar leads to who fails it
    drill = c.client.get("/ui/ta/open/tests/test_hidden").text
    assert "1 of 3 final submissions pass it" in drill
    assert "<b>2</b> student(s)" in drill and "alice" in drill and "carol" in drill and "hidden feedback" in drill
    page1 = c.client.get("/ui/ta/open?sort=score&desc=true").text
    rows = re.findall(r'<a href="/ui/ta/open/students/([a-z0-9]+)">', page1)
    assert rows[:3] == ["bob", "carol", "alice"] and len(rows) == 50
    assert "Page 1 of 3" in page1
    page3 = c.client.get("/ui/ta/open?page=3").text
    assert len(re.findall(r'<a href="/ui/ta/open/students/', page3)) == 123 - 100
    none = c.client.get("/ui/ta/open?show=none").text
    assert "120 student(s)" in none and "/students/alice" not in none
    c.client.cookies.clear()
    # a regrade message says how many were queued
    secret = c.sign_in("ta1")
    r = c.client.post("/ui/ta/open/regrade", data={"csrf": csrf_for(secret), "only_failed": "1"}, follow_redirects=True)
    assert "Nothing to regrade" in r.text
    c.client.cookies.clear()


def test_roster_lines_are_all_reported_and_tokens_download_once_as_csv(graded):
    c = graded
    r = c.post("ta1", "/api/v1/roster", files={"file": ("r.csv", "login,role\nok1,\n../x,\nok1,\nz,wizard\n")})
    assert r.status_code == 422
    assert all(f"line {i}" in r.json()["detail"] for i in (3, 4, 5)), r.json()["detail"]
    secret = c.sign_in("ta1")
    page = c.client.post("/ui/roster", data={"csrf": csrf_for(secret)},
                         files={"file": ("r.csv", "login,name,lms_id\nnew1,New One,4242\n")}).text
    link = re.search(r'href="(/ui/roster/tokens/[^"]+\.csv)"', page).group(1)
    first = c.client.get(link)
    assert first.status_code == 200 and "new1,New One,,dlopt_" in first.text.replace("\ufeff", "")
    assert c.client.get(link).status_code == 404  # once
    c.client.cookies.clear()
    # Canvas's ID column comes from the roster's lms_id; a title with commas stays whole
    text = c.get("ta1", "/api/v1/assignments/open/scores.csv?format=canvas").text.lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[1] for r in rows if r[2] == "new1"] == ["4242"]


def test_an_upload_defining_none_of_the_graded_functions_is_refused_before_it_counts():
    """With a master (adam's), the functions it defines are the ones graded: an upload
    defining none of them (the wrong file, an unsaved notebook) is refused with the names."""
    from datetime import UTC, datetime
    from pathlib import Path
    from types import SimpleNamespace

    from server.service import unreadable_code

    repo = Path(__file__).resolve().parents[2]
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(assignments_dir=repo / "assignments")))
    a = SimpleNamespace(slug="adam", loaded_at=datetime.now(UTC))
    why = unreadable_code(app, a, "wrong.py", b"def double(x):\n    return 2 * x\n")
    assert why and "defines none of the functions adam grades" in why and "was it saved" in why
    master_names = ("def adam_step", "class AdamW")
    src = (repo / "assignments" / "adam" / "examples" / "correct_alternative.py").read_bytes()
    assert any(n.encode() in src for n in master_names)
    assert unreadable_code(app, a, "mine.py", src) is None
    assert "syntax error at line 2" in unreadable_code(app, a, "bad.py", b"x = 1\ndef f(:\n")


def test_the_canvas_export_keeps_a_title_with_commas_whole():
    from server.schemas import ScoreRow, ScoreTable
    from server.service import scores_csv

    table = ScoreTable(assignment="adam", policy="best", points=10, rows=[
        ScoreRow(login="alice", name="Alice, A.", lms_id="101", score=9.5, max_score=10, submission_id=1, late=False,
                 days_late=0, submissions=1, pending=0)])
    rows = list(csv.reader(io.StringIO(scores_csv(table, "canvas", "Adam, AdamW and SGD", "77"))))
    assert rows[0][-1] == "Adam, AdamW and SGD (77)" and rows[2] == ["Alice, A.", "101", "alice", "alice", "", "9.5"]
