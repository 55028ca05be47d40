"""Who may call what. Every API route is listed here with the least role that may call it;
a route missing from the table fails `test_every_route_is_in_the_table`."""

from __future__ import annotations

import pytest

# (method, path, least role): "anyone", "student", "ta", "admin"
ROUTES = [
    ("GET", "/api/v1/health", "anyone"),
    ("GET", "/api/v1/me", "student"),
    ("GET", "/api/v1/assignments", "student"),
    ("GET", "/api/v1/assignments/{slug}", "student"),
    ("POST", "/api/v1/assignments/{slug}/submissions", "student"),
    ("GET", "/api/v1/submissions", "student"),
    ("GET", "/api/v1/submissions/{sub_id}", "student"),
    ("GET", "/api/v1/submissions/{sub_id}/file", "student"),
    ("POST", "/api/v1/roster", "ta"),
    ("GET", "/api/v1/users", "ta"),
    ("POST", "/api/v1/assignments/{slug}/batch", "ta"),
    ("POST", "/api/v1/submissions/{sub_id}/regrade", "ta"),
    ("POST", "/api/v1/assignments/{slug}/regrade", "ta"),
    ("GET", "/api/v1/assignments/{slug}/scores", "ta"),
    ("GET", "/api/v1/assignments/{slug}/scores.csv", "ta"),
    ("GET", "/api/v1/assignments/{slug}/gradescope.zip", "ta"),
    ("GET", "/api/v1/runs/failed", "ta"),
    ("POST", "/api/v1/assignments/{slug}/extensions", "ta"),
    ("POST", "/api/v1/assignments/{slug}/extensions.csv", "ta"),
    ("GET", "/api/v1/assignments/{slug}/extensions", "ta"),
    ("POST", "/api/v1/assignments/{slug}/overrides", "ta"),
    ("GET", "/api/v1/assignments/{slug}/flags", "ta"),
    ("POST", "/api/v1/submissions/{sub_id}/review", "ta"),
    ("POST", "/api/v1/assignments/{slug}/release", "ta"),
    ("GET", "/api/v1/assignments/{slug}/students/{login}/history", "ta"),
    ("GET", "/api/v1/assignments/{slug}/tests/{name}/failures", "ta"),
    ("GET", "/api/v1/assignments/{slug}/similarity", "ta"),
]
# the body each route takes (a student sending it must still be refused)
BODIES = {
    "/extensions": {"json": {"login": "alice", "late_days": 2, "reason": "a letter"}},
    "/extensions.csv": {"files": {"file": ("x.csv", b"login,late_days,reason\nalice,2,a letter\n")}},
    "/overrides": {"json": {"login": "alice", "score": 1, "reason": "graded by hand"}},
    "/review": {"json": {"action": "note", "reason": "looked at it"}},
    "/release": {"json": {"released": True}},
}
RANK = {"anyone": -1, "student": 0, "ta": 1, "admin": 2}


def test_every_route_is_in_the_table(course_app):
    listed = {(m, p) for m, p, _ in ROUTES}
    served = {(m.upper(), path) for path, ops in course_app.app.openapi()["paths"].items() for m in ops}
    assert served == listed, f"untested: {served - listed}; gone: {listed - served}"


def _call(c, who, method, path, sub_id):
    url = (path.replace("{slug}", "open").replace("{sub_id}", str(sub_id)).replace("{login}", "alice")
           .replace("{name}", "test_double"))
    kw = dict(BODIES.get("/" + path.rsplit("/", 1)[-1], {})) if method == "POST" else {}
    if path.endswith("/submissions") and method == "POST":
        kw["files"] = {"file": ("s.py", b"def double(x):\n    return 2 * x\n")}
    elif path.endswith("/roster"):
        kw["files"] = {"file": ("r.csv", b"login,name\nzed,Zed\n")}
    elif path.endswith("/batch"):
        import io
        import zipfile
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("carol.py", "def double(x):\n    return 2 * x\n")
        kw["files"] = {"file": ("b.zip", buf.getvalue())}
    return c.client.request(method, url, headers=c.h(who), **kw)


@pytest.mark.parametrize("method,path,least", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_who_may_and_who_may_not(course_app, method, path, least):
    c = course_app
    sub_id = c.submit("alice", "open").json()["submission"]["id"]
    for who in (None, "dlopt_not-a-token", "bob", "alice", "ta1", "admin"):
        r = _call(c, who, method, path, sub_id)
        role = {None: "anyone", "dlopt_not-a-token": "anyone", "bob": "student", "alice": "student",
                "ta1": "ta", "admin": "admin"}[who]
        if least != "anyone" and who in (None, "dlopt_not-a-token"):
            assert r.status_code == 401, (who, r.status_code, r.text)
            continue
        if RANK[role] < RANK[least]:
            assert r.status_code == 403, (who, r.status_code, r.text)
        elif who == "bob" and "{sub_id}" in path:
            # another student's submission: as if it did not exist
            assert r.status_code == 404, (who, r.status_code, r.text)
        else:
            assert r.status_code < 400, (who, method, path, r.status_code, r.text)


def test_a_student_sees_only_their_own_submissions(course_app):
    c = course_app
    a = c.submit("alice", "open").json()["submission"]["id"]
    b = c.submit("bob", "open").json()["submission"]["id"]
    assert [s["id"] for s in c.get("alice", "/api/v1/submissions").json()] == [a]
    assert [s["id"] for s in c.get("bob", "/api/v1/submissions?login=alice").json()] == [b]  # filter ignored
    assert {s["id"] for s in c.get("ta1", "/api/v1/submissions").json()} == {a, b}
    assert [s["id"] for s in c.get("ta1", "/api/v1/submissions?login=alice").json()] == [a]
    assert c.get("bob", f"/api/v1/submissions/{a}").status_code == 404
    assert c.get("bob", f"/api/v1/submissions/{a}/file").status_code == 404


def test_a_ta_cannot_create_staff_or_change_an_admin(course_app):
    c = course_app
    for roster in ("login,role\nmallory,ta\n", "login,role\nmallory,admin\n", "login,role\nadmin,student\n"):
        r = c.post("ta1", "/api/v1/roster", files={"file": ("r.csv", roster)})
        assert r.status_code == 403, r.text
    assert "mallory" not in {u["login"] for u in c.get("admin", "/api/v1/users").json()}
    assert c.get("admin", "/api/v1/me").json()["role"] == "admin"
    # an admin may
    r = c.post("admin", "/api/v1/roster", files={"file": ("r.csv", "login,role\nta2,ta\n")})
    assert r.status_code == 200 and "ta2" in r.json()["tokens"]


def test_tokens_are_stored_hashed_and_reissue_revokes(course_app):
    from sqlalchemy import select

    from server.models import ApiToken
    c = course_app
    old = c.tokens["alice"]
    with c.app.state.db.session() as s:
        hashes = set(s.scalars(select(ApiToken.token_hash)))
    assert old not in hashes and all(len(h) == 64 for h in hashes)
    r = c.post("ta1", "/api/v1/roster?reissue=true", files={"file": ("r.csv", "login\nalice\n")})
    new = r.json()["tokens"]["alice"]
    assert c.get(old, "/api/v1/me").status_code == 401
    assert c.get(new, "/api/v1/me").json()["login"] == "alice"


@pytest.mark.parametrize("roster,why", [
    ("name,email\nx,y\n", "login"),
    ("login,role\nalice,wizard\n", "role"),
    ("login\n../../etc\n", "login"),
    ("login\n" + "a" * 65 + "\n", "login"),
])
def test_bad_rosters_are_refused_and_change_nothing(course_app, roster, why):
    c = course_app
    before = c.get("ta1", "/api/v1/users").json()
    r = c.post("ta1", "/api/v1/roster", files={"file": ("r.csv", roster)})
    assert r.status_code == 422 and why in r.json()["detail"]
    assert c.get("ta1", "/api/v1/users").json() == before


PAGES = [  # (method, path, least role) of the web pages; forms also need the CSRF field
    ("GET", "/ui", "student"),
    ("GET", "/ui/submissions/{sub_id}", "student"),
    ("GET", "/ui/submissions/{sub_id}/status.json", "student"),
    ("POST", "/ui/assignments/open/submit", "student"),
    ("GET", "/ui/ta/open", "ta"),
    ("GET", "/ui/ta/open/scores.csv", "ta"),
    ("POST", "/ui/ta/submissions/{sub_id}/regrade", "ta"),
    ("POST", "/ui/ta/open/regrade", "ta"),
    ("GET", "/ui/assignments/open", "student"),
    ("GET", "/ui/ta/open/students/alice", "ta"),
    ("GET", "/ui/ta/open/gradescope.zip", "ta"),
    ("POST", "/ui/ta/open/batch", "ta"),
    ("GET", "/ui/roster", "ta"),
    ("POST", "/ui/roster", "ta"),
    ("GET", "/ui/roster/tokens/{key}.csv", "ta"),
    ("GET", "/ui/ta/open/similarity", "ta"),
    ("POST", "/ui/ta/open/similarity", "ta"),
    ("GET", "/ui/ta/open/similarity/{number}", "ta"),
    ("GET", "/ui/ta/open/flags", "ta"),
    ("GET", "/ui/ta/submissions/{sub_id}/review", "ta"),
    ("POST", "/ui/ta/submissions/{sub_id}/review", "ta"),
    ("GET", "/ui/ta/open/tests/test_double", "ta"),
    ("POST", "/ui/ta/open/students/alice/extension", "ta"),
    ("POST", "/ui/ta/open/students/alice/override", "ta"),
    ("POST", "/ui/ta/open/release", "ta"),
    ("POST", "/ui/ta/open/extensions.csv", "ta"),
    ("GET", "/ui/assignments/open/boards", "student"),
    ("POST", "/ui/assignments/open/boards/name", "student"),
    ("POST", "/ui/ta/submissions/{sub_id}/board", "ta"),
]
# the fields each form posts besides its CSRF value
FORMS = {
    "/review": {"action": "note", "reason": "looked at it"},
    "/extension": {"late_days": "2", "reason": "a letter"},
    "/override": {"score": "1", "reason": "graded by hand"},
    "/release": {"released": "1"},
    "/board": {"board": "flash", "action": "remove", "reason": "checked by hand"},
    "/boards/name": {"name": "Ada"},
}


def _batch_zip() -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("carol.py", "def double(x):\n    return 2 * x\n")
    return buf.getvalue()


def test_every_page_is_in_the_table(course_app):
    from fastapi.routing import APIRoute

    from server.pages import pages
    from server.similarity_pages import similarity_pages
    from server.staff_pages import staff_pages
    routes = [r for router in (pages, staff_pages, similarity_pages) for r in router.routes if isinstance(r, APIRoute)]
    served = {(m, r.path.replace(":path}", "}")) for r in routes if r.path.startswith("/ui") for m in r.methods}
    listed = {(m, p.replace("open", "{slug}").replace("alice", "{login}").replace("test_double", "{name}"))
              for m, p, _ in PAGES}
    assert served == listed, f"untested: {served - listed}; gone: {listed - served}"


@pytest.mark.parametrize("method,path,least", PAGES, ids=[f"{m} {p}" for m, p, _ in PAGES])
def test_pages_who_may_and_who_may_not(course_app, method, path, least):
    from server.auth import csrf_for
    c = course_app
    sub_id = c.submit("alice", "open").json()["submission"]["id"]
    url = path.replace("{sub_id}", str(sub_id)).replace("{number}", "1")
    for who in (None, "bob", "alice", "ta1"):
        c.client.cookies.clear()
        secret = c.sign_in(who) if who else ""
        kw = {"follow_redirects": False}
        if method == "POST":
            kw["data"] = {"csrf": csrf_for(secret) if who else "", **FORMS.get("/" + path.rsplit("/", 1)[-1], {})}
            if path.endswith("/submit"):
                kw["files"] = {"file": ("s.py", b"def double(x):\n    return 2 * x\n")}
            elif path.endswith("/batch"):
                kw["files"] = {"file": ("b.zip", _batch_zip())}
            elif path == "/ui/roster":
                kw["files"] = {"file": ("r.csv", b"login,name\ncarol,Carol\n")}
            elif path.endswith("/extensions.csv"):
                kw["files"] = {"file": ("x.csv", b"login,late_days,reason\nalice,2,a letter\n")}
        r = c.client.request(method, url, **kw)
        if who is None:
            assert r.status_code == 303 and r.headers["location"] == "/", (who, r.status_code)
        elif least == "ta" and who != "ta1":
            assert r.status_code == 403, (who, r.status_code)
        elif who == "bob" and "{sub_id}" in path:
            assert r.status_code == 404, (who, r.status_code)
        elif "{key}" in path or "{number}" in path:  # a random key nobody was given; no similarity report yet
            assert r.status_code == 404, (who, r.status_code)
        else:
            assert r.status_code in (200, 303), (who, r.status_code, r.text[:300])
        if method == "POST" and who:  # the same form without its CSRF field
            kw["data"] = {k: v for k, v in kw["data"].items() if k != "csrf"}
            assert c.client.request(method, url, **kw).status_code in (403, 404)
    c.client.cookies.clear()
