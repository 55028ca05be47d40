"""Results: totals, what a student may see, and Gradescope's results.json format."""

from __future__ import annotations

from autograder.judge.results import SubmissionResult, TestResult


def sample() -> SubmissionResult:
    r = SubmissionResult(assignment="adam", submission="a.ipynb", tests=[
        TestResult("t_public", 1, 1, "public", "passed", "fine", 0.1),
        TestResult("t_hidden", 0, 3, "hidden", "failed", "secret details", 0.2),
        TestResult("t_after", 1.5, 2, "after_deadline", "partial", "later details", 0.3),
        TestResult("t_skipped", 0, 5, "hidden", "skipped", "no GPU", 0.0),
    ])
    r.total()
    return r


def test_totals_skip_skipped_tests():
    r = sample()
    assert (r.score, r.max_score) == (2.5, 6.0)


def test_students_see_hidden_feedback_never_and_after_deadline_feedback_after_it():
    r = sample()
    before = {t["name"]: t["feedback"] for t in r.for_student(deadline_passed=False)["tests"]}
    after = {t["name"]: t["feedback"] for t in r.for_student(deadline_passed=True)["tests"]}
    assert before == {"t_public": "fine", "t_hidden": "", "t_after": "", "t_skipped": ""}
    assert after["t_after"] == "later details" and after["t_hidden"] == ""
    assert "grader_errors" not in r.for_student()


def test_gradescope_results_format():
    gs = sample().gradescope()
    assert gs["score"] == 2.5
    assert {t["name"]: t["visibility"] for t in gs["tests"]} == {
        "t_public": "visible", "t_hidden": "hidden", "t_after": "after_due_date"}
    for t in gs["tests"]:
        assert set(t) >= {"name", "score", "max_score", "output", "visibility"}
    assert gs["stdout_visibility"] == "hidden"


def test_round_trip_through_dict():
    r = sample()
    assert SubmissionResult.from_dict(r.as_dict()) == r
