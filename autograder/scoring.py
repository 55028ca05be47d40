"""Every rule that turns outcomes into points, in one place.

- A test earns its `points` marker when it passes, `fraction` of them when it raises
  PartialCredit (a CaseTally: the fraction of its cases that pass), nothing otherwise
  (failed, errored, timed out; skipped tests count for nothing either way).
- A forbidden routine found in a function, or (where the assignment says so) a flagged
  construct, costs every test of that function all its points (`zero`).
- A submission's score is the sum of its tests' points; its maximum, the sum of the
  maxima of the tests that ran.
- Late: the score times max(0, 1 - penalty_per_day * days_late); a student's final
  score is the best such score of their submissions (ties: the earliest) or the last
  graded one's, by the assignment's `score_policy`.

The judge's plugin (autograder/judge/plugin.py), CaseTally (compare.py), the result
(results.py) and the server (server/policy.py, server/service.py) all call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

DIGITS = 6  # points are rounded to this many decimals wherever they are computed


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


def zero(test, reason: str) -> None:
    """A test that earns nothing because of what its function does (a forbidden routine,
    a flagged construct): no points, failed, the reason first in its feedback."""
    test.points, test.status = 0.0, "failed"
    test.feedback = f"{reason}\n{test.feedback}".strip()


def totals(tests) -> tuple[float, float]:
    """(score, max_score) of a submission's tests."""
    return (round(sum(t.points for t in tests), DIGITS),
            round(sum(t.max_points for t in tests if t.status != "skipped"), DIGITS))


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
