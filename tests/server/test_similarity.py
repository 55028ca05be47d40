"""The similarity report for plagiarism review (issue 27): a planted copy ranks first, the
given code counts for nobody, the index ranks as copydetect does pair by pair, and only
staff see the pages and the API."""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("copydetect", reason="the server's extra is not installed (pip install -e '.[server]')")

from autograder.authoring.notebook import extract  # noqa: E402
from server.similarity import load_saved, released_stub, report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ADAM = REPO / "assignments" / "adam" / "examples"


def _code(name: str) -> str:
    return extract(ADAM / name).source


def disguised(source: str) -> str:
    """What a copier does in a minute: every local variable renamed, the top-level
    functions and classes in the opposite order, new comments and blank lines."""
    tree = ast.parse(source)
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        mine = sorted({n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} - params)
        new = {old: f"my_{old}_{i}" for i, old in enumerate(mine)}
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and n.id in new:
                n.id = new[n.id]
    head = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef)]
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)][::-1]
    return "\n".join(ast.unparse(n) for n in head) + "\n\n" + "".join(
        f"\n# part {i}: my own work\n\n{ast.unparse(n)}\n" for i, n in enumerate(defs))


@pytest.fixture(scope="module")
def stub() -> str:
    text, mode, notes = released_stub(REPO / "assignments", "adam")
    assert mode == "definitions" and not notes and "NotImplementedError" in text
    return text


@pytest.fixture(scope="module")
def class_of_five() -> dict[str, str]:
    """Four pieces of work written apart (0.03 to 0.44 similar to each other) and a
    disguised copy of one of them."""
    bob = _code("correct_alternative.py")
    return {"alice": _code("bug_eps_inside_sqrt.py"), "bob": bob, "carol": _code("hostile_library_rerun.py"),
            "dave": _code("hostile_second_interpreter.py"), "erin": disguised(bob)}


def test_a_renamed_and_reordered_copy_ranks_first(class_of_five, stub):
    assert "my_" in class_of_five["erin"] and class_of_five["erin"] != class_of_five["bob"]
    rep = report(class_of_five, stub, top=10)
    first = rep.pairs[0]
    assert (first.a, first.b) == ("bob", "erin"), [(p.a, p.b, round(p.similarity, 2)) for p in rep.pairs]
    # (not 1.0: ast.unparse also rewrote numbers and brackets, which are not normalised)
    assert first.similarity > 0.85 and first.similarity_a > 0.85 and first.similarity_b > 0.85
    assert all(p.similarity < first.similarity - 0.3 for p in rep.pairs[1:])
    # the matched passages: most of each file, as line ranges of its own code
    for ranges, code in ((first.lines_a, class_of_five["bob"]), (first.lines_b, class_of_five["erin"])):
        covered = sum(b - a + 1 for a, b in ranges)
        assert ranges and covered > 0.6 * len(code.splitlines()), (ranges, len(code.splitlines()))
        assert all(1 <= a <= b <= len(code.splitlines()) for a, b in ranges)
    assert rep.submissions == 5 and rep.scored == 10 and rep.params["engine"].startswith("copydetect")


def test_the_index_ranks_as_copydetect_does_pair_by_pair(class_of_five, stub):
    fast = report(class_of_five, stub, top=10)
    slow = report(class_of_five, stub, top=10, exhaustive=True)
    assert [(p.a, p.b, p.similarity_a, p.similarity_b, p.tokens) for p in fast.pairs] == \
        [(p.a, p.b, p.similarity_a, p.similarity_b, p.tokens) for p in slow.pairs]


def test_the_released_stub_counts_for_nobody(stub):
    solution = _code("correct_alternative.py")
    # three students who handed in the stub (one with a comment of their own) and one who solved it
    sources = {"s1": stub, "s2": stub, "s3": "# I tried\n" + stub, "solver": solution}
    rep = report(sources, stub)
    assert sorted(rep.empty) == ["s1", "s2", "s3"]
    assert all(p.similarity < 0.02 for p in rep.pairs), [(p.a, p.b, p.similarity) for p in rep.pairs]
    # without the boilerplate the stubs are the same file: it is the boilerplate that makes them 0
    bare = report(sources, "")
    assert bare.pairs[0].similarity == pytest.approx(1.0) and {bare.pairs[0].a, bare.pairs[0].b} <= {"s1", "s2", "s3"}


def test_line_numbers_survive_crlf_and_leading_blank_lines():
    code = "import torch\n\n\ndef f(param, grad, lr):\n    m = grad * 0.9 + param\n" \
           "    v = grad * grad * 0.999\n    return param - lr * m / (v.sqrt() + 1e-8)\n"
    rep = report({"a": "\n\n" + code, "b": code.replace("\n", "\r\n")}, "")
    (p,) = rep.pairs
    assert p.lines_a == [[3, 9]] and p.lines_b == [[1, 7]]


# -- the server: pages, API, command ------------------------------------------------------------
def _wait_report(c, slug: str, timeout: float = 120.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        d = c.get("ta1", f"/api/v1/assignments/{slug}/similarity").json()
        if d["computed_at"] and not d["running"]:
            return d
        assert d["error"] is None, d["error"]
        time.sleep(0.2)
    raise AssertionError(f"no similarity report within {timeout} s")


def test_staff_compute_and_review_the_report_students_may_not(course_app, class_of_five):
    from server.auth import csrf_for

    c = course_app
    ids = {who: c.submit(who, "open", text=class_of_five[src]).json()["submission"]["id"]
           for who, src in (("alice", "alice"), ("bob", "bob"), ("carol", "erin"))}

    # the API: staff only, empty until computed
    for who, status in (("alice", 403), ("bob", 403), ("ta1", 200), ("admin", 200)):
        assert c.get(who, "/api/v1/assignments/open/similarity").status_code == status, who
    assert c.get(None, "/api/v1/assignments/open/similarity").status_code == 401
    empty = c.get("ta1", "/api/v1/assignments/open/similarity").json()
    assert empty["computed_at"] is None and empty["pairs"] == []
    assert c.get("ta1", "/api/v1/assignments/nowhere/similarity").status_code == 404

    # the pages: a student is refused, even with a valid form
    secret = c.sign_in("alice")
    assert c.client.get("/ui/ta/open/similarity").status_code == 403
    assert c.client.get("/ui/ta/open/similarity/1").status_code == 403
    assert c.client.post("/ui/ta/open/similarity", data={"csrf": csrf_for(secret)},
                         follow_redirects=False).status_code == 403

    secret = c.sign_in("ta1")
    page = c.client.get("/ui/ta/open/similarity")
    assert page.status_code == 200 and 'id="similarity-none"' in page.text
    assert c.client.get("/ui/ta/open/similarity/1").status_code == 404  # no report yet
    assert c.client.post("/ui/ta/open/similarity", data={}, follow_redirects=False).status_code == 403  # no CSRF
    r = c.client.post("/ui/ta/open/similarity", data={"csrf": csrf_for(secret)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/ta/open/similarity?")

    rep = _wait_report(c, "open")
    assert rep["submissions"] == 3 and rep["scored"] == 3
    top = rep["pairs"][0]
    assert {top["a"], top["b"]} == {"bob", "carol"} and top["similarity"] > 0.85 and top["rank"] == 1
    assert {top["submission_a"], top["submission_b"]} == {ids["bob"], ids["carol"]}
    assert rep["sources"] is None
    with_code = c.get("ta1", "/api/v1/assignments/open/similarity?sources=true&limit=1").json()
    assert len(with_code["pairs"]) == 1 and set(with_code["sources"]) == {"bob", "carol"}
    saved = load_saved(c.app.state.settings.data_dir, "open")
    assert saved["assignment"] == "open" and saved["notes"]  # no master here: said so

    page = c.client.get("/ui/ta/open/similarity")
    assert page.status_code == 200 and 'href="/ui/ta/open/similarity/1"' in page.text
    pair = c.client.get("/ui/ta/open/similarity/1")
    assert pair.status_code == 200 and "bob" in pair.text and "carol" in pair.text
    assert pair.text.count('class="match"') > 20 and 'class="k"' in pair.text  # marked, highlighted
    assert c.client.get("/ui/ta/open/similarity/99").status_code == 404
    for html in (page.text, pair.text):  # the CSP: no inline script or style
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert "<style" not in html and " style=" not in html
    c.client.cookies.clear()


def test_the_pair_page_shows_student_code_escaped(course_app):
    c = course_app
    hostile = ("def double(x):\n    # </code></td></tr><script>alert(1)</script>\x1b[2J\u202e\n"
               "    y = x * 2  # <img src=x onerror=alert(2)>\n    z = [y, y + 1, y * 3, '<b>']\n"
               "    total = sum(v for v in z[:3] if v > 0)\n    return total - z[1] - z[2] + y\n")
    for who in ("alice", "bob"):
        c.submit(who, "open", text=hostile)
    c.sign_in("ta1")
    from server.similarity_pages import start_recompute
    assert start_recompute(c.app, "open")
    _wait_report(c, "open")
    html = c.client.get("/ui/ta/open/similarity/1").text
    assert "<script>alert" not in html and "<img src=x" not in html and "&lt;script&gt;" in html
    assert "\x1b" not in html and "\u202e" not in html and "\\x1b" in html
    c.client.cookies.clear()


def test_dlopt_similarity_command(course_app, class_of_five, capsys):
    from autograder.cli import main

    c = course_app
    if not c.app.state.settings.database.startswith("sqlite"):
        pytest.skip("the command finds the database in --data-dir (SQLite)")
    c.submit("alice", "open", text=class_of_five["bob"])
    c.submit("bob", "open", text=class_of_five["erin"])
    c.submit("carol", "open", text=class_of_five["carol"])
    data_dir = c.app.state.settings.data_dir
    assert main(["similarity", "open", "--data-dir", str(data_dir), "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "bob" in out and "3 submissions" in out and "saved to" in out
    saved = load_saved(data_dir, "open")
    assert {saved["pairs"][0]["a"], saved["pairs"][0]["b"]} == {"alice", "bob"}
    assert main(["similarity", "nowhere", "--data-dir", str(data_dir)]) == 2
