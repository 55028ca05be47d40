"""The student's command line against a running server, end to end: `login` keeps the
token for the user alone, `submit --wait` uploads a notebook, follows the run from queued
to done and prints what the student may see, `status` lists the work; the same commands
as `dlopt-submit` (client/, the package students install) and as the engine's `dlopt`.
The server serves the client's wheel at `/client`, to anyone; installed from there into a
fresh venv it submits and waits. The server grades for real (the probe assignment, the
local sandbox)."""

from __future__ import annotations

import functools
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = {"cells": [
    {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# Probe"},
    {"cell_type": "code", "id": "c1", "metadata": {}, "outputs": [], "execution_count": None,
     "source": "def double(x):\n    return 2 * x\n\ndef square(v):\n    return v * v\n"}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def served(settings_for):
    from fastapi.testclient import TestClient

    from server.app import create_app

    from server_course import Course, Served

    settings = settings_for(grade_function="autograder.grading:grade", workers=1)
    if not settings.database.startswith("sqlite"):
        pytest.skip("one database is enough for the command line")
    app = create_app(settings)
    live = Served(app)
    with TestClient(app) as client:  # the roster, through the API, as a TA would
        course = Course(app, client)
    yield live.url, course
    live.stop()


# The student client as students install it (`dlopt-submit`), and as the engine's `dlopt`.
COMMANDS = {"dlopt-submit": [sys.executable, "-m", "dlopt_submit"], "dlopt": [sys.executable, "-m", "autograder.cli"]}


def dlopt(*args, env, stdin=None, timeout=300, prog="dlopt", cwd=None):
    return subprocess.run([*COMMANDS.get(prog, [prog]), *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


def student_env(tmp_path) -> dict:
    env = {**os.environ, "DLOPT_CONFIG_DIR": str(tmp_path / "cfg"), "COLUMNS": "200"}
    env.pop("DLOPT_TOKEN", None)
    env.pop("DLOPT_SERVER", None)
    return env


@pytest.mark.parametrize("prog", ["dlopt-submit", "dlopt"])
def test_login_submit_wait_and_status(served, tmp_path, prog):
    url, course = served
    login_submit_wait_and_status(url, course, tmp_path, prog)


def login_submit_wait_and_status(url, course, tmp_path, prog):
    env = student_env(tmp_path)
    dlopt = functools.partial(globals()["dlopt"], cwd=tmp_path)  # nothing of the repository's on the path

    bad = dlopt("login", url, "--token-stdin", env=env, stdin="dlopt_wrong\n", prog=prog)
    assert bad.returncode == 2 and "refused the token" in bad.stderr and f"run `{Path(prog).name} login`" in bad.stderr
    assert not (tmp_path / "cfg" / "credentials.json").exists()

    r = dlopt("login", url, "--token-stdin", env=env, stdin=course.tokens["alice"] + "\n", prog=prog)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "as alice (student)" in r.stdout
    cred = tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert stat.S_IMODE(cred.parent.stat().st_mode) == 0o700
    assert json.loads(cred.read_text()) == {"url": url, "token": course.tokens["alice"]}

    nb = tmp_path / "Übung 1.ipynb"
    nb.write_text(json.dumps(NOTEBOOK))
    r = dlopt("submit", "open", str(nb), "--wait", "--poll", "0.5", env=env, prog=prog)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "received" in out and "test_double" in out
    assert "2 / 2" in out  # the public test's points
    assert "hidden until the deadline" in out  # after_deadline feedback is not shown before the deadline
    assert "score: 10 / 10" in out, out
    assert out.index("received") < out.index("test_double") < out.index("score: 10 / 10")

    r = dlopt("status", "open", env=env, prog=prog)
    assert r.returncode == 0 and "Übung_1.ipynb" in r.stdout and "done" in r.stdout, r.stdout
    assert "score: 10 / 10" in r.stdout  # the latest result, under the list
    r = dlopt("status", env=env, prog=prog)
    assert r.returncode == 0 and "open" in r.stdout and "Probe open" in r.stdout
    assert "my latest submissions" in r.stdout and "Übung_1.ipynb" in r.stdout

    r = dlopt("submit", "no_such", str(nb), env=env, prog=prog)
    assert r.returncode == 2 and "404" in r.stderr

    # after the deadline the penalty is stated first; without a terminal to ask, --late-ok
    r = dlopt("submit", "late", str(nb), env=env, prog=prog)
    assert r.returncode == 2 and "3 day(s) late and loses 30%" in r.stderr and "--late-ok" in r.stderr, r.stderr
    assert "a day that has begun counts as a whole day" in r.stderr
    r = dlopt("submit", "late", str(nb), "--late-ok", env=env, prog=prog)
    assert r.returncode == 0 and "late by 3 day(s)" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("prog", ["dlopt-submit", "dlopt"])
def test_commands_say_what_is_missing(tmp_path, prog):
    env = student_env(tmp_path)
    r = dlopt("status", env=env, timeout=60, prog=prog)
    assert r.returncode == 2 and f"{prog} login" in r.stderr
    r = dlopt("login", "http://127.0.0.1:9", "--token-stdin", env=env, stdin="x\n", timeout=60, prog=prog)
    assert r.returncode == 2 and "cannot reach" in r.stderr


def test_staff_commands_refuse_to_invent_an_empty_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLOPT_")}
    r = subprocess.run([sys.executable, "-m", "autograder.cli", "token", "alice"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no server data" in r.stderr
    assert not (tmp_path / "dlopt-data").exists()


def test_a_redirect_is_refused_and_the_token_goes_nowhere_else(tmp_path):
    """A server that redirects (to another host, to plain http) gets no token sent on: the
    command refuses the redirect and says what to do."""
    import http.server
    import threading

    seen = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = {**os.environ, "DLOPT_CONFIG_DIR": str(tmp_path / "cfg")}
    r = dlopt("login", f"http://127.0.0.1:{srv.server_port}", "--token", "dlopt_secret", env=env, timeout=60,
              prog="dlopt-submit")
    srv.shutdown()
    assert r.returncode == 2 and "redirected" in r.stderr, r.stderr
    assert seen == ["Bearer dlopt_secret"]  # sent once, to the address given, and not followed


# -- /client: the wheel, for anyone -------------------------------------------------------
def test_client_serves_the_wheel_to_anyone_with_install_steps(course_app):
    from dlopt_submit import build

    c = course_app
    c.client.cookies.clear()
    page = c.client.get("/client")  # nobody signed in
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    name = build.wheel_name()
    assert f"python -m pip install http://testserver/client/{name}" in page.text
    assert "dlopt-submit login http://testserver" in page.text and "dlopt-submit submit" in page.text
    assert "<script" not in page.text and "style=" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]  # the app's CSP holds here too

    r = c.client.get(f"/client/{name}")
    assert r.status_code == 200 and r.content == build.wheel_bytes()
    assert r.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert "nosniff" in r.headers.get("x-content-type-options", "")
    for wrong in ("dlopt_submit-0.0.0-py3-none-any.whl", "x", "..%2Fassignment.toml", "..%2F..%2Fpyproject.toml"):
        r = c.client.get(f"/client/{wrong}")
        assert r.status_code == 404 and b"PK" not in r.content[:2], (wrong, r.text[:200])
        assert "%2F" in wrong or name in r.text  # the one file there is
    assert "/client" not in c.client.get("/openapi.json").json()["paths"]  # not part of the API
    # the engine's wheel (for `dlopt-submit test`), beside it
    from autograder.distribution import engine_wheel
    engine_name, engine_data = engine_wheel()
    assert f"http://testserver/client/{name} http://testserver/client/{engine_name}" in page.text
    r = c.client.get(f"/client/{engine_name}")
    assert r.status_code == 200 and r.content == engine_data


def test_client_names_the_configured_public_address(make_course):
    c = make_course(public_url="https://dlopt.example.edu/")
    page = c.client.get("/client")
    assert "python -m pip install https://dlopt.example.edu/client/dlopt_submit-" in page.text
    assert "dlopt-submit login https://dlopt.example.edu<" in page.text


@pytest.mark.slow
def test_the_wheel_from_the_server_installs_and_submits(served, tmp_path):
    """What a student does: pip install the server's /client wheel into a fresh venv (no
    index), then log in, submit with --wait and read the status, all from that venv."""
    import urllib.request

    from dlopt_submit import build

    url, course = served
    with urllib.request.urlopen(f"{url}/client/{build.wheel_name()}", timeout=60) as resp:
        data = resp.read()
    assert data == build.wheel_bytes()
    wheel = tmp_path / "dist" / build.wheel_name()
    wheel.parent.mkdir()
    wheel.write_bytes(data)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-index", "--disable-pip-version-check", str(wheel)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    login_submit_wait_and_status(url, course, tmp_path, str(venv / "bin" / "dlopt-submit"))
