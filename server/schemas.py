"""What the API returns (pydantic models: the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

# Ids fit the databases' 32-bit integer columns; a larger one is a 422, not a driver error.
SubmissionId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a submission's id")]
Slug = Annotated[str, Path(min_length=1, max_length=64, description="an assignment's slug")]


class UserOut(BaseModel):
    login: str
    name: str
    email: str
    role: str
    active: bool


class AssignmentOut(BaseModel):
    slug: str
    title: str
    points: float
    gpu: str
    deadline: datetime | None = Field(description="the caller's own deadline (an extension's, else the course's)")
    course_deadline: datetime | None = None
    extended: bool = Field(default=False, description="the caller has an extension")
    timezone: str = Field(default="UTC", description="the course deadline's UTC offset")
    late_policy: dict
    daily_submission_limit: int | None
    score_policy: str
    feedback_after_deadline: bool = Field(description="hidden tests' feedback shown once the deadline has passed "
                                          "(or released by staff)")
    closed: bool = Field(description="past the last day a late submission is accepted")
    state: str = Field(default="open", description="none (no deadline), open, late or closed, for the caller now")
    state_summary: str = Field(default="", description='e.g. "late: -10% now, closes in 22 h"')
    closes_at: datetime | None = None
    days_late_now: int = Field(default=0, description="days late a submission made now would be")
    penalty_now: float = Field(default=0.0, description="the fraction a submission made now loses")
    partial_days: str = Field(default="", description="how a part of a day counts")
    submissions_today: int = Field(description="the caller's own uploads today (the daily limit's count)")


class TestOut(BaseModel):
    name: str
    title: str = Field(default="", description="a readable title (the test's docstring's first line)")
    points: float
    max_points: float
    visibility: str
    status: str
    feedback: str | None = Field(description="null where the visibility rules hide it")
    functions: list[str]


class RunOut(BaseModel):
    id: int
    reason: str
    status: str = Field(description="queued, running, done (graded, maybe with an error), failed")
    attempts: int
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    score: float | None
    max_score: float | None
    error: str | None
    notes: list[str]
    forbidden: list[dict]
    tests: list[TestOut]
    # staff only (null for students)
    worker: str | None = None
    runner: str | None = None
    sandbox: dict | None = None
    engine_version: str | None = None
    grader_errors: list[str] | None = None
    flags: list[dict] | None = Field(default=None, description="constructs flagged for a TA's review "
                                     "(computed getattr, importlib, frames, the engine's modules...)")


class SubmissionOut(BaseModel):
    id: int
    assignment: str
    login: str
    created_at: datetime
    filename: str
    kind: str
    size: int
    late: bool
    days_late: int
    source: str
    status: str
    score: float | None = Field(description="the newest finished run's score, before any late penalty")
    max_score: float | None
    final_score: float | None = Field(description="score after the late penalty")
    run: RunOut | None = Field(description="the newest run")


class SubmitOut(BaseModel):
    submission: SubmissionOut
    message: str


class RosterOut(BaseModel):
    created: list[str]
    updated: list[str]
    tokens: dict[str, str] = Field(description="login -> new API token; shown once, stored hashed")


class BatchOut(BaseModel):
    submissions: list[int]
    by_login: dict[str, int]
    skipped: list[dict] = Field(default_factory=list, description="entries left out: {entry, why} (a login not on "
                                "the roster, an unreadable file)")


class RegradeOut(BaseModel):
    runs: list[int]


class ScoreRow(BaseModel):
    login: str
    name: str
    lms_id: str = ""
    score: float | None = Field(description="the final score: an override where staff set one")
    graded_score: float | None = Field(default=None, description="the graded final score, late penalty applied")
    override: float | None = Field(default=None, description="a manual score for the assignment")
    override_reason: str | None = None
    function_overrides: dict[str, float] = Field(default_factory=dict, description="function -> its tests' points")
    max_score: float
    submission_id: int | None
    late: bool
    days_late: int
    submissions: int
    pending: int = Field(description="submissions not yet graded")
    deadline: datetime | None = Field(default=None, description="the student's own deadline")
    extended: bool = False
    flagged: int = Field(default=0, description="submissions whose code is flagged for review")
    unreviewed: int = Field(default=0, description="flagged submissions no TA has reviewed")


class ScoreTable(BaseModel):
    assignment: str
    policy: str
    points: float
    rows: list[ScoreRow]


class FailedRun(BaseModel):
    run_id: int
    submission_id: int
    login: str
    assignment: str
    status: str
    attempts: int
    error: str | None
    grader_errors: list[str] | None
    finished_at: datetime | None


class Health(BaseModel):
    ok: bool
    database: str
    queue: dict[str, int]
    broker: str


class ExtensionIn(BaseModel):
    login: str = Field(max_length=64)
    deadline: datetime | None = Field(default=None, description="the student's new deadline, with its UTC offset")
    late_days: int | None = Field(default=None, ge=1, le=365, description="or: the course deadline moved by N days")
    reason: str = Field(min_length=1, max_length=2000)


class ExtensionOut(BaseModel):
    login: str
    assignment: str
    deadline: datetime | None = Field(description="the student's deadline now")
    late_days: int | None
    reason: str
    by: str
    at: datetime
    submissions_recounted: bool = True


class OverrideIn(BaseModel):
    login: str = Field(max_length=64)
    score: float | None = Field(description="the score to use; null withdraws the override")
    function: str = Field(default="", max_length=200, description="only this function's tests (empty: the assignment)")
    reason: str = Field(min_length=1, max_length=2000)


class OverrideOut(BaseModel):
    login: str
    assignment: str
    function: str
    score: float | None
    graded_score: float | None = Field(description="the graded final score, kept beside the override")
    final_score: float | None
    reason: str
    by: str
    at: datetime


class FlagOut(BaseModel):
    submission_id: int
    login: str
    score: float | None
    flags: list[dict]
    reviewed: bool
    reviews: list[dict]


class ReviewIn(BaseModel):
    action: str = Field(pattern="^(cleared|zeroed|note)$")
    function: str = Field(default="", max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


class ReleaseIn(BaseModel):
    released: bool
    reason: str = Field(default="", max_length=2000)


class HistoryEvent(BaseModel):
    at: datetime
    kind: str
    what: str
    by: str
    reason: str
