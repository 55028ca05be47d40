"""The student's command line against a running server, end to end: `dlopt login` keeps
the token for the user alone, `dlopt submit --wait` uploads a notebook, follows the run
from queued to done and prints what the student may see, `dlopt status` lists the work.
The server grades for real (the probe assignment, the local sandbox)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

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


def dlopt(*args, env, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "autograder.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_login_submit_wait_and_status(served, tmp_path):
    url, course = served
    env = {**os.environ, "DLOPT_CONFIG_DIR": str(tmp_path / "cfg"), "COLUMNS": "200"}
    env.pop("DLOPT_TOKEN", None)
    env.pop("DLOPT_SERVER", None)

    bad = dlopt("login", url, "--token-stdin", env=env, stdin="dlopt_wrong\n")
    assert bad.returncode == 2 and "refused the token" in bad.stdout
    assert not (tmp_path / "cfg" / "credentials.json").exists()

    r = dlopt("login", url, "--token-stdin", env=env, stdin=course.tokens["alice"] + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "as alice (student)" in r.stdout
    cred = tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert stat.S_IMODE(cred.parent.stat().st_mode) == 0o700
    assert json.loads(cred.read_text()) == {"url": url, "token": course.tokens["alice"]}

    nb = tmp_path / "Übung 1.ipynb"
    nb.write_text(json.dumps(NOTEBOOK))
    r = dlopt("submit", "open", str(nb), "--wait", "--poll", "0.5", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "received" in out and "test_double" in out
    assert "2 / 2" in out  # the public test's points
    assert "hidden until the deadline" in out  # after_deadline feedback is not shown before the deadline
    assert "score: 10 / 10" in out, out

    r = dlopt("status", "open", env=env)
    assert r.returncode == 0 and "Übung_1.ipynb" in r.stdout and "done" in r.stdout, r.stdout
    r = dlopt("status", env=env)
    assert r.returncode == 0 and "open" in r.stdout and "Probe open" in r.stdout

    r = dlopt("submit", "no_such", str(nb), env=env)
    assert r.returncode == 2 and "404" in r.stdout


def test_commands_say_what_is_missing(tmp_path):
    env = {**os.environ, "DLOPT_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("DLOPT_TOKEN", None)
    env.pop("DLOPT_SERVER", None)
    r = dlopt("status", env=env, timeout=60)
    assert r.returncode == 2 and "dlopt login" in r.stdout
    r = dlopt("login", "http://127.0.0.1:9", "--token-stdin", env=env, stdin="x\n", timeout=60)
    assert r.returncode == 2 and "cannot reach" in r.stdout


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
    r = dlopt("login", f"http://127.0.0.1:{srv.server_port}", "--token-stdin", env=env, stdin="dlopt_secret\n",
              timeout=60)
    srv.shutdown()
    assert r.returncode == 2 and "redirected" in r.stdout, r.stdout
    assert seen == ["Bearer dlopt_secret"]  # sent once, to the address given, and not followed
