"""What the routes and the pages do, in one place: submit, view with the visibility
rules, regrade, import a roster, build the score table."""

from __future__ import annotations

import csv
import io
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from server import auth, decisions
from server.db import begin_write, serialize_on
from server.models import ROLES, AssignmentRow, GradingRun, Submission, User, utcnow
from server.policy import (
    PARTIAL_DAYS,
    GradedSubmission,
    day_start,
    deadline_state,
    final_score,
    late_score,
    lateness,
    own_deadline,
    penalty_factor,
    tz_from_offset,
)
from server.schemas import (
    AssignmentOut,
    RosterOut,
    RunOut,
    ScoreRow,
    ScoreTable,
    SubmissionOut,
    TestOut,
)
from server.security import csv_cell, login_error
from server.uploads import UploadError, clean_filename, submission_kind, submission_type

# Second key of the lock that makes one student's uploads to any assignment count one after
# the other (server.db.serialize_on; assignment ids, the other second keys, are positive).
QUEUED_LOCK = -2


def get_assignment(session: Session, slug: str) -> AssignmentRow:
    row = session.scalar(select(AssignmentRow).where(AssignmentRow.slug == slug, AssignmentRow.active))
    if row is None:
        raise HTTPException(404, f"no assignment {slug!r}")
    return row


def submissions_today(session: Session, user: User, a: AssignmentRow, now: datetime) -> int:
    start = day_start(now, tz_from_offset(a.timezone))
    return session.scalar(select(func.count(Submission.id)).where(
        Submission.user_id == user.id, Submission.assignment_id == a.id, Submission.source == "upload",
        Submission.created_at >= start)) or 0


def assignment_out(session: Session, a: AssignmentRow, user: User, now: datetime) -> AssignmentOut:
    """The assignment as this user sees it: their own deadline (an extension's, else the
    course's), what submitting now costs, and their count for today."""
    ext = decisions.extension_for(session, a, user)
    mine = own_deadline(a.deadline, ext)
    state = deadline_state(mine, a.late_policy, now)
    released = decisions.feedback_released(session, a)
    return AssignmentOut(slug=a.slug, title=a.title, points=a.points, gpu=a.gpu, deadline=mine,
                         course_deadline=a.deadline, extended=ext is not None, timezone=a.timezone,
                         late_policy=a.late_policy, daily_submission_limit=a.daily_submission_limit,
                         score_policy=a.score_policy,
                         feedback_after_deadline=a.feedback_after_deadline if released is None else released,
                         closed=state.state == "closed", state=state.state, state_summary=state.summary,
                         closes_at=state.closes_at, days_late_now=state.days_late_now, penalty_now=state.penalty_now,
                         partial_days=PARTIAL_DAYS, submissions_today=submissions_today(session, user, a, now))


# -- submit ------------------------------------------------------------------------
def _check_queued_limit(session: Session, user: User, limit: int) -> None:
    """A student's own uploads waiting to be graded, on every assignment, are bounded: the
    queue grades one run per student at a time, in turn with the class (server.queue)."""
    queued = session.scalar(select(func.count(GradingRun.id))
                            .join(Submission, GradingRun.submission_id == Submission.id)
                            .where(Submission.user_id == user.id, GradingRun.status == "queued",
                                   GradingRun.reason == "submit"))
    if queued >= limit:
        raise HTTPException(429, f"you already have {queued} submission(s) waiting to be graded (at most {limit}); "
                                 "your submissions are graded one at a time, in turn with the rest of the class: "
                                 "submit again once one of them has been graded")


def _check_daily_limit(session: Session, user: User, a: AssignmentRow, now: datetime) -> None:
    limit = a.daily_submission_limit
    if limit is not None and submissions_today(session, user, a, now) >= limit:
        reset = day_start(now, tz_from_offset(a.timezone)) + timedelta(days=1)
        raise HTTPException(429, f"daily limit reached: {limit} submissions of {a.slug} per day; "
                                 f"the count resets at {reset.isoformat()}")


def submit(app, session: Session, user: User, a: AssignmentRow, filename: str | None, data: bytes, *,
           source: str = "upload", by: User | None = None, at: datetime | None = None,
           accept_days_late: int | None = None) -> Submission:
    """Check, store the file (synced), then commit the submission and its queued run.
    `accept_days_late`: the lateness the student confirmed (the page asks first); a later
    upload is refused with the penalty stated (409), nothing counted."""
    now = at or utcnow()
    settings = app.state.settings
    name = clean_filename(filename)
    # The cheap checks first (name, size, deadline, daily limit); parsing and validating
    # the notebook only for an upload that may be taken.
    try:
        submission_type(name, data)
        if len(data) > settings.max_upload_bytes:
            raise UploadError(413, f"{name!r} is {len(data)} bytes; the limit is {settings.max_upload_bytes}")
    except UploadError as e:
        raise HTTPException(e.status, e.detail) from None
    deadline = decisions.deadline_for(session, a, user)
    late = lateness(deadline, a.late_policy, now)
    if source == "upload":
        if late.closed:
            raise HTTPException(403, f"{a.slug} closed: your deadline was {deadline:%Y-%m-%d %H:%M %Z} and late "
                                     f"submissions are accepted for {a.late_policy.get('max_days_late')} day(s)")
        if late.late and accept_days_late is not None and late.days_late > accept_days_late:
            raise HTTPException(409, f"submitting now is late by {late.days_late} day(s): your score would be "
                                     f"multiplied by {penalty_factor(a.late_policy, late.days_late):g}; "
                                     f"{PARTIAL_DAYS}. Confirm again to submit")
        _check_daily_limit(session, user, a, now)
        _check_queued_limit(session, user, settings.max_queued_per_student)
    try:
        kind = submission_kind(name, data, settings.max_upload_bytes)
    except UploadError as e:
        raise HTTPException(e.status, e.detail) from None
    if source == "upload":
        if not _refusals_left(app, user):
            raise HTTPException(429, f"{REFUSALS_PER_WINDOW} of your uploads were refused as unreadable in the last "
                                     f"{REFUSAL_WINDOW / 60:.0f} minutes; fix the file and try again later")
        refusal = unreadable_code(app, a, name, data)
        if refusal:
            _count_refusal(app, user)
            raise HTTPException(422, refusal + "; this upload was not counted against your daily limit")
    # No transaction is held while the file is written and synced (SQLite has one writer);
    # the limit is checked again in the transaction that inserts the row.
    session.commit()
    digest = app.state.store.put(data)  # on disk and synced before the row exists
    begin_write(session)
    if source == "upload":
        # one student's simultaneous uploads count one after the other
        serialize_on(session, user.id, a.id)
        _check_daily_limit(session, user, a, now)
        serialize_on(session, user.id, QUEUED_LOCK)  # ...and so do those of two assignments
        _check_queued_limit(session, user, settings.max_queued_per_student)
    sub = Submission(user_id=user.id, assignment_id=a.id, created_at=now, filename=name, kind=kind,
                     content_hash=digest, size=len(data), late=late.late, days_late=late.days_late,
                     source=source, submitted_by_id=by.id if by else None)
    session.add(sub)
    run = app.state.queue.add_run(session, sub, a, reason="submit" if source == "upload" else source)
    session.commit()
    app.state.queue.dispatch([run])
    return sub


TOP_LEVEL_NAME = re.compile(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", re.MULTILINE)


def _top_level_names(source: str) -> frozenset[str]:
    """The functions and classes extracted code defines at its top level (a linear scan:
    nothing a student wrote is parsed in the server's process)."""
    return frozenset(TOP_LEVEL_NAME.findall(source))


def _graded_names(app, a: AssignmentRow) -> frozenset[str]:
    """The top-level names the master defines (the functions and classes a student fills in)."""
    from autograder import assignment as engine_assignments
    from autograder.authoring.notebook import extract
    from server import catalog

    cache = app.state.__dict__.setdefault("graded_names", {})
    key = (a.slug, a.loaded_at)
    if key not in cache:
        names: frozenset[str] = frozenset()
        try:
            master = engine_assignments.load(catalog.folder_of(app.state.settings.assignments_dir, a.slug)).master
            if master is not None:
                names = _top_level_names(extract(master).source)  # the course's own file
        except Exception:  # noqa: BLE001  (no master on this host: nothing refused on its account)
            names = frozenset()
        cache[key] = names
    return cache[key]


def board_specs(app, a: AssignmentRow) -> list[dict]:
    """The assignment's [[boards]] (name, function, timed, shapes), from its folder."""
    from autograder import assignment as engine_assignments
    from server import catalog

    cache = app.state.__dict__.setdefault("board_specs", {})
    key = (a.slug, a.loaded_at)
    if key not in cache:
        try:
            cache[key] = list(engine_assignments.load(catalog.folder_of(app.state.settings.assignments_dir,
                                                                        a.slug)).boards)
        except Exception:  # noqa: BLE001  (no folder on this host: no boards shown)
            cache[key] = []
    return cache[key]


REFUSALS_PER_WINDOW, REFUSAL_WINDOW = 10, 600.0


def _refusals_left(app, user: User) -> bool:
    """A student's uploads refused as unreadable cost the server a bounded reading each:
    at most REFUSALS_PER_WINDOW of them in REFUSAL_WINDOW seconds."""
    now = time.monotonic()
    seen = app.state.__dict__.setdefault("refused_uploads", {})
    recent = [t for t in seen.get(user.id, []) if now - t < REFUSAL_WINDOW]
    seen[user.id] = recent
    return len(recent) < REFUSALS_PER_WINDOW


def _count_refusal(app, user: User) -> None:
    app.state.__dict__.setdefault("refused_uploads", {}).setdefault(user.id, []).append(time.monotonic())


def unreadable_code(app, a: AssignmentRow, name: str, data: bytes) -> str | None:
    """Why an upload cannot be graded at all (a syntax error, or none of the functions the
    assignment grades), before it counts; None when it can. The file is read as the grader
    reads it, in a child process bounded in time and memory (extract_bounded): nothing a
    student wrote is parsed in the server's process."""
    import tempfile
    from pathlib import Path, PurePosixPath

    from autograder.authoring.notebook import extract_bounded

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{PurePosixPath(name).suffix.lower()}"
        path.write_bytes(data)
        code = extract_bounded(path)
    if code.fatal:
        return f"{name}: {code.fatal}"
    syntax = [n.split("; nothing in this cell")[0] for n in code.notes if "syntax error" in n]
    if syntax:
        return f"{name} cannot be run: " + "; ".join(syntax[:3]) + ". Fix it and submit again"
    wanted = _graded_names(app, a)
    if wanted and not _top_level_names(code.source) & wanted:
        return (f"{name} defines none of the functions {a.slug} grades ({', '.join(sorted(wanted)[:8])}); "
                "was it saved, and is it the right assignment?")
    return None


def regrade(app, session: Session, subs: list[Submission]) -> list[GradingRun]:
    begin_write(session)
    runs = [app.state.queue.add_run(session, s, s.assignment, reason="regrade") for s in subs]
    session.commit()
    app.state.queue.dispatch(runs)
    return runs


# -- views -------------------------------------------------------------------------
@dataclass(frozen=True)
class Viewing:
    """What decides the feedback a student may read: the release from the page (None: as
    assignment.toml says) and the student's own deadline (an extension's, else the course's)."""

    released: bool | None
    deadline: datetime | None
    extended: bool

    def passed(self, now: datetime) -> bool:
        return self.deadline is not None and now > self.deadline


def viewing(session: Session, a: AssignmentRow, student: User) -> Viewing:
    ext = decisions.extension_for(session, a, student)
    return Viewing(decisions.feedback_released(session, a), own_deadline(a.deadline, ext), ext is not None)


def _feedback_visible(visibility: str, a: AssignmentRow, now: datetime, view: Viewing) -> bool:
    """public: always; after_deadline: once the student's own deadline has passed; hidden:
    once staff released it from the page, or (never released nor hidden there) after the
    student's own deadline where assignment.toml says feedback_after_deadline. A student whose
    extension still runs sees neither before it ends: it would be the answers."""
    if visibility == "public":
        return True
    if view.extended and not view.passed(now):
        return False
    if visibility == "after_deadline":
        return view.passed(now) or bool(view.released)
    if view.released is not None:
        return view.released
    return a.feedback_after_deadline and view.passed(now)


def test_titles(run: GradingRun) -> dict[str, str]:
    return {t.get("name"): t.get("title") or t.get("description") or ""
            for t in (run.result or {}).get("tests", []) if isinstance(t, dict)}


def run_out(run: GradingRun, a: AssignmentRow, staff: bool, now: datetime, view: Viewing) -> RunOut:
    result = run.result or {}
    titles = test_titles(run)
    tests = []
    for t in run.tests:
        shown = staff or _feedback_visible(t.visibility, a, now, view)
        tests.append(TestOut(name=t.name, title=titles.get(t.name) or t.name, points=t.points,
                             max_points=t.max_points, visibility=t.visibility, status=t.status,
                             functions=list(t.functions or []), feedback=t.feedback if shown else None))
    out = RunOut(id=run.id, reason=run.reason, status=run.status, attempts=run.attempts,
                 enqueued_at=run.enqueued_at, started_at=run.started_at, finished_at=run.finished_at,
                 duration=run.duration, score=run.score, max_score=run.max_score, error=run.error,
                 notes=list(result.get("notes", [])), forbidden=list(result.get("forbidden", [])), tests=tests)
    if staff:
        out.worker, out.runner, out.sandbox = run.worker, run.runner, run.sandbox
        out.engine_version, out.grader_errors = run.engine_version, list(run.grader_errors or [])
        out.flags = list(result.get("flags", []))
    return out


def latest_done(sub: Submission) -> GradingRun | None:
    done = [r for r in sub.runs if r.status == "done"]
    return done[-1] if done else None


def submission_out(sub: Submission, viewer: User, now: datetime) -> SubmissionOut:
    from sqlalchemy.orm import object_session

    a = sub.assignment
    view = viewing(object_session(sub), a, sub.user)
    newest = sub.runs[-1] if sub.runs else None
    graded = latest_done(sub)
    score = graded.score if graded else None
    final = None if score is None else late_score(score, a.late_policy, sub.days_late)
    return SubmissionOut(
        id=sub.id, assignment=a.slug, login=sub.user.login, created_at=sub.created_at, filename=sub.filename,
        kind=sub.kind, size=sub.size, late=sub.late, days_late=sub.days_late, source=sub.source,
        status=newest.status if newest else "none", score=score, max_score=graded.max_score if graded else None,
        final_score=final, run=run_out(newest, a, auth.is_staff(viewer), now, view) if newest else None)


def load_submission(session: Session, sub_id: int, viewer: User) -> Submission:
    sub = session.scalar(select(Submission).where(Submission.id == sub_id)
                         .options(selectinload(Submission.runs).selectinload(GradingRun.tests)))
    # A student asking for another's submission learns nothing, not even that it exists.
    if sub is None or (not auth.is_staff(viewer) and sub.user_id != viewer.id):
        raise HTTPException(404, f"no submission {sub_id}")
    return sub


# -- scores ------------------------------------------------------------------------
def _function_points(run: GradingRun | None, function: str) -> float:
    return sum(t.points for t in (run.tests if run else []) if function in (t.functions or []))


def score_table(session: Session, a: AssignmentRow) -> ScoreTable:
    """Each student's final score: the graded score of the submission the policy picks,
    after the late penalty counted from the student's own deadline; a function's override
    replaces that function's points before the penalty, and an override of the assignment
    replaces the final score (no penalty applied to it). The graded score stays beside it."""
    students = session.scalars(select(User).where(User.role == "student").order_by(User.login)).all()
    # the runs' scores and states, not their whole results (read on demand where needed)
    subs = session.scalars(select(Submission).where(Submission.assignment_id == a.id)
                           .options(selectinload(Submission.runs).defer(GradingRun.result))).all()
    exts = decisions.extensions(session, a)
    overridden = decisions.overrides(session, a)
    by_user: dict[int, list[Submission]] = {}
    for s in subs:
        by_user.setdefault(s.user_id, []).append(s)
    # a function's override needs the tests of that student's runs
    need_tests = {uid for uid, o in overridden.items() if set(o) - {""}}
    if need_tests:
        session.scalars(select(GradingRun).join(Submission).where(Submission.assignment_id == a.id,
                                                                  Submission.user_id.in_(need_tests))
                        .options(selectinload(GradingRun.tests))).all()
    reviewed = decisions.reviews(session, [s.id for s in subs])
    rows = []
    for u in students:
        mine = by_user.get(u.id, [])
        fn_overrides = {f: o for f, o in overridden.get(u.id, {}).items() if f}
        graded = []
        for s in mine:
            r = latest_done(s)
            if r is not None and r.score is not None:
                score = r.score
                for f, o in fn_overrides.items():
                    score = max(0.0, score - _function_points(r, f) + float(o.score))
                graded.append(GradedSubmission(s.id, s.created_at, score, r.max_score or 0.0, s.days_late))
        best = final_score(graded, a.score_policy, a.late_policy)
        if best is not None:  # a function's override never lifts the score past the assignment's points
            best = (min(best[0], float(a.points)), best[1])
        whole = overridden.get(u.id, {}).get("")
        pending = sum(1 for s in mine if s.runs and s.runs[-1].status in ("queued", "running"))
        flagged = [s for s in mine if latest_done(s) and latest_done(s).flag_count]
        ext = exts.get(u.id)
        rows.append(ScoreRow(login=u.login, name=u.name, lms_id=u.lms_id,
                             score=whole.score if whole else (best[0] if best else None),
                             graded_score=best[0] if best else None, max_score=a.points,
                             override=whole.score if whole else None, override_reason=whole.reason if whole else None,
                             function_overrides={f: o.score for f, o in fn_overrides.items()},
                             submission_id=best[1].submission_id if best else None,
                             late=bool(best and best[1].days_late), days_late=best[1].days_late if best else 0,
                             submissions=len(mine), pending=pending,
                             deadline=own_deadline(a.deadline, ext), extended=ext is not None,
                             flagged=len(flagged), unreviewed=sum(1 for s in flagged if s.id not in reviewed)))
    return ScoreTable(assignment=a.slug, policy=a.score_policy, points=a.points, rows=rows)


def final_runs(session: Session, table: ScoreTable) -> list[GradingRun]:
    """The newest finished run of each student's final submission, with its tests."""
    ids = [r.submission_id for r in table.rows if r.submission_id]
    if not ids:
        return []
    subs = session.scalars(select(Submission).where(Submission.id.in_(ids))
                           .options(selectinload(Submission.runs).selectinload(GradingRun.tests),
                                    selectinload(Submission.user))).all()
    return [r for r in (latest_done(s) for s in subs) if r is not None]


EXPORT_FORMATS = ("generic", "canvas", "blackboard", "moodle")


def csv_response(text: str, slug: str, fmt: str):
    from fastapi.responses import Response
    suffix = "" if fmt == "generic" else f"-{fmt}"
    # UTF-8 with a byte-order mark: spreadsheet programs and LMS importers read the names right.
    return Response("\ufeff" + text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{slug}-scores{suffix}.csv"'})


def scores_csv(table: ScoreTable, fmt: str = "generic", title: str | None = None, lms_id: str | None = None) -> str:
    """The final scores as a CSV an LMS imports as it is (one row per student, an empty cell
    where nothing was graded; text cells escaped against formulas):
    - generic: login, name, the score, max_points, late_days, submission_id;
    - canvas: Canvas's gradebook header (Student, ID, SIS User ID, SIS Login ID, Section;
      ID is the roster's `lms_id`, Canvas's own user id), a "Points Possible" row, the assignment as `Title (id)` when Canvas's id is given
      (else `Title`, which Canvas adds as a new column), students matched by SIS login;
    - blackboard: Username and `Title [Total Pts: N Score]` (a new Grade Center column,
      or `... |id` for an existing one);
    - moodle: Username and the assignment's title (map Username to "username" on import).
    The LMS formats hold the grade column only: extra numbers would become grade columns."""
    if fmt not in EXPORT_FORMATS:
        raise HTTPException(422, f"format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    title = (title or table.assignment).strip()  # the csv writer quotes a title with commas
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")

    def score(r) -> str:
        return "" if r.score is None else f"{r.score:g}"

    if fmt == "generic":
        w.writerow(["login", "name", table.assignment, "max_points", "late_days", "submission_id"])
        for r in table.rows:
            w.writerow([csv_cell(r.login), csv_cell(r.name), score(r), f"{table.points:g}", r.days_late,
                        r.submission_id or ""])
    elif fmt == "canvas":
        column = f"{title} ({lms_id})" if lms_id else title
        w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", csv_cell(column)])
        w.writerow(["    Points Possible", "", "", "", "", f"{table.points:g}"])
        for r in table.rows:
            w.writerow([csv_cell(r.name or r.login), csv_cell(r.lms_id), csv_cell(r.login), csv_cell(r.login), "",
                        score(r)])
    elif fmt == "blackboard":
        column = f"{title} [Total Pts: {table.points:g} Score]" + (f" |{lms_id}" if lms_id else "")
        w.writerow(["Username", csv_cell(column)])
        for r in table.rows:
            w.writerow([csv_cell(r.login), score(r)])
    else:  # moodle
        w.writerow(["Username", csv_cell(title)])
        for r in table.rows:
            w.writerow([csv_cell(r.login), score(r)])
    return buf.getvalue()


# -- roster ------------------------------------------------------------------------
def _parse_roster(text: str, actor: User) -> list[tuple[str, str, str, str | None, str | None]]:
    """Rows of (login, name, email, role or None, lms_id or None). A role is only ever what a
    `role` cell says: a row without one leaves an existing account's role alone (a new
    account is a student). Every bad line is reported at once; nothing is taken from a file
    with one."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = {f.strip().lower() for f in (reader.fieldnames or [])}
    if not fields & {"login", "student_id"}:
        raise HTTPException(422, "the roster needs a header with a 'login' (or 'student_id') column")
    rows, seen, errors, status = [], {}, [], 422
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        login = row.get("login") or row.get("student_id") or ""
        role = (row.get("role") or "").lower() or None
        if login_error(login):
            errors.append(f"line {i}: {login_error(login)}")
        elif login in seen:
            errors.append(f"line {i}: {login} is listed twice (first on line {seen[login]})")
        elif role is not None and role not in ROLES:
            errors.append(f"line {i}: role {role!r} is not one of {', '.join(ROLES)}")
        elif role not in (None, "student") and actor.role != "admin":
            errors.append(f"line {i}: only an administrator may make {login} a {role}")
            status = 403
        else:
            seen[login] = i
            lms = row.get("lms_id", row.get("canvas_id"))
            rows.append((login, row.get("name", "")[:200], row.get("email", "")[:200], role,
                         None if lms is None else lms[:64]))
    if errors:
        more = f" (and {len(errors) - 100} more)" if len(errors) > 100 else ""
        raise HTTPException(status, f"{len(errors)} bad line(s), nothing was imported: " + "; ".join(errors[:100]) + more)
    return rows


def import_roster(session: Session, actor: User, text: str, reissue: bool = False) -> RosterOut:
    """CSV with a header: login (or student_id), name, email, role, lms_id (the LMS's own
    user id, Canvas's "ID"). New users get a token
    (and the role of their row, student by default); an existing user's role changes only
    where the row has a `role` cell. `reissue` gives everyone listed a new token (old ones
    revoked). A TA changes and reissues student accounts only: a row naming another
    member of staff refuses the whole import, nothing changed."""
    try:
        rows = _parse_roster(text, actor)
    except csv.Error as e:
        raise HTTPException(422, f"the roster is not readable CSV: {e}") from None
    begin_write(session)
    out = RosterOut(created=[], updated=[], tokens={})
    for login, name, email, role, lms_id in rows:
        user = session.scalar(select(User).where(User.login == login))
        if user is not None and actor.role != "admin" and user.role != "student" and user.id != actor.id:
            session.rollback()
            raise HTTPException(403, f"{login} is {user.role}: only an administrator may change or reissue a staff "
                                     "account; nothing was imported")
        if user is not None and user.id == actor.id and role not in (None, user.role):
            session.rollback()
            raise HTTPException(403, f"{login} is your own account: its role is changed by an administrator; "
                                     "nothing was imported")
        if user is None:
            user = User(login=login, name=name, email=email, role=role or "student", lms_id=lms_id or "")
            session.add(user)
            session.flush()
            out.created.append(login)
            out.tokens[login] = auth.issue_token(session, user)
        else:
            user.name, user.email, user.active = name or user.name, email or user.email, True
            if role is not None:
                user.role = role
            if lms_id is not None:
                user.lms_id = lms_id
            out.updated.append(login)
            if reissue:
                auth.revoke_tokens(session, user)
                out.tokens[login] = auth.issue_token(session, user)
    session.commit()
    return out


# -- the roster's new tokens, once ------------------------------------------------------------
TOKEN_CSV_SECONDS = 15 * 60


def hold_tokens_csv(app, tokens: dict[str, str], users, owner: User) -> str | None:
    """Hold the new tokens as a CSV for one download within 15 minutes, by `owner` (who
    imported the roster) only, in memory only; returns its key."""
    if not tokens:
        return None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["login", "name", "email", "token"])
    by_login = {u.login: u for u in users}
    for login, token in sorted(tokens.items()):
        u = by_login.get(login)
        w.writerow([csv_cell(login), csv_cell(u.name if u else ""), csv_cell(u.email if u else ""), token])
    held = app.state.__dict__.setdefault("token_csvs", {})
    now = time.monotonic()
    for k in [k for k, (at, _, _) in held.items() if now - at > TOKEN_CSV_SECONDS]:
        del held[k]
    key = secrets.token_urlsafe(24)
    held[key] = (now, owner.id, buf.getvalue())
    return key


# -- staff: batches and exports ------------------------------------------------------------
@dataclass
class BatchResult:
    made: list[tuple[str, int]]  # (login, submission id), in the archive's order
    skipped: list[tuple[str, str]]  # (entry, why it was left out)


def batch_submit(app, session: Session, actor: User, a: AssignmentRow, data: bytes,
                 submitted_at: datetime | None = None) -> BatchResult:
    """A zip of `<login>.ipynb` / `<login>/<any>.ipynb`: every file that can be placed is
    stored and graded; the others (a login not on the roster, an unreadable file) are listed
    with the reason. A hostile archive (paths outside it, links, a zip bomb) is refused whole."""
    from server.uploads import read_batch

    s = app.state.settings
    skipped: list[tuple[str, str]] = []
    try:
        entries = read_batch(data, max_files=s.max_batch_files, max_total=s.max_batch_uncompressed_bytes,
                             max_ratio=s.max_compression_ratio, max_entry=s.max_upload_bytes, skipped=skipped)
    except UploadError as e:
        raise HTTPException(e.status, e.detail) from None
    logins = {e.login for e in entries}
    users = {u.login: u for u in session.scalars(select(User).where(User.login.in_(logins)))}
    placed = []
    for e in entries:
        if e.login not in users:
            skipped.append((f"{e.login}/{e.filename}", f"{e.login} is not on the roster"))
            continue
        try:
            submission_kind(e.filename, e.data, s.max_upload_bytes)
        except UploadError as err:
            skipped.append((f"{e.login}/{e.filename}", err.detail))
            continue
        placed.append(e)
    if not placed:
        why = "; ".join(f"{n}: {w}" for n, w in skipped[:20])
        raise HTTPException(422, f"no file in the archive could be placed ({why}); nothing was stored")
    out = []
    for e in placed:
        sub = submit(app, session, users[e.login], a, e.filename, e.data, source="batch", by=actor,
                     at=submitted_at or utcnow())
        out.append((e.login, sub.id))
    return BatchResult(out, skipped)


def gradescope_zip(session: Session, a: AssignmentRow) -> bytes:
    """Gradescope's results.json of each student's final submission, `<login>/results.json`,
    the late penalty applied."""
    import json
    import zipfile

    from autograder.judge.results import SubmissionResult
    from autograder.text import visible_all

    table = score_table(session, a)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for row in table.rows:
            if row.submission_id is None:
                continue
            sub = session.get(Submission, row.submission_id)
            run = latest_done(sub)
            if run is None or run.result is None:
                continue
            r = SubmissionResult.from_dict(run.result)
            data = r.gradescope()
            factor = penalty_factor(a.late_policy, sub.days_late)
            if factor != 1.0:
                data["output"] = (data["output"] + f"\nlate by {sub.days_late} day(s): score x {factor:g}").strip()
            for f, v in row.function_overrides.items():
                data["output"] = (data["output"] + f"\n{f}'s tests scored {v:g} by course staff").strip()
            if row.override is not None:
                data["output"] = (data["output"] + f"\nscore set by course staff: {row.override_reason}").strip()
            data["score"] = row.score  # what the score table says: penalty and overrides applied
            # Gradescope shows these strings as text to the student: escapes visible, not raw
            zf.writestr(f"{row.login}/results.json", json.dumps(visible_all(data), indent=2))
    return buf.getvalue()
