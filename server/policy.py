"""Course rules: deadlines, late days and penalties, the daily limit, final scores.

- Late: a submission after `deadline + grace_minutes` is late by `ceil(delay / 1 day)`
  days (a started day counts whole: 2 days and 2 hours late is 3 days); past
  `max_days_late` the assignment is closed to students.
- A student's own deadline: an extension gives a new deadline, or moves the course's by a
  number of days; lateness, the penalty and the closing all count from it.
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




PARTIAL_DAYS = "a day that has begun counts as a whole day (2 days and 2 hours late is 3 days)"


def own_deadline(deadline: datetime | None, extension) -> datetime | None:
    """The deadline that holds for one student: the extension's (a new deadline, or the
    course's moved by `late_days`), else the course's."""
    if extension is None:
        return deadline
    if extension.deadline is not None:
        return extension.deadline
    if extension.late_days is not None and deadline is not None:
        return deadline + timedelta(days=int(extension.late_days))
    return deadline


def _span(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@dataclass(frozen=True)
class DeadlineState:
    """What a student is told about submitting now: `state` is open, late or closed (or
    none: no deadline); `summary` is the one line the assignment list shows."""

    state: str
    deadline: datetime | None
    closes_at: datetime | None
    days_late_now: int
    penalty_now: float  # the fraction taken off a submission made now
    summary: str


def deadline_state(deadline: datetime | None, late_policy: dict, now: datetime) -> DeadlineState:
    if deadline is None:
        return DeadlineState("none", None, None, 0, 0.0, "no deadline")
    grace = timedelta(minutes=float(late_policy.get("grace_minutes", 0)))
    max_days = late_policy.get("max_days_late")
    closes = None if max_days is None else deadline + grace + timedelta(days=int(max_days))
    now_late = lateness(deadline, late_policy, now)
    penalty = 1.0 - penalty_factor(late_policy, now_late.days_late)
    if now_late.closed:
        return DeadlineState("closed", deadline, closes, now_late.days_late, penalty, "closed")
    if not now_late.late:
        return DeadlineState("open", deadline, closes, 0, 0.0, f"open, due in {_span(deadline + grace - now)}")
    # the penalty grows at each whole day after the deadline: say when it next does
    next_step = deadline + grace + timedelta(days=now_late.days_late)
    until = f"closes in {_span(closes - now)}" if closes else f"−{penalty_after(late_policy, now_late.days_late + 1)} from {_span(next_step - now)} on"
    return DeadlineState("late", deadline, closes, now_late.days_late, penalty,
                         f"late: −{penalty * 100:.0f}% now, {until}")


def penalty_after(late_policy: dict, days: int) -> str:
    return f"{(1.0 - penalty_factor(late_policy, days)) * 100:.0f}%"
