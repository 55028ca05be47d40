"""Course staff: batch upload, regrades, the score table and its exports, failed runs."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from server.auth import StaffDep
from server.db import SessionDep, releases_session
from server.models import AssignmentRow, GradingRun, Submission
from server.schemas import BatchOut, FailedRun, RegradeOut, ScoreTable, Slug, SubmissionId
from server.service import (
    batch_submit,
    csv_response,
    get_assignment,
    gradescope_zip,
    load_submission,
    regrade,
    score_table,
    scores_csv,
)

router = APIRouter(tags=["staff"])
NOT_FOUND = {404: {"description": "no such assignment or submission"}}


@router.post("/assignments/{slug}/batch", response_model=BatchOut, status_code=201,
             responses={**NOT_FOUND, 400: {"description": "unsafe archive"}, 413: {"description": "too large"},
                        422: {"description": "unreadable archive, or no file in it could be placed"}},
             summary="grade a zip of notebooks named by student login (login.ipynb or login/any.ipynb)")
@releases_session
def batch_upload(slug: Slug, request: Request, user: StaffDep, session: SessionDep,
                       file: Annotated[UploadFile, File(description="a zip archive")],
                       submitted_at: Annotated[datetime | None, Form(description="when the work was handed in "
                                                                     "(for the late flag); default now")] = None
                       ) -> BatchOut:
    s = request.app.state.settings
    data = file.file.read(s.max_batch_bytes + 1)
    if len(data) > s.max_batch_bytes:
        raise HTTPException(413, f"the archive is larger than {s.max_batch_bytes} bytes")
    a = get_assignment(session, slug)
    if submitted_at is not None and submitted_at.tzinfo is None:
        raise HTTPException(422, "submitted_at needs a UTC offset")
    made = batch_submit(request.app, session, user, a, data, submitted_at)
    return BatchOut(submissions=[sid for _, sid in made.made], by_login=dict(made.made),
                    skipped=[{"entry": n, "why": w} for n, w in made.skipped])


@router.post("/submissions/{sub_id}/regrade", response_model=RegradeOut, status_code=202, responses=NOT_FOUND)
@releases_session
def regrade_one(sub_id: SubmissionId, request: Request, user: StaffDep, session: SessionDep) -> RegradeOut:
    sub = load_submission(session, sub_id, user)
    return RegradeOut(runs=[r.id for r in regrade(request.app, session, [sub])])


@router.post("/assignments/{slug}/regrade", response_model=RegradeOut, status_code=202, responses=NOT_FOUND,
             summary="regrade every submission of an assignment (or only those whose last run failed)")
@releases_session
def regrade_all(slug: Slug, request: Request, user: StaffDep, session: SessionDep,
                only_failed: bool = False) -> RegradeOut:
    a = get_assignment(session, slug)
    subs = session.scalars(select(Submission).where(Submission.assignment_id == a.id)
                           .options(selectinload(Submission.runs))).all()
    if only_failed:
        subs = [s for s in subs if s.runs and (s.runs[-1].status == "failed" or s.runs[-1].error)]
    return RegradeOut(runs=[r.id for r in regrade(request.app, session, subs)])


@router.get("/assignments/{slug}/scores", response_model=ScoreTable, responses=NOT_FOUND,
            summary="the final score per student, by the assignment's policy, late penalty applied")
@releases_session
def scores(slug: Slug, user: StaffDep, session: SessionDep) -> ScoreTable:
    return score_table(session, get_assignment(session, slug))


@router.get("/assignments/{slug}/scores.csv", responses={**NOT_FOUND, 200: {"content": {"text/csv": {}}}},
            summary="the score table as CSV for an LMS: generic, canvas, blackboard or moodle")
@releases_session
def scores_as_csv(slug: Slug, user: StaffDep, session: SessionDep,
                  format: Annotated[str, Query(pattern="^(generic|canvas|blackboard|moodle)$")] = "generic",
                  lms_id: Annotated[str | None, Query(pattern="^[0-9A-Za-z_-]{1,32}$",
                                                      description="the LMS's id of the assignment")] = None
                  ) -> Response:
    a = get_assignment(session, slug)
    return csv_response(scores_csv(score_table(session, a), format, a.title, lms_id), a.slug, format)


@router.get("/assignments/{slug}/gradescope.zip", responses={**NOT_FOUND, 200: {"content": {"application/zip": {}}}},
            summary="Gradescope results.json of each student's final submission: <login>/results.json")
@releases_session
def gradescope_export(slug: Slug, user: StaffDep, session: SessionDep) -> Response:
    a = get_assignment(session, slug)
    return Response(gradescope_zip(session, a), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{a.slug}-gradescope.zip"'})


@router.get("/runs/failed", response_model=list[FailedRun],
            summary="runs that failed or ended with a grader error, newest first")
@releases_session
def failed_runs(user: StaffDep, session: SessionDep, assignment: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[FailedRun]:
    q = (select(GradingRun).join(Submission).join(AssignmentRow)
         .where((GradingRun.status == "failed") | (GradingRun.error.is_not(None))))
    if assignment:
        q = q.where(AssignmentRow.slug == assignment)
    out = []
    for run in session.scalars(q.order_by(GradingRun.id.desc()).limit(limit)):
        out.append(FailedRun(run_id=run.id, submission_id=run.submission_id, login=run.submission.user.login,
                             assignment=run.submission.assignment.slug, status=run.status, attempts=run.attempts,
                             error=run.error, grader_errors=list(run.grader_errors or []),
                             finished_at=run.finished_at))
    return out
