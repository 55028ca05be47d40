"""API tokens, browser sessions and roles.

A token is 32 random bytes (urlsafe base64) handed out once; the database keeps only its
sha256 (a token carries 256 bits of entropy, so a fast hash is enough: nothing to
brute-force). API requests carry it as `Authorization: Bearer <token>`.

The web pages sign in with a token and get a session: a fresh random secret in an
HttpOnly, SameSite=Strict cookie (Secure over HTTPS), kept hashed with an expiry, revoked
server-side at sign-out. Every form carries a CSRF field derived from the session secret;
the sign-in form, which has no session yet, a value that must match a cookie of its own
(double submit), and every form post must come from this server's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db import SessionDep
from server.models import ApiToken, SignInFailure, User, WebSession, utcnow

COOKIE = "dlopt_session"
LOGIN_COOKIE = "dlopt_login"
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
    """The user's API tokens and browser sessions, all revoked (a reissue signs them out)."""
    for t in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))):
        t.revoked_at = utcnow()
    revoke_sessions(session, user)


# -- browser sessions ------------------------------------------------------------------
def start_session(session: Session, user: User, hours: float, now: datetime | None = None) -> str:
    secret = "s_" + secrets.token_urlsafe(32)
    now = now or utcnow()
    session.add(WebSession(user_id=user.id, secret_hash=token_hash(secret), created_at=now,
                           expires_at=now + timedelta(hours=hours)))
    return secret


def user_for_session(session: Session, secret: str | None, now: datetime | None = None) -> User | None:
    if not secret or len(secret) > 200:
        return None
    row = session.scalar(select(WebSession).where(WebSession.secret_hash == token_hash(secret),
                                                  WebSession.revoked_at.is_(None)))
    if row is None or row.expires_at <= (now or utcnow()) or not row.user.active:
        return None
    return row.user


def end_session(session: Session, secret: str | None) -> None:
    if secret:
        row = session.scalar(select(WebSession).where(WebSession.secret_hash == token_hash(secret)))
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()


def revoke_sessions(session: Session, user: User) -> None:
    for row in session.scalars(select(WebSession).where(WebSession.user_id == user.id,
                                                        WebSession.revoked_at.is_(None))):
        row.revoked_at = utcnow()


# -- failed sign-ins ---------------------------------------------------------------------
def sign_in_blocked(session: Session, address: str, login: str | None, limit: int, window: timedelta,
                    now: datetime | None = None) -> bool:
    """Too many recent failures from this address, or for this account."""
    since = (now or utcnow()) - window
    q = select(func.count(SignInFailure.id)).where(SignInFailure.at >= since)
    if session.scalar(q.where(SignInFailure.address == address)) >= limit:
        return True
    return login is not None and session.scalar(q.where(SignInFailure.login == login)) >= limit


def login_of_token(session: Session, token: str) -> str | None:
    """The account a token names, revoked or not (None for one that never existed)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token))) if token else None
    return row.user.login if row is not None else None


def record_failed_sign_in(session: Session, address: str, token: str, window: timedelta | None = None) -> str | None:
    """Keep the failure (with the account it names when the token is one that was
    revoked); failures older than the window are deleted on the way."""
    from sqlalchemy import delete

    if window is not None:
        session.execute(delete(SignInFailure).where(SignInFailure.at < utcnow() - window))
    login = login_of_token(session, token)
    session.add(SignInFailure(address=address[:64], login=login))
    return login
