"""assignment.toml has one schema (autograder/assignment.py: SCHEMA), validated in one
place that the engine, the server and `dlopt new` share: a misspelt or unknown key is an
error naming the file and the key, never a silent default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autograder import assignment as assignments
from autograder.assignment import AssignmentError

REPO = Path(__file__).resolve().parents[1]
GOOD = 'title = "T"\npoints = 10\nhidden_tests = ["tests/test_hidden.py"]\n'


def _folder(tmp_path: Path, toml: str) -> Path:
    d = tmp_path / "a1"
    d.mkdir(exist_ok=True)
    (d / "assignment.toml").write_text(toml)
    return d


@pytest.mark.parametrize("toml, message", [
    (GOOD + "pionts = 5\n", r"unknown key 'pionts' \(did you mean 'points'\?\)"),
    (GOOD + "[limits]\ncall_second = 5\n", r"unknown key 'limits.call_second' in \[limits\] \(did you mean 'limits.call_seconds'\?\)"),
    (GOOD + "[forbidden]\napi = ['torch.optim.Adam']\n", r"unknown key 'forbidden.api' in \[forbidden\] \(did you mean 'forbidden.apis'\?\)"),
    (GOOD + "[late_policy]\npenalty_per_days = 0.1\n", r"did you mean 'late_policy.penalty_per_day'"),
    (GOOD.replace("points = 10", 'points = "ten"'), r"points must be a number, not 'ten'"),
    (GOOD + 'gpu = "yes"\n', r"gpu must be one of 'none', 'optional', 'required'"),
    (GOOD + 'score_policy = "highest"\n', r"score_policy must be one of 'best', 'last'"),
    (GOOD + "hidden_tests = 3\n".replace("hidden_tests", "public_tests"), r"public_tests must be a list of strings"),
    (GOOD + "[limits]\nwatch_memory = 1\n", r"limits.watch_memory must be true or false"),
    (GOOD + "[limits]\nmemory_mb = 1.5\n", r"limits.memory_mb must be an integer"),
    (GOOD + 'deadline = "next friday"\n', r"deadline 'next friday' is not an ISO date"),
    ('points = 10\n', r"'title' is required"),
    ("title = 'T'\npoints = 10\n[limits]\ncall_seconds = 5; submission_seconds = 60\n", r"assignment.toml"),
])
def test_a_wrong_key_is_an_error_naming_the_file_and_the_key(tmp_path, toml, message):
    d = _folder(tmp_path, toml)
    with pytest.raises(AssignmentError, match=message) as e:
        assignments.load(d)
    assert str(d / "assignment.toml") in str(e.value)


def test_every_assignment_and_fixture_follows_the_schema():
    tomls = sorted(REPO.glob("assignments/*/assignment.toml")) + sorted(REPO.glob("tests/fixtures/*/assignment.toml"))
    assert len(tomls) >= 8
    for path in tomls:
        assignments.read_config(path)


def test_the_readme_example_parses_and_follows_the_schema(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Writing an assignment"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    d = _folder(tmp_path, block)
    a = assignments.load(d)
    assert a.points == 100 and a.limits.call_seconds == 20 and a.forbidden


def test_the_server_refuses_what_the_engine_refuses(tmp_path):
    from server.catalog import folders

    _folder(tmp_path, GOOD + "finshed = true\n")
    with pytest.raises(AssignmentError, match="did you mean 'finished'"):
        folders(tmp_path, include_unfinished=False)
