"""The kernel boards' page (server/boards.py): best verified time per student, devices apart,
anonymous unless named, frozen at the deadline, staff removal with a reason, re-time, and
the baselines' rows. Board results come from the scripted grader (`# fake-board:`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import write_assignment

BOARDS = '''[[boards]]
name = "flash"
function = "double"
timed = "forward, bf16"
shapes = [{b = 1, h = 2, n = 64, d = 16, causal = true}]
'''


@pytest.fixture
def kernels(course, make_course):
    now = datetime.now(UTC)
    write_assignment(course, "kernels", deadline=now + timedelta(days=3), extra=BOARDS)
    write_assignment(course, "kernels_done", deadline=now - timedelta(hours=1), extra=BOARDS,
                     late="grace_minutes = 0\npenalty_per_day = 0.1\nmax_days_late = 5")
    return make_course(workers=1)


def submit(c, who, slug, *lines):
    r = c.submit(who, slug, text="".join(f"# fake-board: {x}\n" for x in lines) + "def double(x):\n    return 2 * x\n")
    assert r.status_code == 201, r.text
    sub = r.json()["submission"]["id"]
    c.wait_graded(sub)
    return sub


def page(c, who, url):
    c.sign_in(who)
    r = c.client.get(url)
    assert r.status_code == 200, r.text[:300]
    return r.text


def form(c, who, url, **data):
    """A form posted by `who` signed in, with the page's CSRF value."""
    from server.auth import csrf_for

    secret = c.sign_in(who)
    return c.client.post(url, data={**data, "csrf": csrf_for(secret)}, follow_redirects=False)


def rows(html: str, table: str) -> str:
    start = html.index(f'id="table-flash-{table}"')
    return html[start:html.index("</table>", start)]


def test_best_time_per_student_devices_apart_anonymous_and_baselines(kernels):
    c = kernels
    submit(c, "alice", "kernels", "flash=0.002@NVIDIA H100 80GB HBM3")
    submit(c, "alice", "kernels", "flash=0.001@NVIDIA H100 80GB HBM3")
    submit(c, "bob", "kernels", "flash=0.0015@NVIDIA H100 80GB HBM3", "flash=0.0005@NVIDIA H200")
    submit(c, "bob", "kernels", "flash=none@NVIDIA H100 80GB HBM3", "flash=0.0001@cpu")
    html = page(c, "alice", "/ui/assignments/kernels/boards")
    h100 = rows(html, 1)
    assert "NVIDIA H100" in h100 and "NVIDIA H200" not in h100
    # alice's best (1.000 ms) ranks above bob's 1.500; her 2.000 and bob's failed check are not rows
    assert h100.index("1.000") < h100.index("1.500") and "2.000" not in h100
    assert "(you)" in h100 and "alice" not in h100 and "bob" not in html  # anonymous, no logins for students
    assert "course reference (Triton)" in h100 and "PyTorch SDPA" in h100
    h200 = rows(html, 2)
    assert "0.500" in h200 and "1.000" not in h200
    assert "0.100" not in html  # CPU checks never rank
    staff = page(c, "ta1", "/ui/assignments/kernels/boards")
    assert "alice" in rows(staff, 1) and "bob" in rows(staff, 1)


def test_a_student_may_choose_a_name(kernels):
    c = kernels
    submit(c, "alice", "kernels", "flash=0.001@NVIDIA H100")
    assert "anonymous" in rows(page(c, "bob", "/ui/assignments/kernels/boards"), 1)
    r = form(c, "alice", "/ui/assignments/kernels/boards/name", name="  Flash   Gordon ")
    assert r.status_code == 303
    html = rows(page(c, "bob", "/ui/assignments/kernels/boards"), 1)
    assert "Flash Gordon" in html and "anonymous" not in html
    form(c, "alice", "/ui/assignments/kernels/boards/name", name="")
    assert "Flash Gordon" not in page(c, "bob", "/ui/assignments/kernels/boards")


def test_frozen_at_the_deadline(kernels):
    c = kernels
    submit(c, "alice", "kernels_done", "flash=0.001@NVIDIA H100")  # late: after the board froze
    html = page(c, "alice", "/ui/assignments/kernels_done/boards")
    assert 'id="frozen"' in html and "1.000" not in html and "No verified time yet" in html


def test_staff_take_a_submission_off_with_a_reason_and_put_it_back(kernels):
    c = kernels
    submit(c, "alice", "kernels", "flash=0.001@NVIDIA H100")
    bob = submit(c, "bob", "kernels", "flash=0.0008@NVIDIA H100")
    r = form(c, "ta1", f"/ui/ta/submissions/{bob}/board", board="flash", action="remove", reason="")
    assert r.status_code == 400 and "reason" in r.text
    r = form(c, "ta1", f"/ui/ta/submissions/{bob}/board", board="flash", action="remove", reason="hard-coded shapes")
    assert r.status_code == 303
    assert "0.800" not in page(c, "alice", "/ui/assignments/kernels/boards")
    form(c, "ta1", f"/ui/ta/submissions/{bob}/board", board="flash", action="restore", reason="cleared on review")
    assert "0.800" in page(c, "alice", "/ui/assignments/kernels/boards")
    # students cannot take anyone off
    r = form(c, "alice", f"/ui/ta/submissions/{bob}/board", board="flash", action="remove", reason="x")
    assert r.status_code in (401, 403, 404)


def test_retime_queues_a_new_run(kernels):
    c = kernels
    sub = submit(c, "alice", "kernels", "flash=0.001@NVIDIA H100")
    before = c.get("ta1", f"/api/v1/submissions/{sub}").json()["run"]["id"]
    r = form(c, "ta1", f"/ui/ta/submissions/{sub}/board", board="flash", action="retime")
    assert r.status_code == 303 and "retimed" in r.headers["location"]
    assert c.get("ta1", f"/api/v1/submissions/{sub}").json()["run"]["id"] > before


def test_a_cleared_flag_lets_the_next_run_time_the_boards(kernels):
    """The engine withholds a flagged submission's boards; once a TA clears the flags, the
    re-time asks the engine to time them (flags_cleared); a note does not."""
    c = kernels
    sub = submit(c, "alice", "kernels", "flash=0.001@NVIDIA H100")
    form(c, "ta1", f"/ui/ta/submissions/{sub}/board", board="flash", action="retime")
    assert "flags cleared" not in str(c.wait_graded(sub))
    assert form(c, "ta1", f"/ui/ta/submissions/{sub}/review", action="cleared",
                reason="its stream is a legitimate overlap").status_code == 303
    form(c, "ta1", f"/ui/ta/submissions/{sub}/review", action="note", reason="looked again")
    form(c, "ta1", f"/ui/ta/submissions/{sub}/board", board="flash", action="retime")
    assert "graded with its flags cleared by a TA" in str(c.wait_graded(sub))
