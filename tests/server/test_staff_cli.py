"""`dlopt staff ...` against a running server (uvicorn on loopback): every command a TA
needs without curl, with a staff token; a student's token gets the server's refusal."""

from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys

import pytest


@pytest.fixture
def served(settings_for):
    from fastapi.testclient import TestClient

    from server.app import create_app

    from server_course import Course, Served

    settings = settings_for(workers=1)  # the scripted grader (server_fakes)
    if not settings.database.startswith("sqlite"):
        pytest.skip("one database is enough for the command line")
    app = create_app(settings)
    live = Served(app)
    with TestClient(app) as client:
        course = Course(app, client)
        yield live.url, course
    live.stop()


def staff(url, token, *args, cwd=None):
    env = {**os.environ, "DLOPT_SERVER": url, "DLOPT_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "autograder.cli", "staff", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=cwd)


def test_a_ta_runs_the_course_from_the_command_line(served, tmp_path):
    url, c = served
    ta = c.tokens["ta1"]
    sid = c.submit("alice", "late", "# fake-score: 10\n# fake-flag\ndef double(x):\n    return 2 * x\n").json()
    sid = sid["submission"]["id"]
    c.wait_graded(sid)
    c.wait_graded(c.submit("bob", "late", "# fake-score: 4\ndef double(x):\n    return 2 * x\n").json()["submission"]["id"])

    r = staff(url, ta, "scores", "late")
    assert r.returncode == 0, r.stderr
    assert "alice" in r.stdout and "7" in r.stdout  # 3 days late: 10 x 0.7

    r = staff(url, ta, "extend", "late", "alice", "--late-days", "3", "--reason", "letter from the dean")
    assert r.returncode == 0 and "alice: deadline now" in r.stdout, r.stderr
    acc = tmp_path / "acc.csv"
    acc.write_text("login,late_days\nbob,1\n")
    r = staff(url, ta, "extend", "late", "--csv", str(acc), "--reason", "accommodation list")
    assert r.returncode == 0 and "1 extension(s) recorded" in r.stdout, r.stderr

    r = staff(url, ta, "flags", "late")
    assert r.returncode == 0 and f"{sid}" in r.stdout and "getattr with a computed name" in r.stdout, r.stdout
    r = staff(url, ta, "review", str(sid), "zeroed", "--function", "double", "--reason", "calls the library")
    assert r.returncode == 0, r.stderr
    assert "nothing to review" in staff(url, ta, "flags", "late").stdout

    r = staff(url, ta, "override", "late", "bob", "8.5", "--reason", "oral exam")
    assert r.returncode == 0 and "set to 8.5" in r.stdout and "graded" in r.stdout, r.stderr
    r = staff(url, ta, "history", "late", "bob")
    assert "oral exam" in r.stdout and "accommodation list" in r.stdout

    r = staff(url, ta, "scores", "late", "--format", "canvas", "-o", str(tmp_path / "c.csv"))
    assert r.returncode == 0
    rows = list(csv.reader(io.StringIO((tmp_path / "c.csv").read_text(encoding="utf-8-sig"))))
    assert [x[-1] for x in rows if x[2] == "bob"] == ["8.5"]
    assert [x[-1] for x in rows if x[2] == "alice"] == ["6"]  # extended (no penalty), double's 4 points zeroed

    r = staff(url, ta, "failures", "late", "test_hidden")
    assert r.returncode == 0 and "pass" in r.stdout
    r = staff(url, ta, "release", "late")
    assert "released to students" in r.stdout
    r = staff(url, ta, "regrade", "late", "--only-failed")
    assert r.returncode == 0 and "nothing to regrade" in r.stdout

    roster = tmp_path / "roster.csv"
    roster.write_text("login,name,email\nnew1,New One,n@x.edu\n")
    out = tmp_path / "tokens.csv"
    r = staff(url, ta, "tokens-csv", str(roster), "-o", str(out))
    assert r.returncode == 0, r.stderr
    got = list(csv.DictReader(io.StringIO(out.read_text())))
    assert got[0]["login"] == "new1" and got[0]["token"].startswith("dlopt_")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    # a student's token: the server refuses, the command says so
    r = staff(url, c.tokens["alice"], "scores", "late")
    assert r.returncode == 2 and "403" in r.stderr and "staff" in r.stderr


def test_every_staff_command_in_the_readme_parses_as_written():
    """The README's `dlopt staff` lines are the commands' real shapes (parsed, not run: they
    need a server)."""
    import argparse
    import shlex
    from pathlib import Path

    from autograder.cli import staff as staff_cli

    parser = argparse.ArgumentParser(prog="dlopt")
    staff_cli.register(parser.add_subparsers(dest="cmd", required=True))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = [ln.split("  #")[0].strip() for ln in readme.splitlines() if ln.startswith("dlopt staff ")]
    assert len(lines) >= 12
    for ln in lines:
        args = parser.parse_args(shlex.split(ln)[1:])
        assert args.staff_command in staff_cli.COMMANDS, ln
