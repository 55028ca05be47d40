from fastapi import APIRouter, Request
from sqlalchemy import func, select

from server.auth import UserDep
from server.db import SessionDep, releases_session
from server.models import GradingRun
from server.schemas import Health, UserOut

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health, summary="the server, its database and its queue")
@releases_session
def health(request: Request, session: SessionDep) -> Health:
    counts = dict(session.execute(select(GradingRun.status, func.count()).group_by(GradingRun.status)).all())
    settings = request.app.state.settings
    return Health(ok=True, database=session.bind.dialect.name, queue={k: int(v) for k, v in counts.items()},
                  broker="celery" if settings.broker_url else "embedded")


@router.get("/me", response_model=UserOut, summary="who this token belongs to")
@releases_session
def me(user: UserDep) -> UserOut:
    return UserOut(login=user.login, name=user.name, email=user.email, role=user.role, active=user.active)
