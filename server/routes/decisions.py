"""Course staff's decisions: extensions, score overrides, the flag review, the release of
hidden feedback, a student's history and the drill-down of one test."""

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi import Path as PathParam

from server import decisions
from server.auth import StaffDep
from server.db import SessionDep, begin_write, releases_session
from server.models import User
from server.policy import own_deadline
from server.schemas import (
    ExtensionIn,
    ExtensionOut,
    FlagOut,
    HistoryEvent,
    OverrideIn,
    OverrideOut,
    ReleaseIn,
    ReviewIn,
    Slug,
    SubmissionId,
)
from server.security import LOGIN_PATTERN, csv_text
from server.service import final_runs, get_assignment, load_submission, score_table

router = APIRouter(tags=["staff decisions"])
NOT_FOUND = {404: {"description": "no such assignment, student or submission"},
             422: {"description": "not a valid decision (the detail says why)"}}


def extension_out(a, ext, login: str) -> ExtensionOut:
    return ExtensionOut(login=login, assignment=a.slug, deadline=own_deadline(a.deadline, ext),
                        late_days=ext.late_days, reason=ext.reason, by=ext.actor.login, at=ext.created_at)


@router.post("/assignments/{slug}/extensions", response_model=ExtensionOut, status_code=201, responses=NOT_FOUND,
             summary="give a student their own deadline (a new one, or the course's moved by late_days)")
@releases_session
def extend(slug: Slug, body: ExtensionIn, user: StaffDep, session: SessionDep) -> ExtensionOut:
    a = get_assignment(session, slug)
    student = decisions.student(session, body.login)
    begin_write(session)
    ext = decisions.grant_extension(session, user, a, student, deadline=body.deadline, late_days=body.late_days,
                                    reason=body.reason)
    session.commit()
    return extension_out(a, ext, student.login)


@router.post("/assignments/{slug}/extensions.csv", response_model=list[ExtensionOut], status_code=201,
             responses=NOT_FOUND, summary="import an accommodation list: CSV of login, deadline or late_days, reason")
@releases_session
def extend_from_csv(slug: Slug, user: StaffDep, session: SessionDep,
                    file: Annotated[UploadFile, File(description="CSV with a header row")],
                    reason: Annotated[str, Form(max_length=2000, description="for rows without a reason")] = ""
                    ) -> list[ExtensionOut]:
    a = get_assignment(session, slug)
    made = decisions.import_extensions(session, user, a, csv_text(file), reason)
    return [extension_out(a, e, session.get(User, e.user_id).login) for e in made]


@router.get("/assignments/{slug}/extensions", response_model=list[ExtensionOut], responses=NOT_FOUND,
            summary="the extensions in force")
@releases_session
def list_extensions(slug: Slug, user: StaffDep, session: SessionDep) -> list[ExtensionOut]:
    a = get_assignment(session, slug)
    return [extension_out(a, e, session.get(User, uid).login)
            for uid, e in decisions.extensions(session, a).items()]


@router.post("/assignments/{slug}/overrides", response_model=OverrideOut, status_code=201, responses=NOT_FOUND,
             summary="set a student's score by hand (of the assignment, or of one function's tests); "
                     "null withdraws it")
@releases_session
def override(slug: Slug, body: OverrideIn, user: StaffDep, session: SessionDep) -> OverrideOut:
    a = get_assignment(session, slug)
    student = decisions.student(session, body.login)
    begin_write(session)
    row = decisions.set_override(session, user, a, student, score=body.score, reason=body.reason,
                                 function=body.function)
    session.commit()
    table = next(r for r in score_table(session, a).rows if r.login == student.login)
    return OverrideOut(login=student.login, assignment=a.slug, function=row.function, score=row.score,
                       graded_score=table.graded_score, final_score=table.score, reason=row.reason,
                       by=user.login, at=row.created_at)


@router.get("/assignments/{slug}/flags", response_model=list[FlagOut], responses=NOT_FOUND,
            summary="flagged submissions (the newest run of each), unreviewed first")
@releases_session
def flags(slug: Slug, user: StaffDep, session: SessionDep, unreviewed: bool = True) -> list[FlagOut]:
    a = get_assignment(session, slug)
    return [FlagOut(**{k: v for k, v in d.items() if k != "run"})
            for d in decisions.flag_queue(session, a, unreviewed_only=unreviewed)]


@router.post("/submissions/{sub_id}/review", response_model=FlagOut, status_code=201, responses=NOT_FOUND,
             summary="review a flagged submission: cleared, zeroed (the function's tests score 0) or note")
@releases_session
def review(sub_id: SubmissionId, body: ReviewIn, user: StaffDep, session: SessionDep) -> FlagOut:
    sub = load_submission(session, sub_id, user)
    begin_write(session)
    decisions.review_flags(session, user, sub, body.action, body.reason, body.function)
    session.commit()
    return FlagOut(**decisions.flag_entry(session, load_submission(session, sub_id, user)))


@router.post("/assignments/{slug}/release", responses=NOT_FOUND,
             summary="release the hidden tests' names and feedback to students (released=false hides them again)")
@releases_session
def release(slug: Slug, body: ReleaseIn, user: StaffDep, session: SessionDep) -> dict:
    a = get_assignment(session, slug)
    begin_write(session)
    decisions.set_release(session, user, a, body.released, body.reason)
    session.commit()
    return {"assignment": a.slug, "released": body.released}


@router.get("/assignments/{slug}/students/{login}/history", response_model=list[HistoryEvent], responses=NOT_FOUND,
            summary="every staff decision about this student and assignment, newest first")
@releases_session
def history(slug: Slug, login: Annotated[str, PathParam(max_length=64, pattern=LOGIN_PATTERN)],
            user: StaffDep, session: SessionDep) -> list[HistoryEvent]:
    a = get_assignment(session, slug)
    return [HistoryEvent(**e.__dict__) for e in decisions.history(session, a, decisions.student(session, login))]


@router.get("/assignments/{slug}/tests/{name:path}/failures", responses=NOT_FOUND,
            summary="who fails one test (their final submission), grouped by message")
@releases_session
def failures(slug: Slug, name: str, user: StaffDep, session: SessionDep) -> dict:
    a = get_assignment(session, slug)
    return decisions.test_failures(final_runs(session, score_table(session, a)), name[:300])
