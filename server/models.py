"""Tables. Every change here comes with a migration in `migrations/versions/`
(tests/server/test_migrations.py fails when the two disagree)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("student", "ta", "admin")
RUN_STATUSES = ("queued", "running", "done", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)  # the student id of the roster
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16), default="student")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lms_id: Mapped[str] = mapped_column(String(64), default="")  # the LMS's own id (Canvas's "ID" column)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A browser's sign-in: the cookie holds a random secret (only its sha256 is kept here),
    never the API token. It ends at `expires_at`, or when signing out revokes it."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship()


class SignInFailure(Base):
    """A failed sign-in, by client address (and the account, when the token was one that
    was revoked): the sign-in form refuses an address or account with too many recent ones."""

    __tablename__ = "sign_in_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    login: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AssignmentRow(Base):
    """An assignment as served: loaded from `assignments/<slug>/assignment.toml` at start."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    points: Mapped[float] = mapped_column(Float)
    gpu: Mapped[str] = mapped_column(String(16), default="none")
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # the deadline's offset, for "per day"
    late_policy: Mapped[dict] = mapped_column(JSON, default=dict)
    daily_submission_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score_policy: Mapped[str] = mapped_column(String(16), default="best")
    feedback_after_deadline: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # still in assignments/
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Submission(Base):
    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    filename: Mapped[str] = mapped_column(String(255))  # the uploaded name, cleaned; for display
    kind: Mapped[str] = mapped_column(String(8))  # ipynb | py
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256; the file is store/ab/cdef...
    size: Mapped[int] = mapped_column(Integer)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    days_late: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16), default="upload")  # upload | batch
    submitted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    assignment: Mapped[AssignmentRow] = relationship()
    runs: Mapped[list[GradingRun]] = relationship(back_populates="submission", order_by="GradingRun.id")


class GradingRun(Base):
    """One grading of one submission; a regrade is a new run. Attempts count the workers
    that took it (a worker killed mid-job leaves it to the next); it is recorded once."""

    __tablename__ = "grading_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    reason: Mapped[str] = mapped_column(String(16), default="submit")  # submit | regrade | batch
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)  # seconds spent grading
    runner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sandbox: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    engine_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # shown to the student
    grader_errors: Mapped[list | None] = mapped_column(JSON, nullable=True)  # staff only
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # the engine's whole result
    flag_count: Mapped[int] = mapped_column(Integer, default=0)  # len(result["flags"]): the review queue's index

    submission: Mapped[Submission] = relationship(back_populates="runs")
    tests: Mapped[list[TestResultRow]] = relationship(back_populates="run", order_by="TestResultRow.id")


class TestResultRow(Base):
    __test__ = False  # not a pytest test class
    __tablename__ = "test_results"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_test_results_run_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("grading_runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    points: Mapped[float] = mapped_column(Float)
    max_points: Mapped[float] = mapped_column(Float)
    visibility: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    feedback: Mapped[str] = mapped_column(Text, default="")
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    functions: Mapped[list] = mapped_column(JSON, default=list)

    run: Mapped[GradingRun] = relationship(back_populates="tests")


# -- staff decisions: append-only, each with who, when and why; the newest row is in force --
class StaffRecord:
    """Columns every staff decision carries: who made it, when, and the reason given."""

    id: Mapped[int] = mapped_column(primary_key=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Extension(StaffRecord, Base):
    """A student's own deadline for an assignment: a new deadline, or the course deadline
    moved by `late_days` days. Neither set: the extension is withdrawn."""

    __tablename__ = "extensions"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    late_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    actor: Mapped[User] = relationship(foreign_keys=[actor_id])


class Override(StaffRecord, Base):
    """A manual score: of the whole assignment (`function` empty), or of the tests that grade
    one function (a flag review's "zero this function"). `score` null: withdrawn."""

    __tablename__ = "overrides"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    function: Mapped[str] = mapped_column(String(200), default="")
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"), nullable=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    actor: Mapped[User] = relationship(foreign_keys=[actor_id])


class FlagReview(StaffRecord, Base):
    """A TA's decision on a flagged submission: cleared, zeroed (with its override) or a note."""

    __tablename__ = "flag_reviews"

    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))  # cleared | zeroed | note
    function: Mapped[str] = mapped_column(String(200), default="")
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    actor: Mapped[User] = relationship(foreign_keys=[actor_id])


class BoardRemoval(StaffRecord, Base):
    """A submission taken off a leaderboard (`removed`), or put back (`removed` false), with
    the reason; the newest row for (submission, board) is in force."""

    __tablename__ = "board_removals"

    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    board: Mapped[str] = mapped_column(String(100))
    removed: Mapped[bool] = mapped_column(Boolean, default=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    actor: Mapped[User] = relationship(foreign_keys=[actor_id])


class BoardName(Base):
    """The name a student shows on the leaderboards (none: anonymous)."""

    __tablename__ = "board_names"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    name: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FeedbackRelease(StaffRecord, Base):
    """Hidden tests' names and feedback released to students (or hidden again)."""

    __tablename__ = "feedback_releases"

    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    released: Mapped[bool] = mapped_column(Boolean)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    actor: Mapped[User] = relationship(foreign_keys=[actor_id])
