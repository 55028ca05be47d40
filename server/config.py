"""Settings, from the environment (prefix `DLOPT_`) or a `.env` file; nothing is required.

With nothing set the server runs on a fresh machine: SQLite and the submissions store in
`./dlopt-data`, the assignments of this repository, the embedded worker pool.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from autograder.assignment import ASSIGNMENTS_DIR


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DLOPT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("dlopt-data"), description="SQLite database, storage and the first admin token")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir")
    storage_dir: Path | None = Field(None, description="uploaded files by content hash; default: data_dir/store")
    broker_url: str | None = Field(None, description="Celery broker (redis://...); none: the embedded worker pool")
    assignments_dir: Path = ASSIGNMENTS_DIR
    include_unfinished: bool = Field(False, description="serve assignments not marked finished")

    workers: int = Field(2, ge=0, description="embedded pool size (0: enqueue only)")
    max_attempts: int = Field(3, ge=1, description="a run that kills its worker this often is failed")
    lease_seconds: float = Field(120.0, gt=0, description="a running job not heartbeating this long is retried")
    poll_seconds: float = Field(1.0, gt=0)
    max_queued_per_student: int = Field(5, ge=1, description="a student's uploads waiting to be graded (all "
                                        "assignments); one more is refused with 429 (TA batches and regrades "
                                        "are not counted or refused)")
    gpu_queue_for: tuple[str, ...] = Field(("required",), description="assignment gpu modes sent to the gpu queue")
    runner: Literal["local", "docker"] = Field("local", description="the sandbox runner the workers use")
    grade_function: str = Field("autograder.grading:grade",
                                description="module:function called to grade; a seam for tests and benchmarks")

    max_upload_bytes: int = Field(5 * 1024 * 1024, description="largest notebook accepted")
    max_batch_bytes: int = Field(200 * 1024 * 1024, description="largest batch zip accepted")
    max_batch_files: int = Field(2000)
    max_batch_uncompressed_bytes: int = Field(1024 * 1024 * 1024)
    max_compression_ratio: float = Field(200.0, description="a zip entry inflating more than this is refused")
    max_cells: int = Field(10_000, description="a notebook with more cells is refused before it is validated")
    anonymous_body_bytes: int = Field(64 * 1024, description="largest request body from someone not signed in")
    cookie_secure: bool | Literal["auto"] = Field(
        "auto", description="the session cookie's Secure flag: auto sets it whenever the request came over HTTPS "
                            "(behind a proxy, run uvicorn with --proxy-headers); true always, false never")
    public_url: str | None = Field(None, description="the address students open (https://dlopt.example.edu): forms "
                                                     "must come from it; default: the request's Host")
    session_hours: float = Field(72.0, gt=0, description="a browser session ends this long after signing in")
    max_failed_sign_ins: int = Field(10, ge=1, description="failed sign-ins per address (or account) in the window "
                                                           "before the sign-in form refuses it")
    failed_sign_in_minutes: float = Field(15.0, gt=0, description="the window of max_failed_sign_ins")

    @cached_property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'dlopt.sqlite3').resolve()}"

    @cached_property
    def store(self) -> Path:
        return (self.storage_dir or self.data_dir / "store").resolve()
