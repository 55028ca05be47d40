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


GRADESCOPE_TOP = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
                  "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
GRADESCOPE_TEST = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
                   "tags", "visibility", "extra_data"}
GRADESCOPE_VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
GRADESCOPE_FORMATS = {"text", "html", "simple_format", "md", "ansi"}


def validate_gradescope(gs: dict) -> None:
    """Gradescope's specification of results.json (the autograder docs' "Output format"):
    the keys it knows, their types and allowed values, a status of passed or failed."""
    assert set(gs) <= GRADESCOPE_TOP, set(gs) - GRADESCOPE_TOP
    assert isinstance(gs["execution_time"], int) and gs["execution_time"] >= 0
    assert gs["output_format"] in GRADESCOPE_FORMATS and gs["test_output_format"] in GRADESCOPE_FORMATS
    assert gs["visibility"] in GRADESCOPE_VISIBILITIES and gs["stdout_visibility"] in GRADESCOPE_VISIBILITIES
    assert isinstance(gs["score"], int | float)
    for t in gs["tests"]:
        assert set(t) <= GRADESCOPE_TEST, set(t) - GRADESCOPE_TEST
        assert isinstance(t["score"], int | float) and isinstance(t["max_score"], int | float)
        assert t["status"] in ("passed", "failed") and t["visibility"] in GRADESCOPE_VISIBILITIES
        assert isinstance(t["number"], str) and isinstance(t["name"], str) and isinstance(t["output"], str)
    assert [t["number"] for t in gs["tests"]] == [str(i + 1) for i in range(len(gs["tests"]))]


def test_gradescope_status_follows_points_and_the_spec_holds():
    r = SubmissionResult(assignment="adam", submission="a.py", duration=12.6, tests=[
        TestResult("forbidden_api_check", 0, 0, "public", "failed", "torch.optim.AdamW used"),
        TestResult("partial", 1, 2, "public", "partial", "half"),
        TestResult("all", 2, 2, "hidden", "passed", ""),
        TestResult("zero_of_some", 0, 3, "hidden", "failed", "no"),
    ], notes=["cell 3: No module named 'matplotlib'", "cell 5: syntax error at line 2: invalid syntax",
              "cell 5: syntax error at line 2: invalid syntax"])
    r.total()
    gs = r.gradescope()
    validate_gradescope(gs)
    assert {t["name"]: t["status"] for t in gs["tests"]} == {
        "forbidden_api_check": "failed", "partial": "failed", "all": "passed", "zero_of_some": "failed"}
    assert gs["execution_time"] == 13
    assert gs["output"] == "cell 5: syntax error at line 2: invalid syntax"  # harmless left out, repeats merged
    validate_gradescope(sample().gradescope())


def test_round_trip_through_dict():
    r = sample()
    assert SubmissionResult.from_dict(r.as_dict()) == r
