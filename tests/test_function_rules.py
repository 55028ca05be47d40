"""[forbidden.functions.NAME]: rules of one graded function only (`low_rank` forbids
autograd in `lora_backward` and nowhere else). The static scan counts a function rule's
APIs in that function (and the helpers it calls) only; at runtime that function is
called in a child whose guard adds the rule below the student's code, so a computed name
or a second route does not escape it, while every other function keeps autograd."""

from __future__ import annotations

import textwrap

import pytest

from autograder import assignment
from autograder.grading import grade

TOML = '''slug = "rules"
title = "Per-function rules probe"
points = 5
harness = "harness.py"
public_tests = []
hidden_tests = ["tests/test_hidden.py"]
finished = false

[limits]
call_seconds = 20
submission_seconds = 120

[forbidden]
apis = ["torch._foreach_*"]
runtime = ["aten::_foreach_*"]

[forbidden.functions.manual_grad]
apis = ["torch.autograd", "torch.func", "*.backward"]
block_autograd = true
'''
SUITE = '''
import pytest
import torch

@pytest.mark.points(2)
@pytest.mark.function("manual_grad")
def test_manual_grad(student):
    x = torch.tensor([1.0, -2.0, 3.0])
    got = student.call("manual_grad", x).value
    assert torch.equal(got, 2 * x), f"manual_grad returned {got!r}"

@pytest.mark.points(1)
@pytest.mark.function("auto_grad")
def test_auto_grad(student):
    x = torch.tensor([1.0, -2.0, 3.0])
    got = student.call("auto_grad", x).value
    assert torch.equal(got, 2 * x), f"auto_grad returned {got!r}"

@pytest.mark.points(1)
@pytest.mark.function("auto_grad")
def test_auto_grad_after_the_guarded_function(student):
    x = torch.tensor([0.5, 4.0])
    try:
        student.call("manual_grad", x)  # the guarded child, whatever it does
    except Exception:
        pass
    got = student.call("auto_grad", x).value
    assert torch.equal(got, 2 * x), f"auto_grad returned {got!r}"

@pytest.mark.points(1)
@pytest.mark.function("manual_grad")
def test_manual_grad_through_a_task(student):
    x = torch.tensor([2.0, 1.0])
    got = student.task("run", "manual_grad", x).value
    assert torch.equal(got, 2 * x), f"manual_grad returned {got!r}"
'''
HARNESS = '''
def run(ns, name, x):
    return ns[name](x)
'''
AUTO = '''
def auto_grad(x):
    x = x.clone().requires_grad_(True)
    (x * x).sum().backward()
    return x.grad.detach()
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    (root / "assignment.toml").write_text(TOML)
    (root / "tests").mkdir()
    (root / "tests" / "test_hidden.py").write_text(SUITE)
    (root / "harness.py").write_text(HARNESS)
    return assignment.load(root)


def _grade(probe, tmp_path, source):
    path = tmp_path / "sub.py"
    path.write_text("import torch\n" + textwrap.dedent(source) + AUTO)
    result = grade(probe, path)
    assert result.error is None, result.error
    return result, {t.name: t for t in result.tests}


def test_the_schema_takes_a_table_per_function(probe, tmp_path):
    assert probe.function_rules == {"manual_grad": {"apis": ["torch.autograd", "torch.func", "*.backward"],
                                                    "block_autograd": True}}
    bad = tmp_path / "bad"
    (bad / "tests").mkdir(parents=True)
    (bad / "assignment.toml").write_text(TOML.replace("block_autograd = true", "block_autograds = true"))
    with pytest.raises(assignment.AssignmentError, match=r"forbidden\.functions\.manual_grad\.block_autograds"):
        assignment.load(bad)
    (bad / "assignment.toml").write_text(TOML.replace('"torch.func",', '"torch.funcs",'))
    from autograder.judge.forbidden import validate
    with pytest.raises(assignment.AssignmentError, match=r"functions\.manual_grad\.apis"):
        validate(assignment.load(bad))


def test_autograd_elsewhere_is_allowed_and_the_honest_function_scores(probe, tmp_path):
    result, tests = _grade(probe, tmp_path, "def manual_grad(x):\n    return 2 * x\n")
    assert result.score == 5, [(t.name, t.feedback) for t in result.tests]
    assert result.forbidden == []


def test_autograd_named_in_the_function_costs_its_points_only(probe, tmp_path):
    result, tests = _grade(probe, tmp_path, '''
        def manual_grad(x):
            x = x.clone().requires_grad_(True)
            return torch.autograd.grad((x * x).sum(), x)[0]
        ''')
    assert tests["test_manual_grad"].points == 0
    assert tests["test_auto_grad"].points == 1 and tests["test_auto_grad_after_the_guarded_function"].points == 1
    assert any(f["function"] == "manual_grad" and f["api"].startswith("torch.autograd") for f in result.forbidden)


def test_a_computed_name_meets_the_guard_in_that_function_only(probe, tmp_path):
    # The static scan cannot see getattr(torch, "auto" + "grad"); the child that runs
    # manual_grad was started with autograd closed at the engine's gate.
    result, tests = _grade(probe, tmp_path, '''
        def manual_grad(x):
            ag = getattr(torch, "auto" + "grad")
            x = x.clone().requires_grad_(True)
            return ag.grad((x * x).sum(), x)[0]
        ''')
    assert tests["test_manual_grad"].points == 0, tests["test_manual_grad"].feedback
    assert "autograd" in tests["test_manual_grad"].feedback
    # A harness task of a test marked manual_grad runs in that function's guarded child too.
    # (Its points go with the function's finding either way; the refusal inside the task is
    # what shows the guard was there.)
    task = tests["test_manual_grad_through_a_task"]
    assert task.points == 0 and "forbidden by the assignment" in task.feedback, task.feedback
    assert tests["test_auto_grad"].points == 1 and tests["test_auto_grad_after_the_guarded_function"].points == 1
    assert any(f["function"] == "manual_grad" for f in result.forbidden), result.forbidden


def test_a_helper_called_by_the_function_carries_the_rule(probe, tmp_path):
    result, tests = _grade(probe, tmp_path, '''
        def _helper(x):
            x = x.clone().requires_grad_(True)
            (x * x).sum().backward()
            return x.grad
        def manual_grad(x):
            return _helper(x)
        ''')
    assert tests["test_manual_grad"].points == 0
    assert tests["test_auto_grad"].points == 1
