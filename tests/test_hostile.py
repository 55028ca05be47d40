"""Hostile submissions, each graded through the real path (`grade`) on `adam`.

Each scores exactly what its honest behaviour earns: a correct solution with hostile
extras gets 100, a buggy one (no bias correction, honest score 46) gets 46 whatever it
patches or prints, and code that kills its own process loses the tests it ran in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autograder.grading import grade
from autograder.sandbox.local import bwrap_path

REPO = Path(__file__).resolve().parents[1]
HIDDEN = REPO / "assignments/adam/tests/test_hidden.py"
REFERENCE = REPO / "reference/adam.py"

PATCH_COMPARISONS = '''
import torch, torch.testing
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
torch.Tensor.__eq__ = lambda self, other: torch.ones_like(self, dtype=torch.bool)
import builtins
builtins.abs = lambda x: 0
'''

FAKE_RESULTS = '''
import json, os, sys
fake = {"score": 100, "max_score": 100, "tests": [{"name": "everything", "score": 100, "max_score": 100}]}
print(json.dumps(fake))
print(json.dumps(fake), file=sys.stderr)
for path in ("results.json", "/tmp/result.json", "/autograder/results/results.json"):
    try:
        with open(path, "w") as f:
            json.dump(fake, f)
    except OSError:
        pass
'''

WRITE_OUTSIDE = f'''
for path in ({str(HIDDEN)!r}, {str(REFERENCE)!r}, {str(REPO / "pwned.txt")!r}, "/etc/pwned"):
    try:
        with open(path, "a") as f:
            f.write("# pwned")
    except OSError:
        pass
'''

KILL_PARENT = '''
import os, signal
for target in (os.getppid(), 1):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError:
        pass
_orig_sgd = sgd_momentum_step
def sgd_momentum_step(*a, **k):
    try:
        os.kill(os.getppid(), signal.SIGKILL)
    except OSError:
        pass
    return _orig_sgd(*a, **k)
'''


def needs_bwrap_here():
    if bwrap_path() is None:
        pytest.skip("bubblewrap is missing or cannot create namespaces here: the local runner is weak")


def _grade(adam, tmp_path, source: str, name: str = "hostile.py"):
    p = tmp_path / name
    p.write_text(source)
    return grade(adam, p)


def _assert_score(r, want):
    assert not r.grader_errors, r.grader_errors
    lost = [(t.name, t.points, t.feedback[:200]) for t in r.tests if t.points < t.max_points]
    assert r.score == pytest.approx(want), lost


def test_patching_comparisons_changes_nothing(runner, adam, tmp_path, buggy_source):
    r = _grade(adam, tmp_path, buggy_source + PATCH_COMPARISONS)
    _assert_score(r, 46.0)


def test_printing_and_writing_fake_results_changes_nothing(runner, adam, tmp_path, buggy_source):
    r = _grade(adam, tmp_path, buggy_source + FAKE_RESULTS)
    _assert_score(r, 46.0)


def test_top_level_exit_is_work_and_is_not_run(runner, adam, tmp_path, correct_source):
    """Definitions mode drops top-level calls, os._exit(0) included: nothing happens."""
    r = _grade(adam, tmp_path, "import os\nos._exit(0)\n" + correct_source)
    _assert_score(r, 100.0)


def test_os_exit_at_import_scores_zero_with_a_reason(runner, adam, tmp_path, correct_source):
    """A class body runs at import: exiting there leaves nothing to grade."""
    r = _grade(adam, tmp_path, "import os\nclass Quit:\n    os._exit(0)\n" + correct_source)
    _assert_score(r, 0.0)
    assert any("exited with code 0" in t.feedback for t in r.tests)


def test_sys_exit_at_import_is_caught_like_a_notebook_cell(runner, adam, tmp_path, correct_source):
    r = _grade(adam, tmp_path, correct_source + "\nimport sys\nclass Quit:\n    sys.exit(0)\n")
    _assert_score(r, 100.0)
    assert any("SystemExit" in n for n in r.notes)


def test_sys_exit_inside_a_function_costs_that_function(runner, adam, tmp_path, correct_source):
    src = correct_source + "\n\ndef rmsprop_step(*a, **k):\n    import sys\n    sys.exit(3)\n"
    r = _grade(adam, tmp_path, src)
    _assert_score(r, 88.0)  # rmsprop: 10 points, plus its 2 points of inputs-unchanged
    assert any("SystemExit" in t.feedback for t in r.tests if "rmsprop" in t.name)


def test_os_exit_inside_a_function_costs_that_function(runner, adam, tmp_path, correct_source):
    src = correct_source + "\n\ndef adagrad_step(*a, **k):\n    import os\n    os._exit(0)\n"
    r = _grade(adam, tmp_path, src)
    _assert_score(r, 85.0)  # adagrad: 13 points, plus 2 of inputs-unchanged
    assert any("process ended" in t.feedback for t in r.tests if "adagrad" in t.name)


def test_killing_the_parent_changes_nothing(runner, adam, tmp_path, correct_source):
    if runner == "local":
        needs_bwrap_here()
    r = _grade(adam, tmp_path, correct_source + KILL_PARENT)
    _assert_score(r, 100.0)


def test_writing_outside_its_directory_changes_nothing(runner, adam, tmp_path, correct_source):
    if runner == "local":
        needs_bwrap_here()
    before = (HIDDEN.read_bytes(), REFERENCE.read_bytes())
    r = _grade(adam, tmp_path, correct_source + WRITE_OUTSIDE)
    _assert_score(r, 100.0)
    assert (HIDDEN.read_bytes(), REFERENCE.read_bytes()) == before
    assert not (REPO / "pwned.txt").exists() and not Path("/etc/pwned").exists()


def test_returning_unsendable_objects_fails_only_that_function(runner, adam, tmp_path, correct_source):
    src = correct_source + ("\n\nclass Evil:\n    def __reduce__(self):\n        import os\n"
                            "        return (os.system, ('touch /tmp/dlopt-pwned',))\n\n"
                            "def rmsprop_step(*a, **k):\n    return Evil(), Evil()\n")
    r = _grade(adam, tmp_path, src)
    _assert_score(r, 88.0)
    assert not Path("/tmp/dlopt-pwned").exists()
    assert any("cannot be graded" in t.feedback for t in r.tests if "rmsprop" in t.name)


def test_a_malformed_notebook_is_a_graded_zero_with_a_reason(runner, adam, tmp_path):
    p = tmp_path / "broken.ipynb"
    p.write_text('{"cells": [ {"cell_type": "code", "source": "def f(')
    r = grade(adam, p)
    assert r.score == 0 and r.max_score == 100
    assert "not valid JSON" in (r.error or "")
    assert all(t.status == "failed" for t in r.tests if t.max_points)
