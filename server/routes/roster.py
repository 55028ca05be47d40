from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile
from sqlalchemy import select

from server.auth import StaffDep
from server.db import SessionDep, releases_session
from server.models import User
from server.schemas import RosterOut, UserOut
from server.security import csv_text
from server.service import import_roster

router = APIRouter(tags=["roster"])


@router.post("/roster", response_model=RosterOut, responses={403: {"description": "not allowed"},
                                                            422: {"description": "bad CSV"}},
             summary="import a roster CSV (login, name, email, role); new users get an API token")
@releases_session
def roster_import(request: Request, user: StaffDep, session: SessionDep,
                        file: Annotated[UploadFile, File(description="CSV with a header row")],
                        reissue: Annotated[bool, Query(description="new tokens for everyone listed")] = False) -> RosterOut:
    return import_roster(session, user, csv_text(file, "the roster"), reissue=reissue)


@router.get("/users", response_model=list[UserOut], summary="everyone on the roster")
@releases_session
def users(user: StaffDep, session: SessionDep) -> list[UserOut]:
    return [UserOut(login=u.login, name=u.name, email=u.email, role=u.role, active=u.active)
            for u in session.scalars(select(User).order_by(User.login))]
