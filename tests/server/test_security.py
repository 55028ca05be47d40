"""The holes of issue 14, each as an attack that worked against the earlier server:
bodies read whole before any check (chunked or not, without a token), login CSRF, CSV
formula injection, silent role changes through the roster, logins '.' and '..', Unicode
file names refused, validation before the cheap checks; and what a deployment needs
(security headers, Secure cookies over HTTPS, sessions that sign-out revokes and that
expire, a bound on failed sign-ins, offline API docs, HTML error pages for people)."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import time
import zipfile
from datetime import timedelta

import pytest

from server.auth import COOKIE, csrf_for

GOOD = "def double(x):\n    return 2 * x\n"


# -- request bodies: counted while they stream ------------------------------------------
@pytest.fixture
def live(settings_for):
    """The app under uvicorn on a free port (SQLite): a real socket, so a test can see
    how much of a body the server reads before it answers."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    from server_course import Course, Served

    settings = settings_for()
    if not settings.database.startswith("sqlite"):
        pytest.skip("one database is enough for the socket tests")
    app = create_app(settings)
    served = Served(app, lifespan="off")
    with TestClient(app) as client:
        course = Course(app, client)
        yield served.port, course
    served.stop()


def _chunked_post(port: int, path: str, headers: dict, total: int, chunk: int = 64 * 1024) -> tuple[int, int]:
    """POST `total` bytes with Transfer-Encoding: chunked; stop at the first answer.
    Returns (status, bytes sent before the answer came)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Transfer-Encoding: chunked",
            "Content-Type: multipart/form-data; boundary=XyZ"] + [f"{k}: {v}" for k, v in headers.items()]
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    # A well-formed start of a multipart upload, then the file's bytes without end.
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.py"\r\n\r\n'
    s.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    sent, block = 0, f"{chunk:x}\r\n".encode() + b"a" * chunk + b"\r\n"
    s.setblocking(False)
    answer, pending = b"", b""
    try:
        while sent < total:
            try:
                answer += s.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                if not pending:
                    pending = block
                n = s.send(pending)  # may take part of it: the chunk framing must stay whole
                pending = pending[n:]
                sent += n
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.setblocking(True)
        s.settimeout(10)
        while b"\r\n" not in answer:
            more = s.recv(65536)
            if not more:
                break
            answer += more
    finally:
        s.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, sent


def test_a_chunked_body_without_a_token_is_cut_at_the_anonymous_limit(live):
    port, _ = live
    status, sent = _chunked_post(port, "/api/v1/assignments/open/submissions", {}, total=300 << 20)
    assert status == 413
    # 64 KiB allowed; what the kernel's socket buffers hold on the way is a few MiB at most.
    assert sent < 16 << 20, sent


def test_a_chunked_body_from_a_student_is_cut_at_the_upload_limit(live):
    port, course = live
    status, sent = _chunked_post(port, "/api/v1/assignments/open/submissions", course.h("alice"), total=300 << 20)
    assert status == 413
    assert sent < (5 + 1 + 16) << 20, sent  # 5 MiB upload + 1 MiB form + buffers


def test_a_declared_length_past_the_limit_is_refused_before_the_body(course_app):
    c = course_app
    r = c.client.post("/api/v1/assignments/open/submissions", content=b"x" * (200 << 10),
                      headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 413  # no token: 64 KiB
    assert "limit" in r.json()["detail"]


# -- login CSRF and sessions ----------------------------------------------------------------
def _login_value(c) -> str:
    return re.search(r'name="login_csrf" value="([^"]+)"', c.client.get("/").text).group(1)


def test_login_from_another_site_is_refused(course_app):
    c = course_app
    c.client.cookies.clear()
    # The attacker's page posts its own token; the victim's browser sends no login cookie
    # (SameSite=Strict) and an Origin that is not ours.
    r = c.client.post("/login", data={"token": c.tokens["bob"]}, headers={"Origin": "https://evil.example"},
                      follow_redirects=False)
    assert r.status_code == 403 and COOKIE not in r.cookies
    value = _login_value(c)  # even with our own form's value, the foreign origin is refused
    r = c.client.post("/login", data={"token": c.tokens["bob"], "login_csrf": value},
                      headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and COOKIE not in r.cookies
    c.client.cookies.clear()
    r = c.client.post("/login", data={"token": c.tokens["bob"], "login_csrf": "guessed"}, follow_redirects=False)
    assert r.status_code == 403 and COOKIE not in r.cookies
    assert c.sign_in("bob")  # the real form works


def test_the_cookie_is_a_session_not_the_token_and_sign_out_revokes_it(course_app):
    c = course_app
    secret = c.sign_in("alice")
    assert secret != c.tokens["alice"]
    assert c.client.get("/ui", follow_redirects=False).status_code == 200
    r = c.client.post("/logout", data={"csrf": csrf_for(secret)}, follow_redirects=False)
    assert r.status_code == 303
    c.client.cookies.set(COOKIE, secret)  # a copy of the cookie kept from before
    assert c.client.get("/ui", follow_redirects=False).headers.get("location") == "/"


def test_sessions_expire(course_app):
    from server.models import WebSession
    c = course_app
    c.sign_in("alice")
    with c.app.state.db.session() as s:
        for row in s.query(WebSession).all():
            row.expires_at = row.created_at - timedelta(seconds=1)
        s.commit()
    assert c.client.get("/ui", follow_redirects=False).headers.get("location") == "/"


def test_failed_sign_ins_are_bounded_per_address(make_course):
    c = make_course(max_failed_sign_ins=3)
    for _ in range(3):
        r = c.client.post("/login", data={"token": "dlopt_wrong", "login_csrf": _login_value(c)},
                          follow_redirects=False)
        assert r.status_code == 401
    r = c.client.post("/login", data={"token": "dlopt_wrong_again", "login_csrf": _login_value(c)},
                      follow_redirects=False)
    assert r.status_code == 429 and "too many" in r.text
    # ... but a valid token still signs in: a flood from one address (a proxy, a campus NAT)
    # locks nobody out.
    r = c.client.post("/login", data={"token": c.tokens["alice"], "login_csrf": _login_value(c)},
                      follow_redirects=False)
    assert r.status_code == 303


def test_failed_sign_ins_are_bounded_per_account(make_course):
    """Revoked tokens of one account, from many addresses: bounded for that account; its
    current token still signs in."""
    from fastapi.testclient import TestClient
    c = make_course(max_failed_sign_ins=3)
    old = c.tokens["bob"]
    c.post("admin", "/api/v1/roster?reissue=true", files={"file": ("r.csv", "login\nbob\n")})
    for i in range(3):
        with TestClient(c.app, client=(f"10.0.0.{i}", 5000)) as other:
            page = other.get("/")
            value = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)
            assert other.post("/login", data={"token": old, "login_csrf": value},
                              follow_redirects=False).status_code == 401
    with TestClient(c.app, client=("10.0.0.99", 5000)) as other:
        page = other.get("/")
        value = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)
        assert other.post("/login", data={"token": old, "login_csrf": value},
                          follow_redirects=False).status_code == 429


def test_origin_behind_a_proxy_that_rewrites_host(make_course):
    """nginx's default proxy_pass sends Host: 127.0.0.1:8000; the browser's Origin is the
    public address: DLOPT_PUBLIC_URL names it (or the proxy's X-Forwarded-Host)."""
    c = make_course(public_url="https://course.example.edu")
    value = _login_value(c)
    r = c.client.post("/login", data={"token": c.tokens["alice"], "login_csrf": value},
                      headers={"Origin": "https://course.example.edu"}, follow_redirects=False)
    assert r.status_code == 303
    c.client.cookies.clear()
    value = _login_value(c)
    r = c.client.post("/login", data={"token": c.tokens["alice"], "login_csrf": value},
                      headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert r.status_code == 403  # the Host alone no longer counts once the public URL is set


def test_the_body_limit_reads_cookies_as_the_pages_do(live):
    """Another site's cookie that Python's SimpleCookie rejects, before the session: the
    signed-in TA keeps a TA's body limit (a 2 MiB batch is not refused as anonymous)."""
    port, course = live
    import io
    import zipfile

    import httpx
    secret = course.sign_in("ta1")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("alice.py", "def double(x):\n    return 2 * x\n" + "#" * (2 << 20))
    r = httpx.post(f"http://127.0.0.1:{port}/ui/ta/open/batch",
                   headers={"Cookie": f'_ga={{"x":1}}; a=b c; {COOKIE}={secret}'},
                   data={"csrf": csrf_for(secret)}, files={"file": ("b.zip", buf.getvalue())}, timeout=30)
    assert r.status_code != 413 or "limit for this account" not in r.text, r.text[:300]


def test_cookies_are_secure_over_https(course_app):
    from fastapi.testclient import TestClient
    with TestClient(course_app.app, base_url="https://testserver") as client:
        page = client.get("/")
        assert "secure" in page.headers["set-cookie"].lower()
        value = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)
        r = client.post("/login", data={"token": course_app.tokens["alice"], "login_csrf": value},
                        follow_redirects=False)
        assert r.status_code == 303
        assert re.search(rf"{COOKIE}=[^;]+;.*[Ss]ecure", r.headers["set-cookie"])
    plain = course_app.client.get("/")
    assert "secure" not in plain.headers["set-cookie"].lower()  # http (a laptop): not Secure


# -- CSV and roster ---------------------------------------------------------------------------
EVIL = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "\tx", "\rx"]


def test_scores_csv_escapes_formulas(course_app):
    c = course_app
    rows = "login,name\n" + "".join(f"evil{i},\"{n.replace(chr(34), chr(34) * 2)}\"\n" for i, n in enumerate(EVIL))
    assert c.post("admin", "/api/v1/roster", files={"file": ("r.csv", rows)}).status_code == 200
    text = c.get("ta1", "/api/v1/assignments/open/scores.csv").text
    cells = {r[0]: r[1] for r in csv.reader(io.StringIO(text))}
    for i, name in enumerate(EVIL[:4]):
        assert cells[f"evil{i}"] == "'" + name, cells[f"evil{i}"]
    # (the roster strips a leading tab or CR from names: those never reach the file raw)
    for cell in (c for row in csv.reader(io.StringIO(text)) for c in row):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def test_a_roster_without_roles_changes_no_role(course_app):
    c = course_app
    r = c.post("admin", "/api/v1/roster", files={"file": ("r.csv", "login,name,email\nta1,Tea,t@x.edu\n")})
    assert r.status_code == 200
    roles = {u["login"]: u["role"] for u in c.get("admin", "/api/v1/users").json()}
    assert roles["ta1"] == "ta"


def test_a_ta_cannot_change_or_reissue_another_staff_account(course_app):
    c = course_app
    c.post("admin", "/api/v1/roster", files={"file": ("r.csv", "login,name,role\nta2,Second,ta\n")})
    for body, query in [("login,name\nta2,Renamed\n", "?reissue=true"), ("login,name,role\nta2,x,student\n", ""),
                        ("login\nadmin\n", "?reissue=true")]:
        r = c.post("ta1", "/api/v1/roster" + query, files={"file": ("r.csv", body)})
        assert r.status_code == 403, (body, r.text)
    users = {u["login"]: u for u in c.get("admin", "/api/v1/users").json()}
    assert users["ta2"]["role"] == "ta" and users["ta2"]["name"] == "Second"
    assert c.get("admin", "/api/v1/me").status_code == 200  # the admin's token still works
    # a TA still reissues a student's token
    r = c.post("ta1", "/api/v1/roster?reissue=true", files={"file": ("r.csv", "login\nalice\n")})
    assert r.status_code == 200 and "alice" in r.json()["tokens"]


@pytest.mark.parametrize("login", [".", "..", "-x", "a/b", "a b", "é", "x" * 65, ".hidden"])
def test_bad_logins_are_refused_everywhere(course_app, login):
    c = course_app
    r = c.post("admin", "/api/v1/roster", files={"file": ("r.csv", f"login,name\n\"{login}\",X\n")})
    assert r.status_code == 422, r.text
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{login}/work.py", GOOD)
    r = c.post("ta1", "/api/v1/assignments/open/batch", files={"file": ("b.zip", buf.getvalue())})
    assert r.status_code in (400, 422), r.text
    assert c.get("ta1", "/api/v1/submissions", params={"login": login}).status_code == 422


# -- file names, types and the order of the checks ----------------------------------------
@pytest.mark.parametrize("name,kept", [("é.ipynb", "é.ipynb"), ("работа.ipynb", "работа.ipynb"),
                                       ("Übung 1.ipynb", "Übung_1.ipynb"), ("e\u0301.py", "é.py")])
def test_unicode_file_names_are_kept(course_app, name, kept):
    c = course_app
    data = GOOD.encode() if name.endswith(".py") else json.dumps(
        {"cells": [{"cell_type": "code", "source": GOOD, "metadata": {}, "outputs": [], "execution_count": None}],
         "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()
    r = c.post("alice", "/api/v1/assignments/open/submissions", files={"file": (name, data)})
    assert r.status_code == 201, r.text
    sub = r.json()["submission"]
    assert sub["filename"] == kept
    f = c.get("alice", f"/api/v1/submissions/{sub['id']}/file")
    assert f.status_code == 200 and f.content == data
    assert "filename*=UTF-8''" in f.headers["content-disposition"]


@pytest.mark.parametrize("name,data,says", [("report.pdf", b"%PDF-1.7 ...", "PDF"),
                                            ("hw.zip", b"PK\x03\x04rest", "zip archive"),
                                            ("hw.txt", b'{"cells": []}', "notebook saved under another name")])
def test_a_wrong_type_is_named_for_what_it_is(course_app, name, data, says):
    r = course_app.post("alice", "/api/v1/assignments/open/submissions", files={"file": (name, data)})
    assert r.status_code == 415 and says in r.json()["detail"], r.text


def test_cheap_checks_come_before_validation(course_app, monkeypatch):
    import nbformat
    c = course_app
    for _ in range(3):  # the daily limit of `open` is 3
        assert c.submit("carol", "open").status_code == 201
    calls = []
    monkeypatch.setattr(nbformat, "validate", lambda *a, **k: calls.append(1))
    nb = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()
    r = c.post("carol", "/api/v1/assignments/open/submissions", files={"file": ("x.ipynb", nb)})
    assert r.status_code == 429 and not calls  # refused by the limit, never validated
    r = c.post("alice", "/api/v1/assignments/closed/submissions", files={"file": ("x.ipynb", nb)})
    assert r.status_code == 403 and not calls  # closed: never validated


def test_too_many_cells_are_refused_before_validation(course_app):
    cells = [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [], "execution_count": None}] * 10_001
    nb = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()
    t = time.monotonic()
    r = course_app.post("alice", "/api/v1/assignments/open/submissions", files={"file": ("x.ipynb", nb)})
    assert r.status_code == 413 and "10000" in r.json()["detail"]
    assert time.monotonic() - t < 10


# -- headers, docs, error pages ----------------------------------------------------------------
def test_security_headers_on_pages_and_api(course_app):
    c = course_app
    for r in (c.client.get("/"), c.get("alice", "/api/v1/me"), c.client.get("/nowhere")):
        h = r.headers
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "script-src 'self'" in h["content-security-policy"] and "unsafe-inline" not in \
            h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"]


def test_pages_have_no_inline_script_or_style(course_app):
    c = course_app
    c.sign_in("ta1")
    sub = c.submit("alice", "open").json()["submission"]["id"]
    for url in ("/ui", f"/ui/submissions/{sub}", "/ui/ta/open"):
        html = c.client.get(url).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert "<style" not in html and " style=" not in html, url


def test_api_docs_work_offline(course_app):
    c = course_app
    for url in ("/docs", "/redoc"):
        html = c.client.get(url).text
        assert "cdn" not in html.lower() and "/static/docs/" in html, html[:500]
    assert c.client.get("/static/docs/swagger-ui-bundle.js").status_code == 200
    assert c.client.get("/static/docs/redoc.standalone.js").status_code == 200


def test_error_pages_html_for_people_json_for_programs(course_app):
    c = course_app
    page = c.client.get("/nowhere", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "no page at /nowhere" in page.text
    api = c.client.get("/api/v1/nowhere", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.headers["content-type"].startswith("application/json")
    c.sign_in("alice")
    forbidden = c.client.get("/ui/ta/open", headers={"Accept": "text/html"})
    assert forbidden.status_code == 403 and "course staff only" in forbidden.text
    assert forbidden.headers["content-type"].startswith("text/html")
