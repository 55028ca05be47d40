"""No new program starts inside the sandbox (issue 25, child/execlock.py).

The red team scored 100 by running torch's optimizers and autograd in a second Python
started inside the sandbox, where the child's guard was never installed. Every way of
starting one is tried here from inside a real child, through each runner this machine
has: each must fail, while `fork` (the ring's ranks) keeps working. A started program
would exit with 42; nothing may.
"""

from __future__ import annotations

import os

import pytest

from autograder.judge.student import StudentCode
from autograder.sandbox import Limits

from sandbox_marks import needs_bwrap

PROBE = r'''
import os, sys

ARGS = [sys.executable, "-c", "import sys; sys.exit(42)"]


def _in_fork(fn):
    """Run fn in a fork; its exit status: 42 when a new program ran, 3 when refused."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        except BaseException:
            os._exit(3)
        os._exit(4)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def attempt(kind):
    try:
        if kind == "subprocess":
            import subprocess
            return str(subprocess.run(ARGS).returncode)
        if kind == "posix_spawn":
            pid = os.posix_spawn(sys.executable, ARGS, dict(os.environ))
            return str(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        if kind in ("spawn", "forkserver"):
            import multiprocessing as mp
            p = mp.get_context(kind).Process(target=os.getpid)
            p.start()
            p.join(30)
            return "started" if p.exitcode == 0 else f"exit {p.exitcode}"
        if kind == "fork_exec":
            return str(_in_fork(lambda: os.execv(sys.executable, ARGS)))
        if kind == "ctypes_execve":
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            def go():
                argv = (ctypes.c_char_p * 4)(*[a.encode() for a in ARGS], None)
                libc.execve(sys.executable.encode(), argv, None)
                raise OSError(ctypes.get_errno(), "execve")
            return str(_in_fork(go))
        if kind == "ld_so":
            import glob
            loader = (glob.glob("/lib64/ld-linux-*.so.*") + glob.glob("/lib/ld-linux-*.so.*"))[0]
            return str(_in_fork(lambda: os.execv(loader, [loader, *ARGS])))
        if kind == "pty_spawn":
            import pty
            return str(os.waitstatus_to_exitcode(pty.spawn(ARGS)))
        if kind == "shebang":
            import tempfile
            path = os.path.join(tempfile.gettempdir(), "run.sh")
            with open(path, "w") as f:
                f.write(f"#!{sys.executable}\nimport sys\nsys.exit(42)\n")
            os.chmod(path, 0o755)
            return str(_in_fork(lambda: os.execv(path, [path])))
        if kind == "system":
            return str(os.waitstatus_to_exitcode(os.system(" ".join(ARGS[:1]) + " -c 'raise SystemExit(42)'")))
        if kind == "fork":
            return str(os.waitstatus_to_exitcode(os.waitpid(_fork_zero(), 0)[1]))
    except BaseException as e:
        return f"refused: {type(e).__name__}: {e}"
    return "?"


def _fork_zero():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid
'''

ATTACKS = ["subprocess", "posix_spawn", "spawn", "forkserver", "fork_exec", "ctypes_execve", "ld_so",
           "pty_spawn", "shebang", "system"]


def _outcomes(**kw) -> dict[str, str]:
    code = StudentCode(PROBE, Limits(call_seconds=30, submission_seconds=120), **kw)
    try:
        out = {kind: code.call("attempt", kind).value for kind in [*ATTACKS, "fork"]}
        out["lock"] = code.sandbox.get("exec_lock")
        return out
    finally:
        code.close()


def _check(out: dict[str, str]) -> None:
    started = {k: v for k, v in out.items() if k in ATTACKS and (v in ("42", "started") or v == "0")}
    assert not started, f"a new program started inside the sandbox: {started}"
    assert out["fork"] == "0", f"fork must keep working (the ring's ranks): {out['fork']}"
    assert out["lock"] == "seccomp", out["lock"]


@needs_bwrap
def test_no_new_program_in_the_strong_sandbox():
    _check(_outcomes())


@needs_bwrap
def test_no_new_program_under_bubblewrap_without_the_zygote(monkeypatch):
    monkeypatch.setenv("DLOPT_ZYGOTE", "0")
    _check(_outcomes())


def test_no_new_program_in_the_weak_sandbox():
    """The weak sandbox (rlimits only) still asks the kernel to refuse execve."""
    _check(_outcomes(force_weak=True))


def test_the_exec_filter_refuses_only_execve_and_execveat():
    """The BPF program: a foreign architecture, execve and execveat fail; the rest passes."""
    from autograder.child import execlock

    prog = execlock.exec_filter("x86_64")
    assert prog is not None and len(prog) % 8 == 0
    assert execlock.exec_filter("sparc") is None
    # Run it for real in a fork: os.getpid works, execv does not.
    pid = os.fork()
    if pid == 0:
        try:
            execlock.lock(None)
            os.getpid()
            try:
                os.execv("/bin/true", ["/bin/true"])
            except PermissionError:
                os._exit(7)
            os._exit(1)
        except BaseException:
            os._exit(2)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7


@pytest.mark.skipif(not __import__("autograder.child.execlock", fromlist=["x"]).landlock_abi(),
                    reason="this kernel has no Landlock (the GPU path's execute allow-list needs it)")
def test_the_gpu_allow_list_runs_only_what_it_lists(tmp_path):
    """The GPU path: Landlock lets listed programs run (here a static-free shebang is not
    listed) and refuses the rest."""
    from autograder.child import execlock

    script = tmp_path / "listed.sh"
    script.write_text("#!/bin/sh\nexit 5\n")
    script.chmod(0o755)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.sh").write_text("#!/bin/sh\nexit 6\n")
    (other / "x.sh").chmod(0o755)
    pid = os.fork()
    if pid == 0:
        import subprocess
        try:
            allow = [str(script), os.path.realpath("/bin/sh"), *execlock.gpu_programs()]
            execlock.lock(allow)
            a = subprocess.run([str(script)]).returncode
            try:
                subprocess.run([str(other / "x.sh")])
                b = 0
            except PermissionError:
                b = 1
            os._exit(10 * (a == 5) + b)
        except BaseException:
            os._exit(99)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 11


def test_a_starved_call_is_told_from_the_childs_own_accounts():
    """Overload is judged from the child's run-queue time and CPU use, never the host's
    load average: a child that waited for a CPU most of the call while using less than
    one CPU was starved; one whose own processes kept the CPUs busy, or that slept, was not."""
    starved = StudentCode.starved
    assert starved(wall=100, cpu=5, run_queue=80)
    assert not starved(wall=100, cpu=190, run_queue=80)   # its own 40 busy processes
    assert not starved(wall=100, cpu=0.1, run_queue=0.5)  # asleep (blocked in D state, say)
    assert not starved(wall=100, cpu=5, run_queue=None)   # no schedstat: never blamed on the host


def test_no_new_program_through_each_runner(runner):
    """The same attempts through the local runner and the docker runner (a container per
    child, Podman's API here): the lock is the child's own, whatever started it."""
    if runner == "local":
        needs_bwrap_here()
    _check(_outcomes())


@pytest.mark.parametrize("slug,example,score", [
    ("adam", "hostile_second_interpreter.py", 56.0),
    ("adam", "hostile_library_rerun.py", 56.0),
    ("backprop", "hostile_second_interpreter.py", 80.0),
])
def test_the_red_teams_second_interpreters_score_as_forbidden(runner, slug, example, score):
    """issue 25's attacks, graded through the real path and both runners: torch's routines
    in a second Python, or torch's source run again, earn what using them openly earns."""
    from pathlib import Path

    from autograder import assignment as assignments
    from autograder.grading import grade

    if runner == "local":
        needs_bwrap_here()
    repo = Path(__file__).resolve().parents[1]
    r = grade(assignments.load(slug), repo / "assignments" / slug / "examples" / example)
    assert r.error is None and not r.grader_errors, (r.error, r.grader_errors)
    assert abs(r.score - score) < 1e-6, (r.score, [(t.name, t.feedback[:120]) for t in r.tests if t.points < t.max_points])


def needs_bwrap_here():
    from autograder.sandbox.local import bwrap_path

    if bwrap_path() is None:
        pytest.skip("bubblewrap is missing or cannot create namespaces here: the local runner is weak")


@pytest.mark.skipif(not __import__("autograder.child.execlock", fromlist=["x"]).landlock_abi(),
                    reason="this kernel has no Landlock (the ring's ranks are confined with it)")
def test_a_confined_rank_writes_no_file_and_reads_none_in_the_shared_tmp(tmp_path):
    """What each ring rank does once its process group is up: no file written anywhere,
    none read beneath the shared folders, while its own Python keeps working."""
    from autograder.child import execlock

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from_another_rank").write_text("chunk")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            execlock.confine_files([str(shared)])
            for i, attempt in enumerate([lambda: (shared / "mine").write_text("x"),
                                         lambda: (shared / "from_another_rank").read_text(),
                                         lambda: (tmp_path / "elsewhere").write_text("x")]):
                try:
                    attempt()
                    code |= 1 << i
                except PermissionError:
                    pass
            import json  # noqa: F401  (a module not imported yet: the installation stays readable)
            os._exit(code)
        except BaseException:
            os._exit(99)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


RERUN = r'''
import sys


def attempt(kind):
    path = sys.modules["torch.optim.adam"].__file__
    try:
        if kind == "open":
            return str(len(open(path).read()))
        if kind == "runpy":
            import runpy
            return str(len(runpy.run_path(path)))
        if kind == "spec_from_file_location":
            import importlib.util
            spec = importlib.util.spec_from_file_location("adam_again", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return str(hasattr(mod, "Adam"))
        if kind == "inspect":
            import inspect
            return str(len(inspect.getsource(sys.modules["torch.optim.adam"])))
        if kind == "linecache":
            import linecache
            return str(len(linecache.getlines(path)))
        if kind == "compile":
            import types
            code = compile(open(path).read(), path, "exec")
            ns = {"__name__": "x", "__package__": "torch.optim"}
            types.FunctionType(code, ns)()
            return str("Adam" in ns)
        if kind == "loader":
            return str(len(sys.modules["torch.optim.adam"].__loader__.get_source("torch.optim.adam") or ""))
        if kind == "pyc":
            import importlib.util
            return str(len(open(importlib.util.cache_from_source(path), "rb").read()))
        if kind == "allowed":
            return str(len(open(sys.modules["torch.optim.optimizer"].__file__).read()) > 0)
    except BaseException as e:
        return f"refused: {type(e).__name__}"
'''


@pytest.mark.skipif(not __import__("autograder.child.execlock", fromlist=["x"]).landlock_abi(),
                    reason="this kernel has no Landlock (the forbidden modules' files are hidden with it)")
def test_the_forbidden_modules_source_cannot_be_read_or_run_again():
    """adam's guard neuters torch.optim.adam's objects; running its file again would make new
    ones. Every way of reading it fails; other torch files stay readable (linecache, which
    swallows the error, gives nothing)."""
    guard = {"patterns": ["torch.optim.Adam", "torch.optim.adam"], "block_autograd": False}
    code = StudentCode(RERUN, Limits(call_seconds=30, submission_seconds=120), guard=guard)
    try:
        out = {k: code.call("attempt", k).value for k in
               ("open", "runpy", "spec_from_file_location", "inspect", "linecache", "compile", "loader", "pyc",
                "allowed")}
    finally:
        code.close()
    assert out.pop("allowed") == "True", out
    assert out.pop("linecache") == "0", out
    assert all(v.startswith("refused") for v in out.values()), out


@pytest.mark.parametrize("slug,example,score", [
    ("attention", "hostile_page_cache_reply.py", 88.0),
    ("ring_allreduce", "hostile_files_plus_junk.py", 7.833334),
    ("sgd_sampling", "hostile_terminal_escapes.py", 83.0),
    ("adam", "hostile_sleeps.py", 3.0),
])
def test_issue_25s_other_attacks_through_the_docker_runner(docker_engine, monkeypatch, slug, example, score):
    """`dlopt check` grades every example through the local runner; these attacks go through
    the docker runner too (a container per child): a transport the judge did not offer, ranks
    that swap data through files, escape sequences in feedback, a child that sleeps."""
    from pathlib import Path

    from autograder import assignment as assignments
    from autograder.grading import grade

    for k, v in docker_engine.items():
        monkeypatch.setenv(k, v)
    repo = Path(__file__).resolve().parents[1]
    r = grade(assignments.load(slug), repo / "assignments" / slug / "examples" / example)
    assert r.error is None and not r.grader_errors, (r.error, r.grader_errors)
    assert abs(r.score - score) < 1e-6, (r.score, [(t.name, t.feedback[:160]) for t in r.tests if t.points < t.max_points])
