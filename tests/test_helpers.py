"""The suite helper library (autograder/judge/compare.py, stats.py) and the one module
that turns outcomes into points (autograder/scoring.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from autograder import scoring
from autograder.judge import stats
from autograder.judge.compare import (
    CaseTally,
    GradingFailure,
    PartialCredit,
    expect_close,
    expect_tuple,
    first_failure,
    tolerance_for,
)


def test_tolerance_grows_with_the_reduction_and_scales_its_absolute_part():
    eps = torch.finfo(torch.float32).eps
    assert tolerance_for(torch.float32) == pytest.approx((8 * eps, 8 * eps))
    rtol, atol = tolerance_for(torch.float32, 100, 16, scale=5.0, extra=1e-6)
    assert rtol == pytest.approx(16 * eps * 10 + 1e-6) and atol == pytest.approx(rtol * 5.0)


def test_a_bound_per_element_holds_each_element_to_its_own():
    """The ring suite's case: each element of a sum within the rounding of its own terms."""
    want = torch.tensor([1.0, 1000.0, -3.0], dtype=torch.float64)
    bound = torch.tensor([1e-9, 1e-3, 1e-9], dtype=torch.float64)
    expect_close(want + torch.tensor([5e-10, 9e-4, 0.0], dtype=torch.float64), want, call="f(x)",
                 rtol=0.0, atol=bound)
    with pytest.raises(GradingFailure) as e:  # 2e-9 at element 0 is over its own bound, though small beside 9e-4
        expect_close(want + torch.tensor([2e-9, 9e-4, 0.0], dtype=torch.float64), want, call="f(x)",
                     rtol=0.0, atol=bound)
    msg = str(e.value)
    assert "off at 1 of 3 entries" in msg and "index [0]" in msg and "allowed 1e-09 at this entry" in msg
    # a flat bound for a shaped result, and an exact bound (zeros) that points at the wrong entry
    grid = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    expect_close(grid, grid, call="g()", rtol=0.0, atol=torch.zeros(6, dtype=torch.float64))
    off = grid.clone()
    off[1, 2] += 1
    assert "index [1, 2]" in first_failure(expect_close, off, grid, call="g()", rtol=0.0,
                                           atol=torch.zeros(6, dtype=torch.float64))
    assert first_failure(expect_close, grid, grid, call="g()", tol=(0.0, 0.0)) is None


def test_expect_tuple_names_what_came_back():
    with pytest.raises(GradingFailure, match=r"expected a tuple of 2 values \(o, lse\), got .* of length 3"):
        expect_tuple((1, 2, 3), 2, call="f()", names=("o", "lse"))
    assert expect_tuple([1, 2], 2, call="f()") == [1, 2]


def test_case_tally_gives_the_share_of_passing_cases():
    tally = CaseTally()
    for i in range(4):
        tally.run(expect_close, torch.tensor([float(i > 0)]), torch.tensor([1.0]), call=f"case {i}", rtol=0, atol=0)
    with pytest.raises(PartialCredit) as e:
        tally.finish()
    assert e.value.fraction == 0.75 and "3 of 4 cases pass" in str(e.value) and "case 0" in str(e.value)


def test_points_are_decided_by_one_set_of_rules():
    assert scoring.test_points(4, "passed") == 4
    assert scoring.test_points(3, "partial", 1 / 3) == 1.0
    assert scoring.test_points(3, "failed", 0.5) == 0 and scoring.test_points(3, "error") == 0
    assert scoring.partial_status(0.0) == "failed" and scoring.partial_status(0.1) == "partial"
    tests = [SimpleNamespace(points=1.5, max_points=2, status="partial"),
             SimpleNamespace(points=0, max_points=5, status="skipped")]
    assert scoring.totals(tests) == (1.5, 2)
    assert scoring.totals(tests, scoring.OVERLOADED) == (0.0, 2)  # not scored: graded again
    assert scoring.late_score(80.0, {"penalty_per_day": 0.1}, 2) == 64.0
    assert scoring.late_score(80.0, {"penalty_per_day": 0.6}, 2) == 0.0


def test_the_statistics_are_exact_where_they_say_so():
    n, p = 13, 0.1
    assert stats.binomial_tail_at_least(0, n, p) == pytest.approx(1.0)
    assert stats.binomial_tail_at_least(7, n, p) + stats.binomial_tail_below(7, n, p) == pytest.approx(1.0)
    assert stats.binomial_tail_at_least(n, n, p) == pytest.approx(p**n)
    # chi-square with one degree of freedom at its 95% point
    pv = stats.chi2_pvalue(torch.tensor([50 + 1.959964 * 5, 50 - 1.959964 * 5]), torch.tensor([50.0, 50.0]))
    assert pv == pytest.approx(0.05, rel=1e-4)
    r = stats.bernstein_radius(1000, 1.0, 3.0, 1e-7)
    assert 0 < r < 1 and math.isclose(r, stats.bernstein_radius(1000, 1.0, 3.0, 1e-7))
    assert stats.ALPHA == 1e-7


def test_one_function_decides_a_tests_points_from_its_outcome_and_the_evidence():
    """scoring.decide: the README's rules, in order (overloaded, forbidden, flags, outcome)."""
    D, Out, E = scoring.decide, scoring.Outcome, scoring.Evidence
    passed, partial = Out("passed", 4.0), Out("partial", 3.0, 1 / 3, "1 of 3 cases pass")
    assert D(passed, E(functions=("f",))) == scoring.Verdict("passed", 4.0)
    assert D(partial, E(functions=("f",))).points == 1.0
    solve = {"api": "torch.linalg.solve", "function": "f", "line": 3}
    v = D(passed, E(functions=("f",), forbidden=(solve,)))
    assert (v.status, v.points) == ("failed", 0.0) and "torch.linalg.solve" in v.reasons[0]
    assert D(passed, E(functions=("g",), forbidden=(solve,))).points == 4.0  # another function's finding
    # a method of a class counts for its class's tests
    assert D(passed, E(functions=("F",), forbidden=({**solve, "function": "F.step"},))).points == 0.0
    flag = {"construct": "import of sys", "where": "line 2", "function": "f", "statement": "call"}
    assert D(passed, E(functions=("f",), flags=(flag,))).points == 4.0  # flags for review only
    assert D(passed, E(functions=("f",), flags=(flag,), flags_cost_points=True)).points == 0.0
    module_import = {**flag, "function": "<module>", "statement": "import"}
    assert D(passed, E(functions=("f",), flags=(module_import,), flags_cost_points=True)).points == 4.0
    class_body = {**flag, "function": "<module>", "statement": "class"}
    assert D(passed, E(functions=("f",), flags=(class_body,), flags_cost_points=True)).points == 0.0
    assert D(passed, E(functions=(), flags=(class_body,), flags_cost_points=True)).points == 4.0
    v = D(passed, E(functions=("f",), forbidden=(solve,), overloaded=True))
    assert (v.status, v.points, v.reasons) == ("error", 0.0, (scoring.OVERLOADED_TEST,))
