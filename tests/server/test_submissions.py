"""Submitting: what is accepted, what is refused with which status, and that a refusal
changes nothing (no row, no stored file)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import nbformat
import pytest
from sqlalchemy import func, select

from server.models import GradingRun, Submission

# The behaviour here rests on the database: SQLite and PostgreSQL both (conftest.py).
pytestmark = pytest.mark.every_database

GOOD = "def double(x):\n    return 2 * x\n"


def notebook(code: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# my work"), nbformat.v4.new_code_cell(code)]
    return nbformat.writes(nb).encode()


def counts(c) -> tuple[int, int, int]:
    store = Path(c.app.state.settings.store)
    files = sum(1 for p in store.rglob("*") if p.is_file())
    with c.app.state.db.session() as s:
        return (s.scalar(select(func.count(Submission.id))), s.scalar(select(func.count(GradingRun.id))), files)


def test_a_submission_is_stored_by_hash_and_queued_before_the_call_returns(course_app):
    c = course_app
    r = c.submit("alice", "open", GOOD, "my notebook.ipynb" if False else "sol.py")
    assert r.status_code == 201, r.text
    body = r.json()
    sub = body["submission"]
    assert sub["status"] == "queued" and sub["run"]["status"] == "queued" and not sub["late"]
    assert "queued" in body["message"]
    with c.app.state.db.session() as s:
        row = s.get(Submission, sub["id"])
        assert c.app.state.store.get(row.content_hash) == GOOD.encode()
        assert len(row.runs) == 1 and row.runs[0].status == "queued"
    assert c.get("alice", f"/api/v1/submissions/{sub['id']}/file").content == GOOD.encode()


def test_a_notebook_is_accepted_and_a_syntax_error_is_refused_before_it_counts(course_app):
    c = course_app
    assert c.submit("alice", "open", notebook(GOOD).decode(), "work.ipynb").status_code == 201
    before = counts(c)
    r = c.submit("alice", "open", "def double(x) return 2x\n", "broken.py")
    assert r.status_code == 422 and "syntax error at line 1" in r.json()["detail"], r.text
    assert "not counted" in r.json()["detail"]
    assert counts(c) == before
    nb = notebook("def double(x):\n    return 2 * x\n\ndef broken(:\n").decode()
    r = c.submit("alice", "open", nb, "work.ipynb")
    assert r.status_code == 422 and "cell 2: syntax error at line 4" in r.json()["detail"], r.text
    assert c.get("alice", "/api/v1/assignments/open").json()["submissions_today"] == 1  # only the good one
    # a TA's batch grades such a file as it stands (it ends as a graded result with its reason)
    r = c.post("ta1", "/api/v1/assignments/open/batch", files={"file": ("b.zip", zip_of({"bob.py": "def double(x) return\n"}))})
    assert r.status_code == 201 and set(r.json()["by_login"]) == {"bob"}


@pytest.mark.parametrize("name,data,status,says", [
    ("sol.txt", GOOD.encode(), 415, ".ipynb"),
    ("sol.ipynb", b"{not json", 422, "not valid JSON"),
    ("sol.ipynb", json.dumps({"cells": "nope"}).encode(), 422, "not a valid Jupyter notebook"),
    ("sol.py", b"\xff\xfe\x00\x01binary", 422, "UTF-8"),
    ("sol.py", b"   \n", 422, "empty"),
    ("sol.py", b"x = 1\x00\n", 422, "NUL"),
    ("sol.py", b"x = 1\n" + b"#" * (5 * 1024 * 1024), 413, "limit"),
])
def test_bad_uploads_get_a_clear_4xx_and_change_nothing(course_app, name, data, status, says):
    c = course_app
    before = counts(c)
    r = c.post("alice", "/api/v1/assignments/open/submissions", files={"file": (name, data)})
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert counts(c) == before


def test_unknown_assignment_missing_file_and_path_tricks(course_app):
    c = course_app
    assert c.submit("alice", "no_such_thing").status_code == 404
    assert c.submit("alice", "../open").status_code == 404
    assert c.post("alice", "/api/v1/assignments/open/submissions").status_code == 422
    r = c.submit("alice", "open", GOOD, "../../../etc/passwd.py")
    assert r.status_code == 201 and r.json()["submission"]["filename"] == "passwd.py"
    r = c.submit("alice", "open", GOOD, "..\\..\\evil name;rm -rf.py")
    assert r.json()["submission"]["filename"] == "evil_name_rm_-rf.py"


def test_the_daily_limit_counts_own_uploads_only(course_app):
    c = course_app  # "open" allows 3 a day
    for _ in range(3):
        assert c.submit("alice", "open").status_code == 201
    r = c.submit("alice", "open")
    assert r.status_code == 429 and "3 submissions" in r.json()["detail"] and "resets" in r.json()["detail"]
    assert c.submit("bob", "open").status_code == 201  # bob has his own count
    assert c.get("alice", "/api/v1/assignments/open").json()["submissions_today"] == 3
    # a TA's batch upload for alice does not count against her, nor is it refused
    assert c.post("ta1", "/api/v1/assignments/open/batch", files={"file": ("b.zip", zip_of({"alice.py": GOOD}))}).status_code == 201


def test_simultaneous_uploads_cannot_pass_the_daily_limit_together(course_app):
    # 8 uploads of one student at once against a limit of 3: each is checked again inside
    # the transaction that inserts it (SQLite: one writer at a time; PostgreSQL: an advisory
    # lock per student and assignment, since read committed would let all 8 read "0 today").
    from concurrent.futures import ThreadPoolExecutor

    c = course_app
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda i: c.submit("alice", "open", GOOD + f"# {i}\n").status_code, range(8)))
    assert codes == [201] * 3 + [429] * 5
    with c.app.state.db.session() as s:
        assert s.scalar(select(func.count(Submission.id))) == 3


def test_late_and_closed(course_app):
    c = course_app
    r = c.submit("alice", "late")  # deadline 2.5 days ago: late by 3 days (ceil), still accepted
    assert r.status_code == 201
    sub = r.json()["submission"]
    assert sub["late"] and sub["days_late"] == 3 and "late by 3 day(s)" in r.json()["message"]
    r = c.submit("alice", "closed")
    assert r.status_code == 403 and "closed" in r.json()["detail"]
    assert c.get("alice", "/api/v1/assignments/closed").json()["closed"] is True


def zip_of(files: dict[str, str | bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_a_batch_upload_grades_each_student(course_app):
    c = course_app
    data = zip_of({"alice.py": GOOD, "bob/whatever.ipynb": notebook(GOOD), "__MACOSX/._alice.py": "junk",
                   "README.txt": "ignored", "carol/.ipynb_checkpoints/x.ipynb": "ignored"})
    r = c.post("ta1", "/api/v1/assignments/late/batch", files={"file": ("b.zip", data)},
               data={"submitted_at": "2001-01-01T00:00:00+00:00"})
    assert r.status_code == 201, r.text
    assert set(r.json()["by_login"]) == {"alice", "bob"}
    subs = {s["login"]: s for s in c.get("ta1", "/api/v1/submissions?assignment=late").json()}
    assert subs["alice"]["source"] == "batch" and not subs["alice"]["late"]  # handed in on time
    assert subs["bob"]["kind"] == "ipynb"


@pytest.mark.parametrize("files,kw,status,says", [
    ({"../../alice.py": GOOD}, {}, 400, "outside"),
    ({"/abs/alice.py": GOOD}, {}, 400, "outside"),
    ({"alice.py": GOOD}, {"symlink": "bob.py"}, 400, "symbolic link"),
    ({"notes.txt": "x"}, {}, 422, "no .ipynb or .py"),
    ({"alice.py": "#" * (6 * 1024 * 1024)}, {}, 413, "limit"),
    ({"alice.py": "x = 1\n" + " " * (4 * 1024 * 1024)}, {}, 413, "zip bomb"),
])
def test_unsafe_or_bad_batches_are_refused_whole(course_app, files, kw, status, says):
    c = course_app
    before = counts(c)
    r = c.post("ta1", "/api/v1/assignments/open/batch", files={"file": ("b.zip", zip_of(files, **kw))})
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert counts(c) == before


def test_a_batch_grades_what_it_can_place_and_lists_the_rest(course_app):
    c = course_app
    before = counts(c)
    r = c.post("ta1", "/api/v1/assignments/open/batch",
               files={"file": ("b.zip", zip_of({"alice.py": GOOD, "mallory.py": GOOD, "bob.ipynb": "{broken"}))})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body["by_login"]) == {"alice"}
    why = {s["entry"]: s["why"] for s in body["skipped"]}
    assert "not on the roster" in why["mallory/mallory.py"] and "not valid JSON" in why["bob/bob.ipynb"]
    assert counts(c)[0] == before[0] + 1
    # the page says what happened: how many were queued, which were left out and why
    from server.auth import csrf_for
    secret = c.sign_in("ta1")
    page = c.client.post("/ui/ta/open/batch", data={"csrf": csrf_for(secret)},
                         files={"file": ("b.zip", zip_of({"carol.py": GOOD, "zed.py": GOOD}))})
    assert page.status_code == 200 and "1 submission(s) stored and queued" in page.text
    assert "zed is not on the roster" in page.text
    c.client.cookies.clear()


def test_a_batch_that_is_not_a_zip_or_lies_about_sizes(course_app):
    c = course_app
    r = c.post("ta1", "/api/v1/assignments/open/batch", files={"file": ("b.zip", b"PK\x03\x04 garbage")})
    assert r.status_code == 422
    # A header that claims a small size but inflates to more: caught while inflating.
    data = bytearray(zip_of({"alice.py": "x = 1\n" + "#" * 100_000}))
    # patch the central directory's uncompressed size (offset 24 in the central header)
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    r = c.post("ta1", "/api/v1/assignments/open/batch", files={"file": ("b.zip", bytes(data))})
    assert r.status_code in (413, 422), r.text
