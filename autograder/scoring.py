"""Every rule that turns outcomes into points, in one place.

- A test earns its `points` marker when it passes, `fraction` of them when it raises
  PartialCredit (a CaseTally: the fraction of its cases that pass), nothing otherwise
  (failed, errored, timed out; skipped tests count for nothing either way).
- A forbidden routine found in a function, or (where the assignment says so) a flagged
  construct, costs every test of that function all its points.
- A test during which the grading machine was overloaded (the child starved of CPU by
  others, from its own run-queue evidence) is an error worth nothing, and its
  submission is not scored (graded again; `OVERLOADED`).
`decide` applies these to one test, from its outcome and the evidence about it: the one
place a test's points are decided.
- A submission's score is the sum of its tests' points; its maximum, the sum of the
  maxima of the tests that ran.
- Late: the score times max(0, 1 - penalty_per_day * days_late); a student's final
  score is the best such score of their submissions (ties: the earliest) or the last
  graded one's, by the assignment's `score_policy`.

The judge's plugin (autograder/judge/plugin.py), CaseTally (compare.py), the result
(results.py) and the server (server/policy.py, server/service.py) all call these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

DIGITS = 6  # points are rounded to this many decimals wherever they are computed
OVERLOADED = "the grading machine was overloaded while this submission ran; it was not scored"
OVERLOADED_TEST = "the grading machine was overloaded during this test; the submission is graded again"


@dataclass(frozen=True)
class Outcome:
    """What pytest saw of one test: passed, partial (with the fraction of its cases that
    passed), failed, error (the grader's) or skipped, and the feedback it wrote."""

    status: str
    max_points: float
    fraction: float | None = None
    feedback: str = ""


@dataclass(frozen=True)
class Evidence:
    """What else decides a test's points, each record read outside the student's process
    or from its source: forbidden routines found in the test's functions (the static scan
    and the guard's reports), the flags on them and whether flags cost points, and whether
    the host was overloaded while it ran."""

    functions: tuple[str, ...] = ()
    forbidden: tuple[dict, ...] = ()  # {"api", "function", ...} in one of `functions`
    flags: tuple[dict, ...] = ()      # {"construct", "where", "function", "statement"}
    flags_cost_points: bool = False
    overloaded: bool = False


@dataclass(frozen=True)
class Verdict:
    status: str
    points: float
    reasons: tuple[str, ...] = field(default=())  # put before the test's own feedback


def decide(outcome: Outcome, evidence: Evidence) -> Verdict:
    """A test's points, from its outcome and the evidence: the rules of this module's
    docstring, in this order."""
    if evidence.overloaded:
        return Verdict("error", 0.0, (OVERLOADED_TEST,))
    hits = [f for f in evidence.forbidden if str(f.get("function") or "").split(".")[0] in evidence.functions]
    if hits:
        apis = ", ".join(sorted({str(h["api"]) for h in hits}))
        return Verdict("failed", 0.0, (f"no points: {', '.join(evidence.functions)} uses {apis}, "
                                       "which this assignment forbids",))
    if evidence.flags_cost_points and evidence.functions:
        # A flagged function, or code at module level (a class body that patches, say),
        # costs the function's tests; a module-level import costs nothing by itself: its
        # uses are flagged in the functions that make them.
        flagged = [f for f in evidence.flags if f.get("function") in evidence.functions
                   or (f.get("function") == "<module>" and f.get("statement") != "import")]
        if flagged:
            what = "; ".join(f"{f['construct']} ({f['where']})" for f in flagged[:3])
            return Verdict("failed", 0.0, (f"no points: this assignment does not accept code that uses {what}",))
    return Verdict(outcome.status, test_points(outcome.max_points, outcome.status, outcome.fraction))


def test_points(max_points: float, status: str, fraction: float | None = None) -> float:
    """The points a test earns: all when it passed, `fraction` when partial, else none."""
    if status == "passed":
        return float(max_points)
    if status == "partial" and fraction is not None:
        return round(float(max_points) * min(1.0, max(0.0, float(fraction))), DIGITS)
    return 0.0


def partial_status(fraction: float) -> str:
    return "partial" if fraction > 0 else "failed"


def case_fraction(passed: int, total: int) -> float:
    """The share of a test's cases that pass (CaseTally)."""
    return passed / total if total else 0.0


def totals(tests, error: str | None = None) -> tuple[float, float]:
    """(score, max_score) of a submission's tests; a submission that was not scored (the
    host was overloaded whenever it ran) scores nothing until it is graded again."""
    score = 0.0 if error == OVERLOADED else round(sum(t.points for t in tests), DIGITS)
    return score, round(sum(t.max_points for t in tests if t.status != "skipped"), DIGITS)


def penalty_factor(late_policy: dict, days_late: int) -> float:
    return max(0.0, 1.0 - float(late_policy.get("penalty_per_day", 0.0)) * days_late)


def late_score(score: float, late_policy: dict, days_late: int) -> float:
    """A submission's score after the late penalty."""
    return round(score * penalty_factor(late_policy, days_late), DIGITS)


@dataclass
class GradedSubmission:
    submission_id: int
    created_at: datetime
    score: float
    max_score: float
    days_late: int


def final_score(graded: list[GradedSubmission], policy: str, late_policy: dict) -> tuple[float, GradedSubmission] | None:
    """(score after the late penalty, the submission it comes from), or None if none graded."""
    if not graded:
        return None
    scored = [(late_score(g.score, late_policy, g.days_late), g) for g in graded]
    if policy == "last":
        return max(scored, key=lambda sg: (sg[1].created_at, sg[1].submission_id))
    # best; ties go to the earliest submission
    return max(scored, key=lambda sg: (sg[0], -sg[1].created_at.timestamp(), -sg[1].submission_id))
