"""The judge zygote: Python, torch, pytest and the engine imported once per grading process.

A judge used to be a new interpreter per submission: 2.3 s to import torch, pytest
and the engine, and 1.8 s more for `torch._dynamo`, which `torch.optim` imports on
its first step. The zygote imports all of that once; each submission's judge is a
fresh fork of it (`autograder/sandbox/forkserver.py`) that has run nothing else: no other
submission's judge shares its memory, pytest's state or the suite's modules (the
judge imports the suite itself, after the fork). The zygote runs no student code:
the student's child is a process of its own in a sandbox of its own
(autograder/sandbox), and inherits nothing of the judge.

`autograder.grading` uses one per grading process; DLOPT_ZYGOTE=0 starts a new
interpreter per judge instead.
"""

from __future__ import annotations

import os
import sys

from autograder import settings
from autograder.sandbox import forkserver, local

# Imported before any fork: what every judge would otherwise import for itself.
PRELOAD = ("torch", "torch.optim", "torch._dynamo", "torch.nn.functional", "torch.autograd.functional",
           "numpy", "pytest", "_pytest.python", "_pytest.terminal", "_pytest.fixtures",
           "autograder.judge.run", "autograder.judge.plugin", "autograder.judge.student",
           "autograder.judge.compare", "autograder.judge.suite", "autograder.judge.forbidden",
           "autograder.judge.results", "autograder.sandbox", "autograder.protocol", "autograder.assignment")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def preload() -> list[str]:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  (a module this machine lacks: a judge imports what it needs)
            pass
    import torch

    if torch.cuda.is_initialized():  # a fork would inherit a CUDA context it cannot use
        raise RuntimeError("CUDA was initialised while preloading")
    return forkserver.loaded_files(REPO)


def become_judge(req: dict, fds: list[int]) -> None:
    """In the fork: become a judge as `python -m autograder.judge.run JOB` would be, run, exit."""

    def body() -> None:
        os.setsid()  # the client kills the judge's process group on timeout
        out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        forkserver.redirect_output(out, err)
        os.close(out)
        os.close(err)
        settings.become(req["env"])
        os.chdir(req["cwd"])
        import tempfile

        tempfile.tempdir = None  # TMPDIR is this judge's own
        forkserver.reseed()
        sys.argv = [str(a) for a in req["argv"]]
        import runpy

        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)

    forkserver.run_then_exit(body)


_SHARED = forkserver.Shared(lambda env: forkserver.Client(
    [sys.executable, "-m", "autograder.sandbox.judge_zygote"], env, "dlopt-zygote-"))


def run(argv: list[str], env: dict, cwd: str, stdout: str, stderr: str, timeout: float) -> int | None:
    """Run one judge from this process's zygote: its exit code, or None past `timeout`
    (killed). Raises forkserver.ServerLost when no zygote could run it."""
    client = _SHARED.get("judge", env)
    fork = client.start({"argv": argv, "env": env, "cwd": cwd, "stdout": stdout, "stderr": stderr})
    try:
        code = fork.wait(timeout)
        if code is None:
            fork.kill()
            return None
        if fork.lost:
            raise forkserver.ServerLost("the judge zygote ended while a judge ran")
        return code
    finally:
        fork.close()


def child_zygote(req: dict) -> dict:
    """The socket of the child zygote for a child environment: started by this zygote on
    first use and shared by all its judges (a judge that started its own would pay the
    start for every submission)."""
    env = {str(k): str(v) for k, v in dict(req.get("env") or {}).items()}
    return {"path": local.own_child_zygote(env).path}


def container_pool(req: dict) -> dict:
    """The socket of the docker runner's container pool for an environment (sandbox/pool.py):
    started by this zygote on first use and shared by all its judges."""
    env = {str(k): str(v) for k, v in dict(req.get("env") or {}).items()}
    return {"path": _POOLS.get(tuple(sorted(env.items())), env).path}


_POOLS = forkserver.Shared(lambda env: forkserver.Client(
    [sys.executable, "-m", "autograder.sandbox.pool"], dict(env, PYTHONPATH=REPO), "dlopt-cpool-"))


def main() -> None:
    files = preload()
    path = sys.argv[1]

    def judge(req: dict, fds: list[int]) -> None:
        become_judge(dict(req, env=dict(req["env"], DLOPT_JUDGE_ZYGOTE=path)), fds)

    forkserver.serve(path, judge, {"files": files}, ops={"child-zygote": child_zygote,
                                                              "container-pool": container_pool})


if __name__ == "__main__":
    main()
