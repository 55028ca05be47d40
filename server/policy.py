"""Course rules: deadlines, late days and penalties, the daily limit, final scores.

- Late: a submission after `deadline + grace_minutes` is late by `ceil(delay / 1 day)`
  days; past `max_days_late` the assignment is closed to students.
- The final score of a submission is its newest finished run's score after the late
  penalty, and a student's final score follows the assignment's `score_policy`: both
  rules are the engine's (`autograder/scoring.py`), imported here.
- The daily limit counts a student's own uploads since midnight in the timezone of
  the deadline (UTC when there is none); TA batch uploads do not count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from autograder.assignment import SCORE_POLICIES  # noqa: E402,F401  (one schema: the engine's)

# Points (the late penalty, a student's final score) are the engine's rules, in one place.
from autograder.scoring import GradedSubmission, final_score, late_score, penalty_factor  # noqa: F401


@dataclass(frozen=True)
class Lateness:
    late: bool
    days_late: int
    closed: bool  # past the last day a late submission is accepted


def tz_from_offset(offset: str) -> timezone:
    """'UTC' or '+HH:MM' / '-HH:MM' (what the catalog stores from the deadline)."""
    if offset in ("", "UTC", "Z"):
        return UTC
    sign = -1 if offset.startswith("-") else 1
    hours, minutes = offset.lstrip("+-").split(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


def lateness(deadline: datetime | None, late_policy: dict, at: datetime) -> Lateness:
    if deadline is None:
        return Lateness(False, 0, False)
    grace = timedelta(minutes=float(late_policy.get("grace_minutes", 0)))
    delay = at - (deadline + grace)
    if delay <= timedelta(0):
        return Lateness(False, 0, False)
    days = math.ceil(delay / timedelta(days=1))
    max_days = late_policy.get("max_days_late")
    return Lateness(True, days, max_days is not None and days > int(max_days))


def day_start(at: datetime, tz: timezone) -> datetime:
    local = at.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


