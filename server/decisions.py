"""Staff decisions about one student or one assignment: extensions, score overrides, flag
reviews and the release of hidden feedback.

Every decision is a new row (who, when, why); the newest row is the one in force, so a
student's history shows each change and nothing is ever edited in place. An extension
changes the student's deadline, and the lateness of their submissions is counted again
from it; an override is kept beside the graded score, which stays as it was.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import begin_write
from server.models import (
    AssignmentRow,
    Extension,
    FeedbackRelease,
    FlagReview,
    Override,
    Submission,
    User,
    utcnow,
)
from server.policy import lateness, own_deadline

REVIEW_ACTIONS = ("cleared", "zeroed", "note")
MAX_REASON = 2000


def _newest(rows):
    """The newest row per key of an append-only table (rows in id order)."""
    out = {}
    for key, row in rows:
        out[key] = row
    return out


# -- reading what is in force -----------------------------------------------------------
def extensions(session: Session, a: AssignmentRow) -> dict[int, Extension]:
    """user id -> the extension in force (withdrawn ones left out)."""
    rows = session.scalars(select(Extension).where(Extension.assignment_id == a.id).order_by(Extension.id))
    newest = _newest((r.user_id, r) for r in rows)
    return {k: v for k, v in newest.items() if v.deadline is not None or v.late_days is not None}


def extension_for(session: Session, a: AssignmentRow, user: User) -> Extension | None:
    row = session.scalar(select(Extension).where(Extension.assignment_id == a.id, Extension.user_id == user.id)
                         .order_by(Extension.id.desc()).limit(1))
    return row if row is not None and (row.deadline is not None or row.late_days is not None) else None


def deadline_for(session: Session, a: AssignmentRow, user: User) -> datetime | None:
    return own_deadline(a.deadline, extension_for(session, a, user))


def overrides(session: Session, a: AssignmentRow, user_ids: list[int] | None = None) -> dict[int, dict[str, Override]]:
    """user id -> {function ('' for the whole assignment) -> the override in force}."""
    q = select(Override).where(Override.assignment_id == a.id)
    if user_ids is not None:
        q = q.where(Override.user_id.in_(user_ids))
    newest = _newest(((r.user_id, r.function), r) for r in session.scalars(q.order_by(Override.id)))
    out: dict[int, dict[str, Override]] = {}
    for (uid, fn), row in newest.items():
        if row.score is not None:
            out.setdefault(uid, {})[fn] = row
    return out


def feedback_released(session: Session, a: AssignmentRow) -> bool | None:
    """True/False where staff released or hid the hidden feedback from the page; None: as
    `assignment.toml` says (feedback_after_deadline)."""
    row = session.scalar(select(FeedbackRelease).where(FeedbackRelease.assignment_id == a.id)
                         .order_by(FeedbackRelease.id.desc()).limit(1))
    return None if row is None else row.released


def reviews(session: Session, submission_ids: list[int]) -> dict[int, list[FlagReview]]:
    out: dict[int, list[FlagReview]] = {}
    if submission_ids:
        for r in session.scalars(select(FlagReview).where(FlagReview.submission_id.in_(submission_ids))
                                 .order_by(FlagReview.id)):
            out.setdefault(r.submission_id, []).append(r)
    return out


# -- making decisions -------------------------------------------------------------------
def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise HTTPException(422, "give a reason: it is kept with the decision and shown in the student's history")
    if len(reason) > MAX_REASON:
        raise HTTPException(422, f"the reason is longer than {MAX_REASON} characters")
    return reason


def student(session: Session, login: str) -> User:
    user = session.scalar(select(User).where(User.login == login))
    if user is None:
        raise HTTPException(404, f"no student {login!r} on the roster")
    if user.role != "student":
        raise HTTPException(422, f"{login} is {user.role}, not a student")
    return user


def recount_lateness(session: Session, a: AssignmentRow, user: User, deadline: datetime | None) -> int:
    """Count the lateness of the student's submissions again from their own deadline;
    returns how many changed."""
    changed = 0
    for sub in session.scalars(select(Submission).where(Submission.user_id == user.id,
                                                        Submission.assignment_id == a.id)):
        late = lateness(deadline, a.late_policy, sub.created_at)
        if (sub.late, sub.days_late) != (late.late, late.days_late):
            sub.late, sub.days_late = late.late, late.days_late
            changed += 1
    return changed


def recount_assignment(session: Session, a: AssignmentRow) -> int:
    """The course deadline or late policy changed: count every student's lateness again,
    each from their own deadline; returns how many submissions changed."""
    exts = extensions(session, a)
    changed = 0
    for user in session.scalars(select(User).join(Submission, Submission.user_id == User.id)
                                .where(Submission.assignment_id == a.id).distinct()):
        changed += recount_lateness(session, a, user, own_deadline(a.deadline, exts.get(user.id)))
    return changed


def grant_extension(session: Session, actor: User, a: AssignmentRow, user: User, *, deadline: datetime | None = None,
                    late_days: int | None = None, reason: str) -> Extension:
    """A new deadline, or the course's moved by `late_days` days (neither: withdraw)."""
    reason = _reason(reason)
    if deadline is not None and late_days is not None:
        raise HTTPException(422, "give either a new deadline or a number of late days, not both")
    if deadline is not None and deadline.tzinfo is None:
        raise HTTPException(422, "the deadline needs a UTC offset (2026-12-10T23:59:00-05:00)")
    if deadline is not None and abs(deadline - (a.deadline or utcnow())) > timedelta(days=730):
        raise HTTPException(422, "the new deadline is more than two years from the course's: a typo?")
    if late_days is not None and not 0 < late_days <= 365:
        raise HTTPException(422, "late_days must be between 1 and 365")
    if late_days is not None and a.deadline is None:
        raise HTTPException(422, f"{a.slug} has no deadline to move: give a deadline instead")
    row = Extension(user_id=user.id, assignment_id=a.id, deadline=deadline, late_days=late_days, reason=reason,
                    actor_id=actor.id)
    session.add(row)
    session.flush()
    recount_lateness(session, a, user, own_deadline(a.deadline, row))
    return row


def function_points(session: Session, a: AssignmentRow) -> dict[str, float]:
    """function -> the points of the tests that grade it (from the newest graded run of the
    assignment: every run of one suite has the same tests)."""
    from server.models import GradingRun, TestResultRow

    run_id = session.scalar(select(GradingRun.id).join(Submission)
                            .where(Submission.assignment_id == a.id, GradingRun.status == "done")
                            .order_by(GradingRun.id.desc()).limit(1))
    points: dict[str, float] = {}
    if run_id is not None:
        for t in session.scalars(select(TestResultRow).where(TestResultRow.run_id == run_id)):
            for fn in t.functions or []:
                points[fn] = points.get(fn, 0.0) + float(t.max_points)
    return points


def set_override(session: Session, actor: User, a: AssignmentRow, user: User, *, score: float | None, reason: str,
                 function: str = "", submission_id: int | None = None) -> Override:
    """A manual score for the assignment (or for one function's tests); None withdraws it.
    A function's score is at most its tests' points, and only a function a test grades."""
    reason = _reason(reason)
    if score is not None and not 0 <= score <= a.points:
        raise HTTPException(422, f"the score must be between 0 and {a.points:g}")
    if function:
        graded = function_points(session, a)
        if function not in graded:
            known = ", ".join(sorted(graded)) or "none graded yet"
            raise HTTPException(422, f"no test of {a.slug} grades {function!r} (the graded functions: {known})")
        if score is not None and score > graded[function]:
            raise HTTPException(422, f"{function}'s tests are worth {graded[function]:g} points; the score must be "
                                     f"between 0 and {graded[function]:g}")
    row = Override(user_id=user.id, assignment_id=a.id, function=function[:200], score=score, reason=reason,
                   submission_id=submission_id, actor_id=actor.id)
    session.add(row)
    session.flush()
    return row


def review_flags(session: Session, actor: User, sub: Submission, action: str, reason: str,
                 function: str = "") -> FlagReview:
    """cleared: nothing wrong; zeroed: the function's tests score 0 (an override whose reason
    the student reads); note: a remark kept with the submission. Each marks the flags reviewed."""
    if action not in REVIEW_ACTIONS:
        raise HTTPException(422, f"action must be one of {', '.join(REVIEW_ACTIONS)}")
    reason = _reason(reason)
    if action == "zeroed":
        if not function:
            raise HTTPException(422, "name the function whose points are taken")
        set_override(session, actor, sub.assignment, sub.user, score=0.0, reason=reason, function=function,
                     submission_id=sub.id)
    row = FlagReview(submission_id=sub.id, action=action, function=function[:200], reason=reason, actor_id=actor.id)
    session.add(row)
    session.flush()
    return row


def set_release(session: Session, actor: User, a: AssignmentRow, released: bool, reason: str = "") -> FeedbackRelease:
    row = FeedbackRelease(assignment_id=a.id, released=released,
                          reason=(reason or ("released" if released else "hidden again")).strip()[:MAX_REASON],
                          actor_id=actor.id)
    session.add(row)
    session.flush()
    return row


# -- an accommodation list ---------------------------------------------------------------
@dataclass
class ExtensionLine:
    line: int
    login: str
    deadline: datetime | None
    late_days: int | None
    reason: str


def parse_extensions_csv(text: str, default_reason: str = "") -> list[ExtensionLine]:
    """CSV with a header: login, and deadline (ISO 8601 with its offset) or late_days, and
    reason (or the default). Every bad line is reported, nothing is taken from a file with one."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = {(f or "").strip().lower() for f in (reader.fieldnames or [])}
    if "login" not in fields or not fields & {"deadline", "late_days"}:
        raise HTTPException(422, "the file needs a header with 'login' and 'deadline' or 'late_days' columns")
    out, errors = [], []
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        login, when, days = row.get("login", ""), row.get("deadline", ""), row.get("late_days", "")
        reason = row.get("reason") or default_reason
        try:
            if not login:
                raise ValueError("no login")
            if bool(when) == bool(days):
                raise ValueError("give a deadline or late_days (one of them)")
            deadline = datetime.fromisoformat(when) if when else None
            if deadline is not None and deadline.tzinfo is None:
                raise ValueError(f"deadline {when!r} has no UTC offset")
            late_days = int(days) if days else None
            if not reason:
                raise ValueError("no reason (a 'reason' column, or one given for the whole file)")
        except ValueError as e:
            errors.append(f"line {i}: {e}")
            continue
        out.append(ExtensionLine(i, login, deadline, late_days, reason))
    if errors:
        raise HTTPException(422, "nothing was imported; " + "; ".join(errors[:200]))
    return out


def import_extensions(session: Session, actor: User, a: AssignmentRow, text: str, default_reason: str = "") -> list[Extension]:
    lines = parse_extensions_csv(text, default_reason)
    begin_write(session)
    made, errors = [], []
    for ln in lines:
        try:
            made.append(grant_extension(session, actor, a, student(session, ln.login), deadline=ln.deadline,
                                        late_days=ln.late_days, reason=ln.reason))
        except HTTPException as e:
            errors.append(f"line {ln.line}: {e.detail}")
    if errors:
        session.rollback()
        raise HTTPException(422, "nothing was imported; " + "; ".join(errors[:200]))
    session.commit()
    return made


# -- a student's history ------------------------------------------------------------------
@dataclass
class Event:
    at: datetime
    kind: str
    what: str
    by: str
    reason: str


def history(session: Session, a: AssignmentRow, user: User) -> list[Event]:
    """Every staff decision about this student and assignment, newest first."""
    events = []
    for e in session.scalars(select(Extension).where(Extension.assignment_id == a.id, Extension.user_id == user.id)):
        if e.deadline is not None:
            what = f"deadline set to {e.deadline:%Y-%m-%d %H:%M} UTC"
        elif e.late_days is not None:
            what = f"{e.late_days} extra day(s) after the course deadline"
        else:
            what = "extension withdrawn"
        events.append(Event(e.created_at, "extension", what, e.actor.login, e.reason))
    for o in session.scalars(select(Override).where(Override.assignment_id == a.id, Override.user_id == user.id)):
        target = f"{o.function}'s tests" if o.function else "the assignment"
        what = f"score of {target} set to {o.score:g}" if o.score is not None else f"override of {target} withdrawn"
        events.append(Event(o.created_at, "override", what, o.actor.login, o.reason))
    subs = list(session.scalars(select(Submission.id).where(Submission.assignment_id == a.id,
                                                            Submission.user_id == user.id)))
    for sid, rows in reviews(session, subs).items():
        for r in rows:
            what = f"flags of submission {sid} {r.action}" + (f" ({r.function})" if r.function else "")
            events.append(Event(r.created_at, "flag review", what, r.actor.login, r.reason))
    return sorted(events, key=lambda e: e.at, reverse=True)


# -- what a TA reviews -----------------------------------------------------------------------
def flag_queue(session: Session, a: AssignmentRow, unreviewed_only: bool = True, limit: int = 500) -> list[dict]:
    """The flagged submissions of an assignment: the newest finished run of each submission
    whose code is flagged, with its reviews; unreviewed first, newest first. Only the flagged
    runs' results are read (`flag_count`), whatever the size of the class."""
    from sqlalchemy import func
    from sqlalchemy.orm import selectinload

    from server.models import GradingRun

    newest = (select(func.max(GradingRun.id)).join(Submission)
              .where(Submission.assignment_id == a.id, GradingRun.status == "done")
              .group_by(GradingRun.submission_id))
    runs = session.scalars(
        select(GradingRun).where(GradingRun.id.in_(newest), GradingRun.flag_count > 0)
        .options(selectinload(GradingRun.submission).selectinload(Submission.user))
        .order_by(GradingRun.id.desc())).all()
    done = reviews(session, [r.submission_id for r in runs])
    out = []
    for run in runs:
        rows = done.get(run.submission_id, [])
        if unreviewed_only and rows:
            continue
        out.append({"submission_id": run.submission_id, "login": run.submission.user.login, "score": run.score,
                    "flags": list((run.result or {}).get("flags", [])), "reviewed": bool(rows), "run": run,
                    "reviews": [{"action": r.action, "function": r.function, "reason": r.reason,
                                 "by": r.actor.login, "at": r.created_at} for r in rows]})
    out.sort(key=lambda d: (d["reviewed"], -d["submission_id"]))
    return out[:limit]


def flag_entry(session: Session, sub: Submission) -> dict:
    """One submission as the flag review shows it (flags of its newest graded run, if any)."""
    done = [r for r in sub.runs if r.status == "done"]
    run = done[-1] if done else None
    rows = reviews(session, [sub.id]).get(sub.id, [])
    return {"submission_id": sub.id, "login": sub.user.login, "score": run.score if run else None,
            "flags": list((run.result or {}).get("flags", [])) if run else [], "reviewed": bool(rows),
            "reviews": [{"action": r.action, "function": r.function, "reason": r.reason, "by": r.actor.login,
                         "at": r.created_at} for r in rows]}


def _message_key(feedback: str) -> str:
    """Feedback grouped by its first line with the numbers taken out: the same mistake
    with other values is one group."""
    import re

    first = (feedback or "").strip().splitlines()[0] if (feedback or "").strip() else "(no message)"
    return re.sub(r"[-+]?\d[\d.eE+-]*", "#", first)[:300]


def test_failures(final_runs, name: str) -> dict:
    """Who fails test `name` (of their final submission), grouped by message."""
    groups: dict[str, list[dict]] = {}
    passed = total = 0
    for run in final_runs:
        for t in run.tests:
            if t.name != name:
                continue
            total += 1
            if t.status == "passed" and t.points >= t.max_points:
                passed += 1
                continue
            groups.setdefault(_message_key(t.feedback), []).append(
                {"login": run.submission.user.login, "submission_id": run.submission_id, "points": t.points,
                 "max_points": t.max_points, "status": t.status, "feedback": t.feedback})
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    return {"test": name, "total": total, "passed": passed,
            "groups": [{"message": k, "count": len(v), "students": v} for k, v in ranked]}
