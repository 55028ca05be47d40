"""A grade function that costs nothing (for `submit_bench.py --grader instant`): it
measures the server and its queue, not the engine. Each call appends the submission's
label to $DLOPT_BENCH_CALLS, the proof of how many times each submission was graded."""

from __future__ import annotations

import os

from autograder.judge.results import SubmissionResult, TestResult


def grade(a, path, *, label=None, **_kw) -> SubmissionResult:
    calls = os.environ.get("DLOPT_BENCH_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(f"{label}\n")
    r = SubmissionResult(assignment=a.slug, submission=label or str(path), engine_version="instant")
    r.tests = [TestResult(name="test_instant", points=a.points, max_points=a.points, visibility="public")]
    r.total()
    return r
