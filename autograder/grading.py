"""Grade submissions: intake, one judge process per submission, results.

The engine's public entry point, used by the CLI and the server:
`grade(assignment, path)` returns a `SubmissionResult` whatever the file holds; a
submission that cannot be read, a judge that crashes or runs out of time all end as
a result with `error` set, never as an exception.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograder import __version__, scoring, settings
from autograder.assignment import Assignment
from autograder.authoring.notebook import extract_bounded
from autograder.judge.job import GradingJob
from autograder.judge.results import SubmissionResult
from autograder.sandbox import forkserver, judge_zygote

JUDGE_GRACE_SECONDS = 120.0
OVERLOAD_ATTEMPTS = 3  # a run that hit the wall backstop on an overloaded host is graded again
OVERLOAD_PAUSE_SECONDS = 10.0
SUBMISSION_SUFFIXES = (".ipynb", ".py")


def pick_device(a: Assignment, requested: str | None = None) -> tuple[str, str | None]:
    """(device, problem): the device to grade on, and why grading cannot go ahead, if so."""
    import torch

    cuda = torch.cuda.is_available()
    if requested and requested != "auto":
        if requested.startswith("cuda") and not cuda:
            return "cpu", "a GPU was requested but none is available here"
        return requested, None
    if a.gpu == "none" or not cuda:
        if a.gpu == "required" and not cuda:
            return "cpu", f"{a.slug} needs a GPU and none is available here"
        return "cpu", None
    return "cuda", None


def find_submissions(paths: list[str | Path]) -> list[Path]:
    """Files named directly, and the notebooks and .py files inside folders named."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix in SUBMISSION_SUFFIXES and q.is_file()
                          and ".ipynb_checkpoints" not in q.parts and not q.name.startswith("."))
        else:
            out.append(p)
    return out


def grade(a: Assignment, path: str | Path, *, suite: str = "hidden", device: str | None = None,
          force_weak: bool = False, label: str | None = None, source_path: Path | None = None,
          keyword: str | None = None, runner: str | None = None, flags_cleared: bool = False) -> SubmissionResult:
    """Grade one submission file against `suite` ("hidden": everything, "public").
    `runner`: local or docker (None: the engine's setting, DLOPT_RUNNER). `flags_cleared`:
    a TA cleared this submission's flags, so its boards are timed despite them.
    Never raises: whatever goes wrong ends as the result's `error`."""
    started = time.perf_counter()
    try:
        for attempt in range(1, OVERLOAD_ATTEMPTS + 1):
            result = _grade(a, Path(path), suite=suite, device=device, force_weak=force_weak, label=label,
                            source_path=source_path, keyword=keyword, runner=runner, flags_cleared=flags_cleared)
            if attempt > 1:
                # Each regrade after a starved run is on the record (at most OVERLOAD_ATTEMPTS).
                result.sandbox["overload_retries"] = attempt - 1
            if result.error != scoring.OVERLOADED or attempt == OVERLOAD_ATTEMPTS:
                break
            time.sleep(OVERLOAD_PAUSE_SECONDS * attempt)  # let the load pass, then grade again
    except Exception as e:  # noqa: BLE001  (a batch never loses a file to an engine failure)
        import traceback

        result = SubmissionResult(assignment=a.slug, submission=label or str(path), engine_version=__version__,
                                  suite=suite)
        result.error = "the grader failed on this submission (staff have been told)"
        result.grader_errors.append("".join(traceback.format_exception(e))[-3000:])
    result.duration = round(time.perf_counter() - started, 3)
    return result


def _run_judge(cmd: list[str], env: dict, timeout: float, tmp: Path) -> tuple[int | None, str, str]:
    """Run a judge in a session of its own; on timeout kill its whole process group (its
    sandboxes die with it). Returns (exit code or None on timeout, stdout, stderr).
    The judge is a fork of this process's zygote (torch, pytest and the engine already
    imported: autograder/sandbox/judge_zygote.py) when there is one, else a new interpreter."""
    if settings.current().zygote and cmd[:2] == [sys.executable, "-m"]:
        for _ in range(2):
            out, err = tmp / "judge.stdout", tmp / "judge.stderr"
            try:
                code = judge_zygote.run(cmd[2:], env, os.getcwd(), str(out), str(err), timeout)
            except forkserver.ServerLost:
                continue  # a zygote that ended is started again once, then the slow path
            return code, _read_text(out), _read_text(err)
    return _spawn_judge(cmd, env, timeout)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _spawn_judge(cmd: list[str], env: dict, timeout: float) -> tuple[int | None, str, str]:
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        return None, "", ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the judge and anything it left behind
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


def _grade(a: Assignment, path: Path, *, suite: str, device: str | None, force_weak: bool, label: str | None,
           source_path: Path | None, keyword: str | None, runner: str | None,
           flags_cleared: bool = False) -> SubmissionResult:
    result = SubmissionResult(assignment=a.slug, submission=label or str(path), engine_version=__version__,
                              suite=suite)
    config = settings.current()
    dev, problem = pick_device(a, device)
    if problem:
        result.error = problem
        return result
    extracted = extract_bounded(source_path or path, a.extraction)
    with tempfile.TemporaryDirectory(prefix="dlopt-judge-") as tmp:
        tmp = Path(tmp)
        # The judge's sandboxes stage their files under this folder, so they go with it
        # whatever way the judge ends (even SIGKILL). 0711: a dropped uid may pass, not list.
        os.chmod(tmp, 0o711)
        (tmp / "scratch").mkdir(mode=0o711)
        os.chmod(tmp / "scratch", 0o711)
        job = GradingJob.build(a, extracted.as_dict(), label=result.submission, out=str(tmp / "result.json"),
                               device=dev, suite=suite, runner=runner or config.runner, weak=force_weak,
                               keyword=keyword, flags_cleared=flags_cleared)
        (tmp / "job.json").write_text(job.dumps())
        # Small tensors: one thread each keeps parallel judges and their children from
        # oversubscribing the cores (OpenMP spin-waits made a 2-job run 4x slower).
        env = settings.environment(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONDONTWRITEBYTECODE="1",
                                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(tmp / "scratch"),
                                   DLOPT_SHARED_TMP=str(config.shared_tmp))
        timeout = a.limits.submission_seconds * a.limits.wall_factor + JUDGE_GRACE_SECONDS
        code, stdout, stderr = _run_judge([sys.executable, "-m", "autograder.judge.run", str(tmp / "job.json")],
                                          env, timeout, tmp)
        out = tmp / "result.json"
        if code is None:
            result.error = f"grading did not finish within {timeout:.0f} s"
            result.grader_errors.append("judge timeout")
        elif code == 0 and out.exists():
            result = SubmissionResult.from_dict(json.loads(out.read_text()))
        else:
            result.error = "the grader failed on this submission (staff have been told)"
            result.grader_errors.append(f"judge exit {code}: {stderr[-3000:]}{stdout[-2000:]}")
    if extracted.fatal:
        result.error = f"your submission could not be read: {extracted.fatal}"
    return result
