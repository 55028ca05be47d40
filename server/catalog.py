"""The assignments the server offers: loaded from `assignments/` into the database at start.

Students see an assignment by its row; workers grade with the folder on their own disk
(`autograder.assignment.load`), so every worker must hold the same assignments folder.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from autograder import assignment as engine_assignments
from server import decisions
from server.models import AssignmentRow, utcnow


def _offset(deadline) -> str:
    if deadline is None or deadline.utcoffset() is None:
        return "UTC"
    minutes = int(deadline.utcoffset().total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def folders(root: Path, include_unfinished: bool) -> list[Path]:
    out = []
    for cfg in sorted(Path(root).glob("*/assignment.toml")):
        if include_unfinished or engine_assignments.read_config(cfg).get("finished", True):
            out.append(cfg.parent)
    return out


def sync(session: Session, root: Path, include_unfinished: bool = False) -> list[str]:
    """Insert or update a row per assignment folder; rows whose folder is gone become inactive."""
    seen = []
    for folder in folders(root, include_unfinished):
        a = engine_assignments.load(folder)  # validated against the one schema (autograder/assignment.py)
        policy = a.score_policy
        deadline = a.deadline
        if deadline is not None and deadline.tzinfo is None:
            raise engine_assignments.AssignmentError(f"{folder}: the deadline needs a UTC offset")
        row = session.scalar(select(AssignmentRow).where(AssignmentRow.slug == a.slug)) or AssignmentRow(slug=a.slug)
        before = (row.deadline, dict(row.late_policy or {})) if row.id is not None else None
        row.title, row.points, row.gpu = a.title, a.points, a.gpu
        row.deadline, row.timezone = deadline, _offset(deadline)
        row.late_policy = dict(a.late_policy)
        row.daily_submission_limit = a.daily_submission_limit
        row.score_policy = policy
        row.feedback_after_deadline = a.feedback_after_deadline
        row.active, row.loaded_at = True, utcnow()
        session.add(row)
        if before is not None and before != (row.deadline, row.late_policy):
            # a moved deadline or a new late policy: every submission's lateness counted again
            session.flush()
            decisions.recount_assignment(session, row)
        seen.append(a.slug)
    for row in session.scalars(select(AssignmentRow).where(AssignmentRow.slug.not_in(seen))):
        row.active = False
    return seen


def folder_of(root: Path, slug: str) -> Path:
    return Path(root) / slug
