"""The kernel leaderboards, from what the judge recorded (a grading run's result holds one
entry per board, autograder/judge/boards.py): per assignment, board and device, each
student's best verified time, with rows for the course's baselines (the Triton reference
and PyTorch's SDPA, timed by the judge in the same run as the latest entry).

Rules: only entries with a time (every check held) rank; times from different devices
are never ranked together; a board freezes at the assignment's deadline (submissions
made after it do not enter); staff can take a submission off a board, or put it back,
with a reason (BoardRemoval, the newest row in force); a student is anonymous unless they
chose a name (BoardName).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server.models import AssignmentRow, BoardName, BoardRemoval, GradingRun, Submission, User

NAME_MAX = 40


@dataclass
class Row:
    rank: int | None
    name: str
    seconds: float
    spread: float | None = None
    submission_id: int | None = None
    login: str | None = None          # staff only
    created_at: datetime | None = None
    mine: bool = False
    baseline: bool = False


@dataclass
class Table:
    board: str
    device: str
    rows: list[Row] = field(default_factory=list)


def anonymous(user: User, a: AssignmentRow) -> str:
    """A stable pseudonym per student and assignment (no id or login in it)."""
    return "anonymous " + hashlib.sha256(f"{a.id}:{user.id}:{user.created_at}".encode()).hexdigest()[:6]


def removed(session: Session, sub_ids: list[int]) -> set[tuple[int, str]]:
    """(submission, board) pairs a TA has taken off, by the newest decision of each."""
    latest: dict[tuple[int, str], bool] = {}
    if not sub_ids:
        return set()
    for r in session.scalars(select(BoardRemoval).where(BoardRemoval.submission_id.in_(sub_ids))
                             .order_by(BoardRemoval.id)):
        latest[(r.submission_id, r.board)] = r.removed
    return {k for k, v in latest.items() if v}


def tables(session: Session, a: AssignmentRow, viewer: User, staff: bool, boards: list[str]) -> list[Table]:
    subs = session.scalars(select(Submission).where(Submission.assignment_id == a.id)
                           .options(selectinload(Submission.runs), selectinload(Submission.user))).all()
    if a.deadline is not None:
        subs = [s for s in subs if s.created_at <= a.deadline]  # frozen at the deadline
    off = removed(session, [s.id for s in subs])
    names = {n.user_id: n.name for n in session.scalars(select(BoardName))}
    best: dict[tuple[str, str], dict[int, tuple[float, dict, Submission]]] = {}
    baselines: dict[tuple[str, str], tuple[datetime, dict]] = {}
    for sub in subs:
        done = [r for r in sub.runs if r.status == "done" and r.result]
        run: GradingRun | None = done[-1] if done else None
        for entry in (run.result.get("boards") or []) if run else []:
            board, device, seconds = entry.get("board"), str(entry.get("device") or ""), entry.get("seconds")
            if board not in boards or device in ("", "cpu") or not isinstance(seconds, int | float):
                continue
            key = (board, device)
            if isinstance(entry.get("baselines"), dict) and entry["baselines"]:
                if key not in baselines or baselines[key][0] < sub.created_at:
                    baselines[key] = (sub.created_at, entry["baselines"])
            if (sub.id, board) in off:
                continue
            mine = best.setdefault(key, {})
            if sub.user_id not in mine or seconds < mine[sub.user_id][0]:
                mine[sub.user_id] = (float(seconds), entry, sub)
    out = []
    for (board, device) in sorted(set(best) | set(baselines)):
        t = Table(board, device)
        ranked = sorted((best.get((board, device)) or {}).items(), key=lambda kv: kv[1][0])
        for i, (uid, (seconds, entry, sub)) in enumerate(ranked, 1):
            t.rows.append(Row(rank=i, name=names.get(uid) or anonymous(sub.user, a), seconds=seconds,
                              spread=entry.get("spread"), submission_id=sub.id if staff or uid == viewer.id else None,
                              login=sub.user.login if staff else None, created_at=sub.created_at,
                              mine=uid == viewer.id))
        for name, seconds in sorted((baselines.get((board, device)) or (None, {}))[1].items()):
            if isinstance(seconds, int | float):
                label = {"reference": "course reference (Triton)", "sdpa": "PyTorch SDPA"}.get(name, name)
                t.rows.append(Row(rank=None, name=label, seconds=float(seconds), baseline=True))
        t.rows.sort(key=lambda r: r.seconds)
        out.append(t)
    return out


def set_name(session: Session, user: User, name: str) -> None:
    """The student's board name (empty: anonymous again)."""
    row = session.scalar(select(BoardName).where(BoardName.user_id == user.id))
    name = " ".join(name.split())[:NAME_MAX]
    if not name:
        if row is not None:
            session.delete(row)
        return
    if row is None:
        session.add(BoardName(user_id=user.id, name=name))
    else:
        row.name = name


def remove(session: Session, actor: User, sub: Submission, board: str, reason: str, removed: bool = True) -> None:
    session.add(BoardRemoval(submission_id=sub.id, board=board, removed=removed, actor_id=actor.id, reason=reason))
