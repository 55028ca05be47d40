"""`dlopt new SLUG`: a working assignment folder to start from.

What it writes passes `dlopt check SLUG --examples` as generated (a test proves it): one
graded function, heavy-ball momentum, with its master notebook, a trusted reference and
the reference's own test against an independent formulation (torch.optim.SGD), a
harness task, public and hidden suites written with the engine's helpers, and examples
(a correct alternative and two bugs students make) with their expected scores.
docs/authoring.md walks from here to a released, checked assignment.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

SLUG = re.compile(r"[a-z][a-z0-9_]{1,40}")

ASSIGNMENT_TOML = '''# {title}: every key of assignment.toml (the schema: autograder/assignment.py, SCHEMA;
# docs/authoring.md explains each). An unknown or misspelt key is an error naming it.
slug = "{slug}"
title = "{title}"
points = 10                          # = the points of the hidden + public suites (dlopt check compares)
gpu = "none"                         # none | optional | required (on a GPU worker student code runs on cuda)
extraction = "definitions"           # imports, functions, classes, constants; "all": every cell
master = "{slug}.ipynb"              # the solved notebook; `dlopt release` writes the student's version
harness = "harness.py"               # trusted tasks that run next to the student's code in the sandbox
public_tests = ["tests/test_public.py"]
hidden_tests = ["tests/test_hidden.py"]
deadline = "2099-01-01T23:59:00+00:00"  # ISO 8601 with its UTC offset
finished = false                     # true: part of `dlopt check`, the demo and the server
# daily_submission_limit = 20        # per student and day, on the server
# score_policy = "best"              # the gradebook's score: "best" or "last" graded submission
# feedback_after_deadline = false    # true: after_deadline tests show feedback once the deadline has passed

[late_policy]
grace_minutes = 15
penalty_per_day = 0.10               # a fraction of the score per day late
max_days_late = 3                    # later than this: not accepted

[limits]                             # CPU seconds: a grade does not depend on the machine's load
call_seconds = 10                    # one call of a student function
submission_seconds = 60              # the whole submission, every child included
# wall_factor = 4.0                  # wall-clock backstop: this many times the CPU limit (+10 s per call)
# wait_seconds = 30                  # time the child may sleep or block, per submission (raise where waiting is honest)
# wait_seconds_gpu = 0               # the same with student code on a GPU (0: not charged)
# cpu_seconds = 300                  # RLIMIT_CPU of each child
# memory_mb = 4096                   # the child's memory cgroup limit (and RLIMIT_AS on CPUs)
# tmp_mb = 0                         # the sandbox's /tmp (0: a quarter of memory_mb, at least 64)
# processes = 64                     # processes and threads of the sandbox uid
# file_mb = 64                       # the largest file the child may write
# open_files = 256
# watch_memory = false               # true: memory rules measured by the kernel (watch_memory=True calls)
# reply_mb = 256                     # the most payload one reply may carry (or 4x its request)
# reply_header_kb = 4096

[forbidden]
apis = ["torch.optim.SGD"]           # the judge's scan of the source: a graded function using it earns nothing
runtime = ["torch.optim.SGD"]        # made to raise in the child, whatever name reaches it
# block_autograd = false             # true: no gradient can be computed in the child
# flags_cost_points = false          # true: a function flagged for review earns nothing
# allow_imports = []                 # modules beyond the static scan's allow-list (judge/forbidden.py)
# [forbidden.functions.heavy_ball_step]  # rules of one graded function only: its scan, and a child
# apis = ["torch.autograd"]          #   guarded for its calls (the other functions keep what it loses)
# runtime = []
# block_autograd = false
# [[boards]]                         # a kernel leaderboard (autograder/judge/boards.py; README, "Kernel boards")
# name = "fast-kernel"               # the board's name on the page
# function = "my_kernel"             # the timed student function; its tests gate the board
# shapes = [{{n = 4096}}]              # harness parameters of each timed shape (all timed)
# cpu_shapes = [{{n = 32}}]            # CPU workers and `dlopt check`: the checks only
# run_task = "board_run"             # the harness's timed loop (autograder.child.timed.run)
'''

INTRO = """# {title}

Heavy-ball momentum (Polyak, 1964) keeps a velocity, a running sum of past gradients:

$$v_{{t+1}} = \\beta v_t + g_t, \\qquad x_{{t+1}} = x_t - \\eta\\, v_{{t+1}}.$$

Implement `heavy_ball_step(param, velocity, grad, lr, beta)`: return the new parameter and
the new velocity as new tensors, of the inputs' dtype and shape, and leave the inputs
unchanged. `torch.optim.SGD` is not allowed."""

SOLUTION = '''import torch


def heavy_ball_step(param, velocity, grad, lr, beta):
    """One step of heavy-ball momentum: (new param, new velocity)."""
    ### BEGIN SOLUTION
    new_velocity = beta * velocity + grad
    new_param = param - lr * new_velocity
    return new_param, new_velocity
    ### END SOLUTION
'''

TRY_IT = '''x, v = torch.ones(3), torch.zeros(3)
for _ in range(3):
    x, v = heavy_ball_step(x, v, 2 * x, lr=0.1, beta=0.9)  # f(x) = |x|^2
x'''

REFERENCE = '''"""The trusted reference of {slug}: float64, written for clarity (tests/test_reference.py
checks it against torch.optim.SGD, an independent formulation)."""

import torch


def heavy_ball_step(param, velocity, grad, lr, beta):
    new_velocity = beta * velocity + grad
    return param - lr * new_velocity, new_velocity


def minimize_quadratic(a, b, x0, lr, beta, steps):
    """x after `steps` heavy-ball steps on f(x) = x^T A x / 2 - b^T x."""
    x, v = x0.clone(), torch.zeros_like(x0)
    for _ in range(steps):
        x, v = heavy_ball_step(x, v, a @ x - b, lr, beta)
    return x
'''

REFERENCE_TEST = '''"""The reference against an independent formulation: torch.optim.SGD with momentum is
heavy ball (dampening 0, no Nesterov). Run by `dlopt check {slug}`."""

from pathlib import Path

import torch

from autograder.judge.compare import tolerance_for
from autograder.judge.suite import generator, load_module, randn

REF = load_module(Path(__file__).resolve().parents[1] / "reference.py", "{slug}_reference")


def test_the_reference_is_torch_sgd_with_momentum():
    g = generator("{slug}-reference")
    x0, grads = randn(g, 9, dtype=torch.float64), [randn(g, 9, dtype=torch.float64) for _ in range(5)]
    p = x0.clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=0.05, momentum=0.9)
    x, v = x0.clone(), torch.zeros_like(x0)
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
        x, v = REF.heavy_ball_step(x, v, grad, 0.05, 0.9)
    # The same float64 arithmetic, grouped differently (torch adds lr * v with alpha): a
    # rounding per operation, 5 steps: a few ulps (measured: 1 ulp).
    rtol, atol = tolerance_for(torch.float64, reduction=5)
    torch.testing.assert_close(x, p.detach(), rtol=rtol, atol=atol)
'''

HARNESS = '''"""Trusted tasks of {slug}: they run in the sandbox next to the student's code (which
they reach through `ns`, the student's namespace) and return only data."""

import torch


def minimize_quadratic(ns, a, b, x0, lr, beta, steps):
    """Run the student's heavy_ball_step on f(x) = x^T A x / 2 - b^T x; return x."""
    x, v = x0.clone(), torch.zeros_like(x0)
    for _ in range(steps):
        x, v = ns["heavy_ball_step"](x, v, a @ x - b, lr, beta)
    return x
'''

PUBLIC = '''"""Public tests of {slug}: what a student sees before submitting (visibility "public")."""

import pytest
import torch

from autograder.judge.compare import describe_call, expect_close, expect_tuple, tolerance_for

pytestmark = [pytest.mark.visibility("public"), pytest.mark.function("heavy_ball_step")]


@pytest.mark.points(2)
def test_public_first_step(student, device):
    x, v, g = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.25]), torch.tensor([3.0, 1.0])
    call = describe_call("heavy_ball_step", x, v, g, 0.1, 0.9)
    r = student.call("heavy_ball_step", x.to(device), v.to(device), g.to(device), 0.1, 0.9)
    new_x, new_v = expect_tuple(r.value, 2, call=call, names="new param, new velocity")
    rtol, atol = tolerance_for(torch.float32)  # a few float32 operations per entry: a few ulps
    expect_close(new_v, torch.tensor([3.45, 1.225]), call=call, what="the new velocity", rtol=rtol, atol=atol)
    expect_close(new_x, torch.tensor([0.655, -2.1225]), call=call, what="the new param", rtol=rtol, atol=atol)
'''

HIDDEN = '''"""Hidden tests of {slug}: random inputs from generators seeded by each test's label
(the same at every regrade, never hand-picked), compared with the float64 reference."""

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import describe_call, expect_close, expect_tuple, expect_unchanged, tolerance_for
from autograder.judge.suite import generator, load_module, randn

REF = load_module(Path(__file__).resolve().parents[1] / "reference.py", "{slug}_reference")
STEP = pytest.mark.function("heavy_ball_step")


def _step_case(student, device, label, shape, dtype, lr, beta, return_args=False):
    g = generator(label)
    x, v, grad = (randn(g, *shape, dtype=dtype) for _ in range(3))
    call = describe_call("heavy_ball_step", x, v, grad, lr, beta)
    r = student.call("heavy_ball_step", x.to(device), v.to(device), grad.to(device), lr, beta,
                     return_args=return_args)
    new_x, new_v = expect_tuple(r.value, 2, call=call, names="new param, new velocity")
    ref_x, ref_v = REF.heavy_ball_step(x.double(), v.double(), grad.double(), lr, beta)
    # Two multiply-adds per entry, rounded in `dtype`: 8 ulps covers every order of them.
    rtol, atol = tolerance_for(dtype)
    expect_close(new_v, ref_v.to(dtype), call=call, what="the new velocity", rtol=rtol, atol=atol,
                 why="v_new = beta * v + grad")
    expect_close(new_x, ref_x.to(dtype), call=call, what="the new param", rtol=rtol, atol=atol,
                 why="x_new = x - lr * v_new (the new velocity, not the old one)")
    return r, (x, v, grad), call


@STEP
@pytest.mark.points(3)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_step_matches_the_reference(student, device, dtype):
    _step_case(student, device, f"one-step-{{dtype}}", (7, 5), dtype, lr=0.03, beta=0.85)


@STEP
@pytest.mark.points(1)
def test_inputs_are_left_unchanged(student, device):
    r, inputs, call = _step_case(student, device, "unchanged", (11,), torch.float32, lr=0.1, beta=0.5,
                                 return_args=True)
    for before, after, name in zip(inputs, r.args_after[:3], ("param", "velocity", "grad")):
        expect_unchanged(before, after, call=call, name=name)


@STEP
@pytest.mark.points(1)
def test_minimizes_a_quadratic_like_the_reference(student, device):
    g = generator("quadratic")
    m = randn(g, 6, 6, dtype=torch.float64)
    a = m @ m.T / 6 + torch.eye(6, dtype=torch.float64)  # positive definite, condition ~10
    b, x0 = randn(g, 6, dtype=torch.float64), randn(g, 6, dtype=torch.float64)
    r = student.task("minimize_quadratic", a.to(device), b.to(device), x0.to(device), 0.1, 0.8, 40,
                     what="minimize_quadratic(40 heavy-ball steps)")
    want = REF.minimize_quadratic(a, b, x0, 0.1, 0.8, 40)
    # 40 float64 steps of a contraction: rounding errors stay within a few hundred ulps.
    expect_close(r.value, want, call="40 steps of your heavy_ball_step on a quadratic", what="the final x",
                 rtol=1e-12, atol=1e-12)
'''

CORRECT = '''import torch


def heavy_ball_step(param, velocity, grad, lr, beta):
    # in place on copies: the inputs are left as they were
    v = velocity.clone().mul_(beta).add_(grad)
    return torch.sub(param, v, alpha=lr), v
'''

BUG_OLD_VELOCITY = '''def heavy_ball_step(param, velocity, grad, lr, beta):
    new_velocity = beta * velocity + grad
    return param - lr * velocity, new_velocity  # the bug: the step uses the old velocity
'''

BUG_IN_PLACE = '''def heavy_ball_step(param, velocity, grad, lr, beta):
    velocity.mul_(beta).add_(grad)  # the bug: the caller's tensors are changed
    param.sub_(lr * velocity)
    return param, velocity
'''

SCORES = '''# The score each example must get (checked by `dlopt check {slug} --examples`).
"correct_alternative.py" = 10.0     # in-place ops on clones, torch.sub with alpha
"bug_old_velocity.py" = 0.0         # every step wrong (the public test and the quadratic too)
"bug_in_place.py" = 9.0             # right numbers, inputs modified: the unchanged test's point
'''


def write(slug: str, root: Path, title: str | None = None) -> Path:
    """Write a new assignment folder `root/slug`; refuse an existing one or a bad slug."""
    if not SLUG.fullmatch(slug):
        raise ValueError(f"{slug!r} is not a slug: lower case letters, digits and _, starting with a letter")
    folder = root / slug
    if folder.exists():
        raise FileExistsError(f"{folder} exists already: dlopt new never overwrites an assignment")
    title = title or slug.replace("_", " ").capitalize()
    fmt = {"slug": slug, "title": title}
    (folder / "tests").mkdir(parents=True)
    (folder / "examples").mkdir()
    (folder / "assignment.toml").write_text(ASSIGNMENT_TOML.format(**fmt))
    (folder / "reference.py").write_text(REFERENCE.format(**fmt))
    (folder / "harness.py").write_text(HARNESS.format(**fmt))
    (folder / "tests" / "test_public.py").write_text(PUBLIC.format(**fmt))
    (folder / "tests" / "test_hidden.py").write_text(HIDDEN.format(**fmt))
    (folder / "tests" / "test_reference.py").write_text(REFERENCE_TEST.format(**fmt))
    (folder / "examples" / "correct_alternative.py").write_text(CORRECT)
    (folder / "examples" / "bug_old_velocity.py").write_text(BUG_OLD_VELOCITY)
    (folder / "examples" / "bug_in_place.py").write_text(BUG_IN_PLACE)
    (folder / "examples" / "scores.toml").write_text(SCORES.format(**fmt))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(INTRO.format(**fmt)), nbformat.v4.new_code_cell(SOLUTION),
                nbformat.v4.new_markdown_cell("Try it (not graded):"), nbformat.v4.new_code_cell(TRY_IT)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{slug}.ipynb")
    return folder
