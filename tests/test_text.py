"""What a submission writes reaches a terminal shown, never obeyed: escape sequences and
control characters in feedback, errors, notes, flags and file names are printed as
escapes (`\\x1b`) by `dlopt grade -v`, `dlopt test`, `dlopt check` and the student's
`dlopt submit/status`; Gradescope's results.json gets them the same way."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from autograder.cli import commands as cli
from autograder.judge.results import SubmissionResult, TestResult
from autograder.text import visible, visible_all
from dlopt_submit import cli as client

CLEAR = "\x1b[2J\x1b[H SCORE 100 / 100"
TITLE = "\x1b]0;pwned\x07"
CLIPBOARD = "\x1b]52;c;ZWNobyBoaQ==\x07"
HOSTILE = f"{CLEAR} {TITLE} {CLIPBOARD}\rall tests passed\b\b \x9b31m \u202edesrever [bold]markup[/bold]"
RAW = ("\x1b", "\x07", "\x9b", "\r", "\b", "\u202e")  # none of these may reach the output


def shows_escapes(out: str) -> None:
    for ch in RAW:
        assert ch not in out, (ch, out)
    for seen in ("\\x1b[2J\\x1b[H SCORE 100 / 100", "\\x1b]0;pwned\\x07", "\\x1b]52;c;ZWNobyBoaQ==\\x07",
                 "\\x9b31m", "\\u202edesrever"):
        assert seen in out, (seen, out)


def test_visible():
    assert visible("a\tb\nc") == "a\tb\nc"  # feedback keeps its lines and tabs
    assert visible("line\r\nnext") == "line\nnext"
    assert visible(CLEAR) == "\\x1b[2J\\x1b[H SCORE 100 / 100"
    assert visible(TITLE + CLIPBOARD) == "\\x1b]0;pwned\\x07\\x1b]52;c;ZWNobyBoaQ==\\x07"
    assert visible("a\rb\bc\x00\x7f\x85\u2066x\u2069\u200f\ud800") == \
        "a\\rb\\bc\\0\\x7f\\x85\\u2066x\\u2069\\u200f\\ud800"
    assert visible("é 中文 ✓ 🙂") == "é 中文 ✓ 🙂"  # text of any script is kept
    assert visible(None) == "" and visible(3) == "3"
    assert visible_all({"a": [HOSTILE, 1.5, None], "k\x1b": ("x\x07",)}) == \
        {"a": [visible(HOSTILE), 1.5, None], "k\\x1b": ["x\\x07"]}


def hostile_result(path: str) -> SubmissionResult:
    r = SubmissionResult(assignment="adam", submission=path)
    r.tests = [TestResult(name="test_public", points=0, max_points=2, visibility="public", status="failed",
                          feedback=f"adam_step(...) raised RuntimeError: {HOSTILE}\nsecond line"),
               TestResult(name="test_hidden", points=1, max_points=3, visibility="hidden", status="partial",
                          feedback=f"hidden: {HOSTILE}")]
    r.total()
    r.error = f"error: {HOSTILE}"
    r.notes = [f"note: {HOSTILE}"]
    r.flags = [{"construct": f"construct {HOSTILE}", "function": f"fn {HOSTILE}", "line": 3,
                "where": f"cell 1 {HOSTILE}"}]
    r.sandbox = {"strong": True}
    return r


@pytest.fixture
def captured(monkeypatch):
    """The CLI's console, writing into a buffer (no colours: every ESC byte in it would be
    the submission's)."""
    buf = io.StringIO()
    con = Console(file=buf, width=400, force_terminal=False, color_system=None)
    monkeypatch.setattr(cli, "console", con)
    return buf


def test_dlopt_grade_verbose_and_gradescope_show_escapes(captured, monkeypatch, tmp_path):
    name = f"sub{CLEAR}{TITLE}.py"
    stub = SimpleNamespace(slug="adam", title="Adam")
    monkeypatch.setattr(cli.assignments, "load", lambda _slug: stub)
    monkeypatch.setattr("autograder.grading.find_submissions", lambda _paths: [Path(name)])
    monkeypatch.setattr("autograder.grading.grade", lambda a, path, **kw: hostile_result(str(path)))
    gs = tmp_path / "results.json"
    args = SimpleNamespace(assignment="adam", submissions=[name], jobs=1, public=False, device=None, runner=None,
                           weak_sandbox=False, verbose=True, json=None, gradescope=str(gs))
    assert cli.cmd_grade(args) == 0
    out = captured.getvalue()
    shows_escapes(out)
    assert "[bold]markup[/bold]" in out  # rich markup in student text is printed, not applied
    assert "second line" in out  # feedback keeps its lines
    for part in ("error: ", "note: ", "construct ", "fn ", "cell 1 "):
        assert part + "\\x1b[2J" in out, part
    text = gs.read_text()  # Gradescope shows these strings as text: escapes visible there too
    data = json.loads(text)
    assert not any(ch in json.dumps(data, ensure_ascii=False) for ch in RAW)
    assert "\\x1b]52;c;ZWNobyBoaQ==\\x07" in data["output"] and "\\x1b[2J" in data["tests"][0]["output"]


def test_dlopt_test_shows_escapes(captured, monkeypatch, tmp_path):
    nb = tmp_path / "mine.py"
    nb.write_text("x = 1\n")
    monkeypatch.setattr(cli.assignments, "load", lambda _slug: SimpleNamespace(slug="adam", title="Adam"))
    monkeypatch.setattr("autograder.grading.grade", lambda a, path, **kw: hostile_result(str(path)))
    assert cli.cmd_test(SimpleNamespace(notebook=str(nb), assignment="adam", device=None)) == 1
    out = captured.getvalue()
    shows_escapes(out)
    assert "error: \\x1b[2J" in out and "note: \\x1b[2J" in out


def test_dlopt_check_lines_show_escapes():
    from autograder.authoring.release import CheckReport, _judge

    report = CheckReport()
    r = hostile_result("x.py")
    _judge(SimpleNamespace(slug="adam", points=5), report, "example x.py", Path("x.py"), r, {})
    buf = io.StringIO()
    Console(file=buf, width=400, color_system=None).print(*report.lines)
    shows_escapes(buf.getvalue())


def test_dlopt_submit_and_status_show_what_the_server_sends_as_escapes(capsys):
    """The student client (`dlopt-submit`, and the engine's `dlopt submit/status`), with no
    rich: plain text, every escape shown."""
    sub = {"id": 7, "assignment": "adam", "filename": f"sol{TITLE}.py", "status": "done", "score": 1,
           "max_score": 5, "final_score": 1,
           "run": {"error": f"error: {HOSTILE}", "notes": [f"note: {HOSTILE}"],
                   "tests": [{"name": f"test {CLEAR}", "points": 0, "max_points": 2, "status": "failed",
                              "visibility": "public", "feedback": f"raised: {HOSTILE}"}]}}
    client.print_result(sub)
    out = capsys.readouterr().out
    shows_escapes(out)
    assert "sol\\x1b]0;pwned\\x07.py" in out and "note: \\x1b[2J" in out
    assert "[bold]markup[/bold]" in out and "score: 1 / 5" in out
    rows = [[f"7{CLEAR}", f"sol{TITLE}.py", HOSTILE]]
    shows_escapes(client.table(["id", "file", "status"], rows))


def test_the_hostile_example_is_graded_and_printed_clean():
    """assignments/sgd_sampling/examples/hostile_terminal_escapes.py raises an exception
    made of escape sequences: `dlopt grade -v` prints them as escapes (the example's score
    is checked with the others by `dlopt check --examples`)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    example = repo / "assignments/sgd_sampling/examples/hostile_terminal_escapes.py"
    proc = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", "sgd_sampling", str(example), "-v"],
                          capture_output=True, text=True, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "83 / 100" in out
    for ch in RAW:
        assert ch not in out, ch
    assert "\\x1b[2J\\x1b[H" in out and "\\x1b]52;c;ZWNobyBoaQ==\\x07" in out
