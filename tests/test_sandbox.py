"""Every sandbox limit, each exercised by real student code in a real child process."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import torch

from autograder.judge.student import StudentCode, StudentCrash, StudentError, StudentTimeout
from autograder.sandbox import Limits

from sandbox_marks import needs_bwrap

REPO = Path(__file__).resolve().parents[1]

PROBES = '''
import os, socket, sys, time
import torch

def ok(x):
    return x + 1

def spin():
    while True:
        pass

def sleep_forever():
    time.sleep(10**6)

def hog_memory():
    chunks = []
    while True:
        chunks.append(bytearray(512 << 20))

def hog_torch_memory():
    return torch.empty(64 << 30, dtype=torch.uint8).sum()

def fork_bomb():
    while True:
        try:
            os.fork()
        except OSError:
            pass

def connect(host, port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as e:
        return "refused: " + type(e).__name__
    finally:
        s.close()

def resolve(name):
    try:
        return socket.getaddrinfo(name, 443)[0][4][0]
    except OSError as e:
        return "unresolved: " + type(e).__name__

def read(path):
    try:
        with open(path) as f:
            return "READ: " + f.read(200)
    except OSError as e:
        return "denied: " + type(e).__name__

def write(path):
    try:
        with open(path, "w") as f:
            f.write("pwned")
        return "WROTE"
    except OSError as e:
        return "denied: " + type(e).__name__

def environment():
    return dict(os.environ)

def identity():
    return [os.getuid(), os.getgid(), os.getcwd()]

def kill_parent():
    import signal
    for target in (os.getppid(), 1):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass
    return "still here"

def exit_hard():
    os._exit(0)

def exit_soft():
    sys.exit(3)
'''


@pytest.fixture(params=["zygote", "bwrap"])
def child(request, monkeypatch):
    # Both ways a strong child starts: a fork of the child zygote that builds its own
    # namespaces (the default), and a new interpreter under bubblewrap (DLOPT_ZYGOTE=0).
    monkeypatch.setenv("DLOPT_ZYGOTE", "1" if request.param == "zygote" else "0")
    code = StudentCode(PROBES, Limits(call_seconds=4, submission_seconds=120, memory_mb=3072, processes=64,
                                      wall_factor=2.0))
    code.start_mode = request.param
    yield code
    code.close()


def test_a_normal_call_works_and_reports_the_sandbox(child):
    assert torch.equal(child.call("ok", torch.ones(3)).value, torch.full((3,), 2.0))
    if child.sandbox["kind"] == "bubblewrap":
        assert child.sandbox["strong"] is True
        # The way this run asked for is the way the child started (never a silent fallback).
        assert child.sandbox.get("zygote") == ("child zygote" if child.start_mode == "zygote" else None)


def test_time_limit_per_call_and_recovery(child):
    # Spinning: stopped at 4 s of CPU time (the message says which limit stopped it; on a
    # loaded 2-core machine 4 s of CPU take longer than 4 s, so the wall bound is only
    # "before the backstop"). Sleeping: at the wall backstop (2 x 4 + 10 s).
    for fn, match, most in (("spin", "4 s of CPU time", 18), ("sleep_forever", "waiting, not computing", 25)):
        started = time.monotonic()
        with pytest.raises(StudentTimeout, match=match):
            child.call(fn)
        assert time.monotonic() - started < most
    assert child.call("ok", 1).value == 2  # a fresh child answers the next call


def test_memory_limit(child):
    for fn in ("hog_memory", "hog_torch_memory"):
        with pytest.raises((StudentError, StudentCrash)) as info:
            child.call(fn, timeout=30)
        assert "Memory" in str(info.value) or "memory" in str(info.value) or "alloc" in str(info.value)
    assert child.call("ok", 1).value == 2


def test_fork_bomb_is_contained_and_leaves_no_process(child):
    child.call("ok", 1)
    uid = child.handle.uid
    with pytest.raises((StudentTimeout, StudentCrash, StudentError)):
        child.call("fork_bomb")
    child.close()
    if uid is None:
        pytest.skip("the child kept the grader's uid here: its processes cannot be told apart")
    # None of the sandbox uid's processes may survive (other sandboxes have other uids).
    for _ in range(20):
        ps = subprocess.run(["ps", "-eo", "uid=,pid=,comm="], capture_output=True, text=True).stdout
        left = [ln for ln in ps.splitlines() if int(ln.split()[0]) == uid]
        if not left:
            break
        time.sleep(0.25)
    assert not left, left


@needs_bwrap
def test_no_network(child):
    assert child.call("connect", "127.0.0.1", 5432).value.startswith("refused")
    assert child.call("connect", "1.1.1.1", 443).value.startswith("refused")
    assert child.call("resolve", "pypi.org").value.startswith("unresolved")


@needs_bwrap
def test_hidden_suite_master_and_references_are_unreadable(child):
    for path in [REPO / "assignments/adam/tests/test_hidden.py", REPO / "assignments/adam/adam.ipynb",
                 REPO / "reference/adam.py", REPO / "autograder/judge/plugin.py", Path.home() / ".bashrc"]:
        assert child.call("read", str(path)).value.startswith("denied"), path


@needs_bwrap
def test_writes_stay_inside_the_sandbox(child):
    marker = f"/tmp/dlopt-escape-{uuid.uuid4().hex}"
    assert child.call("write", marker).value == "WROTE"  # its private /tmp
    assert not Path(marker).exists()
    for path in [REPO / "pwned.txt", REPO / "assignments/adam/tests/test_hidden.py", Path("/etc/pwned")]:
        before = path.read_bytes() if path.exists() else None
        assert child.call("write", str(path)).value.startswith("denied")
        assert (path.read_bytes() if path.exists() else None) == before


def test_clean_environment_and_unprivileged_identity(child, monkeypatch):
    monkeypatch.setenv("DLOPT_SECRET_TOKEN", "s3cret")
    child.close()
    env = child.call("environment").value
    assert "DLOPT_SECRET_TOKEN" not in env
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "USER", "LOGNAME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PWD",
                        "PYTHONDONTWRITEBYTECODE", "TRITON_CACHE_DIR", "TRITON_INTERPRET", "LC_CTYPE"}
    uid, gid, cwd = child.call("identity").value
    if os.getuid() == 0:
        assert uid != 0 and gid != 0


@needs_bwrap
def test_killing_the_parent_or_exiting_hurts_only_the_student(child):
    # In its PID namespace the parent is the namespace's init, which it may not signal.
    assert child.call("kill_parent").value == "still here"
    with pytest.raises(StudentCrash, match="exited with code 0"):
        child.call("exit_hard")
    with pytest.raises(StudentError, match="SystemExit"):
        child.call("exit_soft")
    assert child.call("ok", 41).value == 42


def test_weak_sandbox_still_limits_time_and_environment(monkeypatch):
    monkeypatch.setenv("DLOPT_SECRET_TOKEN", "s3cret")
    code = StudentCode(PROBES, Limits(call_seconds=3), force_weak=True)
    try:
        assert code.sandbox["strong"] is False
        assert "DLOPT_SECRET_TOKEN" not in code.call("environment").value
        with pytest.raises(StudentTimeout):
            code.call("spin")
        assert code.call("ok", 1).value == 2
    finally:
        code.close()


SHM_PROBE = '''
import os

def shm_and_sys():
    try:
        with open("/dev/shm/probe", "wb") as f:
            f.write(b"x")
        shm = "writable"
    except OSError as e:
        shm = type(e).__name__
    sys_visible = os.path.isdir("/sys/class")
    try:
        open("/sys/kernel/mm/transparent_hugepage/enabled", "w").close()
        sys_write = "writable"
    except OSError as e:
        sys_write = type(e).__name__
    return [shm, sys_visible, sys_write, os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")]
'''


@needs_bwrap
@pytest.mark.parametrize("gpu", [False, True])
def test_gpu_sandboxes_get_a_private_shm_and_a_read_only_sys(gpu):
    # NCCL (the ring assignment's ranks on GPUs) needs /dev/shm and reads the PCI topology
    # from /sys; a GPU child checks CUDA through NVML so that it may still fork NCCL ranks.
    # A GPU-flagged sandbox runs here on the CPU: only what it mounts is checked.
    code = StudentCode(SHM_PROBE, Limits(call_seconds=10, submission_seconds=60), gpu=gpu,
                       device="cuda" if gpu else "cpu")
    try:
        shm, sys_visible, sys_write, nvml = code.call("shm_and_sys").value
    finally:
        code.close()
    if gpu:
        assert (shm, sys_visible, nvml) == ("writable", True, "1")
        assert sys_write != "writable"
    else:
        assert shm != "writable" and not sys_visible and nvml is None


def test_a_child_that_dies_loading_the_code_is_not_started_over_and_over():
    """os._exit in a class body kills every child at import: after two such starts in a row
    the judge stops starting new ones (each costs a container on the docker runner), and
    every later call fails at once with the same reason."""
    code = StudentCode(source="import os\nclass Quit:\n    os._exit(3)\ndef f(x):\n    return x\n",
                       limits=Limits(call_seconds=10, submission_seconds=60))
    try:
        for _ in range(5):
            with pytest.raises(StudentCrash, match="exited with code 3"):
                code.call("f", 1)
        assert code.restarts == 2
    finally:
        code.close()


def test_a_gpu_job_whose_sandbox_sees_no_gpu_is_a_grader_error(monkeypatch):
    """Where the judge's host has a GPU but the runner did not pass it (a container engine
    that dropped the device request), student code must not run on the CPU unnoticed: the
    load fails as a grader error. On a host without one (here, or the CPU tests of GPU
    sandboxes) the child runs on the CPU as before."""
    import autograder.judge.student as student_mod

    source = "def probe():\n    return 1\n"
    monkeypatch.setattr(student_mod, "_judge_sees_a_gpu", lambda: True)
    code = StudentCode(source, Limits(call_seconds=10, submission_seconds=60), device="cuda")
    try:
        with pytest.raises(RuntimeError, match="the sandbox has no GPU"):
            code.call("probe")
    finally:
        code.close()
    monkeypatch.setattr(student_mod, "_judge_sees_a_gpu", lambda: False)
    code = StudentCode(source, Limits(call_seconds=10, submission_seconds=60), device="cuda")
    try:
        assert code.call("probe").value == 1
    finally:
        code.close()
