from fastapi import APIRouter
from sqlalchemy import select

from server.auth import UserDep
from server.db import SessionDep, releases_session
from server.models import AssignmentRow, utcnow
from server.schemas import AssignmentOut, Slug
from server.service import assignment_out, get_assignment

router = APIRouter(tags=["assignments"])


@router.get("/assignments", response_model=list[AssignmentOut], summary="the assignments open on this server")
@releases_session
def list_assignments(user: UserDep, session: SessionDep) -> list[AssignmentOut]:
    now = utcnow()
    rows = session.scalars(select(AssignmentRow).where(AssignmentRow.active).order_by(AssignmentRow.slug))
    return [assignment_out(session, a, user, now) for a in rows]


@router.get("/assignments/{slug}", response_model=AssignmentOut, responses={404: {"description": "no such assignment"}})
@releases_session
def one_assignment(slug: Slug, user: UserDep, session: SessionDep) -> AssignmentOut:
    return assignment_out(session, get_assignment(session, slug), user, utcnow())
