from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from sqlalchemy import select

from server.auth import StaffDep
from server.db import SessionDep, releases_session
from server.models import User
from server.schemas import RosterOut, UserOut
from server.service import import_roster

router = APIRouter(tags=["roster"])

ROSTER_LIMIT = 2 * 1024 * 1024


@router.post("/roster", response_model=RosterOut, responses={403: {"description": "not allowed"},
                                                            422: {"description": "bad CSV"}},
             summary="import a roster CSV (login, name, email, role); new users get an API token")
@releases_session
def roster_import(request: Request, user: StaffDep, session: SessionDep,
                        file: Annotated[UploadFile, File(description="CSV with a header row")],
                        reissue: Annotated[bool, Query(description="new tokens for everyone listed")] = False) -> RosterOut:
    data = file.file.read(ROSTER_LIMIT + 1)
    if len(data) > ROSTER_LIMIT:
        raise HTTPException(413, f"the roster is larger than {ROSTER_LIMIT} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(422, "the roster is not UTF-8 text") from None
    return import_roster(session, user, text, reissue=reissue)


@router.get("/users", response_model=list[UserOut], summary="everyone on the roster")
@releases_session
def users(user: StaffDep, session: SessionDep) -> list[UserOut]:
    return [UserOut(login=u.login, name=u.name, email=u.email, role=u.role, active=u.active)
            for u in session.scalars(select(User).order_by(User.login))]
