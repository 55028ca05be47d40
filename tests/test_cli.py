"""The CLI end to end: grade (parallel, --json, --gradescope), test, release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "assignments/adam/examples"


def dlopt(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "autograder.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_grade_parallel_with_json_and_gradescope(tmp_path):
    subs = [EXAMPLES / "correct_alternative.py", EXAMPLES / "bug_adamw_ignores_groups.py"]
    out_json, gs = tmp_path / "scores.json", tmp_path / "gradescope"
    proc = dlopt("grade", "adam", *subs, "--jobs", 2, "--json", out_json, "--gradescope", gs)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = json.loads(out_json.read_text())
    assert [(Path(r["path"]).name, r["score"], r["max_score"]) for r in rows] == [
        ("correct_alternative.py", 100.0, 100.0), ("bug_adamw_ignores_groups.py", 92.0, 100.0)]
    assert all(isinstance(r["tests"], list) and r["tests"] for r in rows)
    gsr = json.loads((gs / "bug_adamw_ignores_groups.results.json").read_text())
    assert gsr["score"] == 92.0 and any(t["score"] < t["max_score"] for t in gsr["tests"])
    assert "correct_alternative.py" in proc.stdout and "92 / 100" in proc.stdout


def test_release_then_student_runs_public_tests(tmp_path):
    out = tmp_path / "handout"
    assert dlopt("release", "adam", out).returncode == 0
    stub = dlopt("test", out / "adam.ipynb", cwd=tmp_path)
    assert stub.returncode == 1 and "public tests: 0 / 3" in stub.stdout
    assert "NotImplementedError" in stub.stdout
    # A student's correct answer in the released folder passes the public tests.
    mine = out / "mine.py"
    mine.write_text((EXAMPLES / "correct_alternative.py").read_text())
    ok = dlopt("test", mine, "--assignment", "adam", cwd=tmp_path)
    assert ok.returncode == 0 and "public tests: 3 / 3" in ok.stdout, ok.stdout


def test_unknown_assignment_is_a_clear_error():
    proc = dlopt("grade", "nope", EXAMPLES / "correct_alternative.py")
    assert proc.returncode == 2 and "no assignment 'nope'" in proc.stdout
