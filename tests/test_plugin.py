"""The pytest plugin through the real path, on a tiny probe assignment: points,
partial credit, visibility, missing functions, syntax errors and grader errors."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from autograder import assignment as assignments
from autograder.authoring.release import check
from autograder.grading import grade

PROBE = Path(__file__).resolve().parent / "fixtures" / "probe"


@pytest.fixture(scope="module")
def probe():
    return assignments.load(PROBE)


def by_name(r):
    return {t.name: t for t in r.tests}


def test_full_and_partial_credit(probe, tmp_path):
    p = tmp_path / "s.py"
    p.write_text("def double(x):\n    return x * 2\n\ndef square(v):\n    return v * v if v > 0 else -v * v\n")
    r = grade(probe, p)
    t = by_name(r)
    assert t["test_double"].points == 2 and t["test_double"].visibility == "public"
    assert t["test_square_partial"].points == 3 and t["test_square_partial"].status == "partial"
    assert "square(-4.0) returned -16.0, expected 16.0" in t["test_square_partial"].feedback
    assert t["test_square_partial"].visibility == "after_deadline"
    assert r.score == 2 + 3 + 4 and r.max_score == 10
    shown = {x["name"]: x["feedback"] for x in r.for_student(deadline_passed=False)["tests"]}
    assert shown["test_square_partial"] == ""


def test_a_missing_function_costs_only_its_tests(probe, tmp_path):
    p = tmp_path / "s.py"
    p.write_text("def double(x):\n    return x * 2\n")
    r = grade(probe, p)
    t = by_name(r)
    assert t["test_double"].points == 2 and t["test_square_partial"].points == 0
    assert "`square` is not defined at the top level of your submission" in t["test_square_partial"].feedback


def test_a_syntax_error_in_one_cell_is_explained_where_it_costs(probe, tmp_path):
    nb = new_notebook(cells=[new_code_cell("def double(x):\n    return x * 2"),
                             new_code_cell("def square(v)\n    return v * v")])
    p = tmp_path / "s.ipynb"
    nbformat.write(nb, str(p))
    r = grade(probe, p)
    t = by_name(r)
    assert t["test_double"].points == 2
    assert "cell 2: syntax error at line 1" in t["test_square_partial"].feedback
    assert any("syntax error" in n for n in r.notes)


def test_feedback_is_short_and_names_the_student_line(probe, tmp_path):
    p = tmp_path / "s.py"
    p.write_text("def double(x):\n    y = x * 2\n    return y / 0 if False else undefined_name\n")
    r = grade(probe, p)
    fb = by_name(r)["test_double"].feedback
    assert "NameError" in fb and "line 3" in fb and "undefined_name" in fb
    assert len(fb.splitlines()) <= 4 and "Traceback" not in fb


def test_a_bug_in_the_suite_is_a_grader_error_and_fails_check(probe, tmp_path):
    p = tmp_path / "s.py"
    p.write_text("def double(x):\n    return x * 2\n\ndef trigger_grader_bug():\n    pass\n")
    r = grade(probe, p)
    t = by_name(r)["test_grader_bug_is_an_error_not_a_failure"]
    assert t.status == "error" and t.points == 0
    assert "internal error" in t.feedback and "KeyError" not in t.feedback  # staff only
    assert any("a bug in the hidden suite" in e for e in r.grader_errors)


def test_check_without_a_master_notebook_is_an_author_error(probe):
    # The probe has no master notebook: check must say so rather than crash or pass.
    with pytest.raises(ValueError, match="no master notebook"):
        check(probe)


def test_a_class_a_harness_task_needs_but_the_submission_lacks_is_named_in_the_feedback(adam, tmp_path):
    """Reached through student.task (the harness looks it up in the student's namespace):
    the feedback says what is missing, never a bare KeyError('AdamW')."""
    source = (Path(__file__).resolve().parents[1] / "assignments/adam/examples/correct_alternative.py").read_text()
    p = tmp_path / "renamed.py"
    p.write_text(source.replace("class AdamW", "class AdamWRenamed"))
    r = grade(adam, p, keyword="adamw_trains_like_torch_default")
    (t,) = [t for t in r.tests if t.name == "test_adamw_trains_like_torch_default_hyperparameters"]
    assert t.points == 0 and not r.grader_errors
    assert t.feedback.startswith("`AdamW` is not defined at the top level of your submission"), t.feedback
    assert "KeyError" not in t.feedback


def test_a_function_or_class_with_the_wrong_signature_is_named_in_the_feedback(adam, tmp_path):
    """For calls and for harness tasks alike: the feedback says the definition does not take
    the arguments the assignment specifies, with the signatures, not a bare TypeError."""
    source = (Path(__file__).resolve().parents[1] / "assignments/adam/examples/correct_alternative.py").read_text()
    p = tmp_path / "narrow.py"
    p.write_text(source.replace("def sgd_momentum_step(", "def sgd_momentum_step(only_one, ")
                 .replace("class AdamW(torch.optim.Optimizer):",
                          "class AdamW(torch.optim.Optimizer):\n    def __new__(cls):\n"
                          "        return super().__new__(cls)\n"))
    r = grade(adam, p, keyword="sgd_momentum or adamw_trains_like_torch_default")
    by = {t.name: t for t in r.tests}
    sgd = [t for n, t in by.items() if "sgd" in n and t.points == 0]
    assert sgd and not r.grader_errors
    fb = sgd[0].feedback
    assert fb.startswith("`sgd_momentum_step` cannot be called as the assignment specifies"), fb
    assert "sgd_momentum_step(only_one, " in fb and "Traceback" not in fb
    task = by["test_adamw_trains_like_torch_default_hyperparameters"]
    assert task.points == 0 and "called your code as the assignment specifies" in task.feedback, task.feedback


def test_a_flag_names_the_cell_and_line_the_student_sees_and_its_title(probe, tmp_path):
    """One place for a flag: `cell` and `line` where the student sees it (a markdown cell and
    a dropped statement before it change nothing), the same in `where`; the extracted code's
    line kept apart as `source_line`. A test's title is its docstring's first line."""
    from nbformat.v4 import new_markdown_cell
    nb = new_notebook(cells=[new_markdown_cell("# work"), new_code_cell("print('scratch')\nx = 1"),
                             new_code_cell("def double(x):\n    name = '__m' + 'ul__'\n    return getattr(x, name)(2)"),
                             new_code_cell("def square(v):\n    return v * v")])
    p = tmp_path / "s.ipynb"
    nbformat.write(nb, str(p))
    r = grade(probe, p)
    flag = r.flags[0]
    assert (flag["cell"], flag["line"], flag["where"]) == (3, 3, "cell 3, line 3"), flag
    assert flag["source_line"] == 4  # x = 1, then double: line 4 of the extracted code
    assert by_name(r)["test_square_partial"].title == "Four cases; each is a quarter of the points."
    assert by_name(r)["test_double"].title == ""  # no docstring: pages show the name
