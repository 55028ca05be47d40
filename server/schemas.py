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
    deadline: datetime | None
    late_policy: dict
    daily_submission_limit: int | None
    score_policy: str
    feedback_after_deadline: bool
    closed: bool = Field(description="past the last day a late submission is accepted")
    submissions_today: int = Field(description="the caller's own uploads today (the daily limit's count)")


class TestOut(BaseModel):
    name: str
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


class RegradeOut(BaseModel):
    runs: list[int]


class ScoreRow(BaseModel):
    login: str
    name: str
    score: float | None
    max_score: float
    submission_id: int | None
    late: bool
    days_late: int
    submissions: int
    pending: int = Field(description="submissions not yet graded")


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
