"""API tokens and roles.

A token is 32 random bytes (urlsafe base64) handed out once; the database keeps only its
sha256 (a token carries 256 bits of entropy, so a fast hash is enough: nothing to
brute-force). Requests carry it as `Authorization: Bearer <token>`; the web pages keep it
in an HttpOnly, SameSite=Strict cookie and add a CSRF field derived from it to every form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import SessionDep
from server.models import ApiToken, User, utcnow

COOKIE = "dlopt_token"
RANK = {"student": 0, "ta": 1, "admin": 2}
bearer = HTTPBearer(auto_error=False, description="an API token issued from the roster")


def new_token() -> str:
    return "dlopt_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_for(token: str) -> str:
    return hashlib.sha256(b"csrf:" + token.encode()).hexdigest()[:32]


def issue_token(session: Session, user: User) -> str:
    token = new_token()
    session.add(ApiToken(user_id=user.id, token_hash=token_hash(token)))
    return token


def user_for_token(session: Session, token: str | None) -> User | None:
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token),
                                                ApiToken.revoked_at.is_(None)))
    if row is None or not row.user.active:
        return None
    return row.user


def is_staff(user: User) -> bool:
    return RANK.get(user.role, 0) >= RANK["ta"]


def check_csrf(token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(csrf_for(token), given)


def current_user(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                 session: SessionDep) -> User:
    user = user_for_token(session, creds.credentials if creds else None)
    session.commit()  # end the lookup's transaction: the route's own begins when it needs one
    if user is None:
        raise HTTPException(401, "missing or invalid API token", headers={"WWW-Authenticate": "Bearer"})
    return user


def require_ta(user: Annotated[User, Depends(current_user)]) -> User:
    if not is_staff(user):
        raise HTTPException(403, "course staff only")
    return user


def require_admin(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise HTTPException(403, "administrators only")
    return user


UserDep = Annotated[User, Depends(current_user)]
StaffDep = Annotated[User, Depends(require_ta)]
AdminDep = Annotated[User, Depends(require_admin)]


def revoke_tokens(session: Session, user: User) -> None:
    for t in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))):
        t.revoked_at = utcnow()
