from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from server import auth
from server.auth import UserDep
from server.db import SessionDep, releases_session
from server.models import AssignmentRow, GradingRun, Submission, User, utcnow
from server.schemas import Slug, SubmissionId, SubmissionOut, SubmitOut
from server.security import LOGIN_PATTERN, attachment
from server.service import get_assignment, load_submission, submission_out, submit

router = APIRouter(tags=["submissions"])

ERRORS = {400: {"description": "bad request"}, 404: {"description": "no such assignment"},
          403: {"description": "closed"}, 413: {"description": "too large"}, 415: {"description": "not a notebook"},
          422: {"description": "unreadable file"}, 429: {"description": "daily limit reached, or too many submissions waiting to be graded"}}


@router.post("/assignments/{slug}/submissions", response_model=SubmitOut, status_code=201, responses=ERRORS,
             summary="submit a notebook (.ipynb) or Python file (.py) for grading")
@releases_session
def create_submission(slug: Slug, request: Request, user: UserDep, session: SessionDep,
                            file: Annotated[UploadFile, File(description="the notebook")]) -> SubmitOut:
    limit = request.app.state.settings.max_upload_bytes
    data = file.file.read(limit + 1)
    a = get_assignment(session, slug)
    sub = submit(request.app, session, user, a, file.filename, data)
    sub = load_submission(session, sub.id, user)
    late = f" (late by {sub.days_late} day(s))" if sub.late else ""
    return SubmitOut(submission=submission_out(sub, user, utcnow()),
                     message=f"submission {sub.id} received{late}; grading is queued")


@router.get("/submissions", response_model=list[SubmissionOut],
            summary="my submissions (staff: everyone's, filtered by login and assignment)")
@releases_session
def list_submissions(user: UserDep, session: SessionDep, assignment: str | None = None,
                     login: Annotated[str | None, Query(max_length=64, pattern=LOGIN_PATTERN)] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[SubmissionOut]:
    q = select(Submission).options(selectinload(Submission.runs).selectinload(GradingRun.tests))
    if not auth.is_staff(user):
        q = q.where(Submission.user_id == user.id)
    elif login:
        q = q.join(User, Submission.user_id == User.id).where(User.login == login)
    if assignment:
        q = q.join(AssignmentRow, Submission.assignment_id == AssignmentRow.id).where(AssignmentRow.slug == assignment)
    now = utcnow()
    return [submission_out(s, user, now) for s in session.scalars(q.order_by(Submission.id.desc()).limit(limit))]


@router.get("/submissions/{sub_id}", response_model=SubmissionOut, responses={404: {"description": "not yours or none"}})
@releases_session
def one_submission(sub_id: SubmissionId, user: UserDep, session: SessionDep) -> SubmissionOut:
    return submission_out(load_submission(session, sub_id, user), user, utcnow())


@router.get("/submissions/{sub_id}/file", responses={404: {"description": "not yours or none"},
                                                      200: {"content": {"application/octet-stream": {}}}},
            summary="the file as it was submitted")
@releases_session
def submission_file(sub_id: SubmissionId, request: Request, user: UserDep, session: SessionDep) -> Response:
    sub = load_submission(session, sub_id, user)
    data = request.app.state.store.get(sub.content_hash)
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": attachment(f"{sub.id}-{sub.filename}")})
