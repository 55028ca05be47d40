"""The two zygotes (autograder/sandbox/judge_zygote.py, autograder/sandbox/child_zygote.py): fast starts
that change nothing a child or a judge can see, and share nothing between submissions.

The sandbox's own tests (test_sandbox.py) run every limit through both ways a child
starts; these check what is particular to a fork: fresh namespaces per child, no state
carried between children or judges, the same sandbox as bubblewrap builds, and a zygote
that ends or goes stale replaced without losing a grade.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from autograder import assignment as assignments
from autograder.grading import grade
from autograder.judge.student import StudentCode, StudentCrash
from autograder.sandbox import Limits, forkserver, judge_zygote, local

from sandbox_marks import needs_bwrap

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = ("net", "mnt", "pid", "ipc", "uts", "cgroup", "user")

PROBE = '''
import os, resource, socket, sys
import torch

def namespaces():
    return {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES}

def die(sig):
    os.kill(os.getpid(), sig)

def leave_traces(mark):
    torch.left_by_an_earlier_child = mark
    sys.modules["left_module"] = sys
    with open("/tmp/trace", "w") as f:
        f.write(mark)
    return mark

def traces():
    # (/tmp also shows the parents of a Python installed under /tmp, bound into every sandbox.)
    return [getattr(torch, "left_by_an_earlier_child", None), "left_module" in sys.modules,
            os.path.exists("/tmp/trace")]

def view():
    """What a child can observe about its sandbox (never its numbers: device ids, inodes)."""
    mounts = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            opts = set(fields[5].split(","))
            fstype = fields[fields.index("-") + 1]
            mounts.add((fields[4], "ro" if "ro" in opts else "rw", "nosuid" in opts, "nodev" in opts,
                        "noexec" in opts, fstype))
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Seccomp", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                status[key] = value.strip()
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource)
              if name.startswith("RLIMIT_")}
    listing = {d: sorted(os.listdir(d)) for d in ("/", "/dev", "/tmp", "/sandbox")}
    lo = open("/proc/net/dev").read().count("lo:")
    return {"mounts": sorted(mounts), "status": status, "limits": limits, "listing": listing,
            "ids": [os.getpid(), os.getuid() >= 61000, os.getgid() >= 61000, os.getgroups()],
            "cwd": os.getcwd(), "env": dict(os.environ), "argv": sys.argv[0], "loopback": lo,
            "hostname": socket.gethostname() == os.uname().nodename,
            "modes": {d: oct(os.stat(d).st_mode) for d in ("/", "/tmp", "/dev/shm", "/xfer", "/sandbox")}}
'''.replace("NAMESPACES", repr(NAMESPACES))

LIMITS = Limits(call_seconds=20, submission_seconds=120)


def _start(**kw) -> StudentCode:
    kw.setdefault("device", "cpu")
    code = StudentCode(PROBE, LIMITS, **kw)
    code.call("namespaces")
    return code


@needs_bwrap
def test_every_child_has_namespaces_of_its_own(monkeypatch):
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    first, second = _start(), _start()  # both alive at once: no namespace can be shared
    try:
        assert first.sandbox.get("zygote") == "child zygote"
        a, b = first.call("namespaces").value, second.call("namespaces").value
        mine = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES}
        client = next(iter(local._OWN_CHILD_ZYGOTES.clients.values()))
        zygote = {ns: os.readlink(f"/proc/{client.proc.pid}/ns/{ns}") for ns in NAMESPACES}
        for ns in NAMESPACES:
            if ns == "user" and os.getuid() == 0:
                continue  # as root the child keeps the host's user namespace and drops its uid
            assert a[ns] != b[ns], ns
            assert a[ns] != mine[ns] and a[ns] != zygote[ns], ns
    finally:
        first.close()
        second.close()


@needs_bwrap
def test_nothing_of_one_child_reaches_the_next(monkeypatch):
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    first = _start()
    try:
        assert first.call("leave_traces", "secret").value == "secret"
        assert first.call("traces").value == ["secret", True, True]
        concurrent = _start()
        try:
            assert concurrent.call("traces").value == [None, False, False]
        finally:
            concurrent.close()
    finally:
        first.close()
    later = _start()
    try:
        assert later.call("traces").value == [None, False, False]
    finally:
        later.close()


@needs_bwrap
@pytest.mark.parametrize("gpu", [False, True])
def test_a_forked_child_sees_the_sandbox_bubblewrap_builds(monkeypatch, gpu):
    # gpu=True: the GPU sandbox's mounts (a private /dev/shm, /sys read-only with every
    # mount below it, /dev/nvidia* where there are any), built here on the CPU.
    views = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("DLOPT_ZYGOTE", mode)
        code = _start(gpu=gpu, device="cuda" if gpu else "cpu")
        try:
            views[mode] = code.call("view").value
            assert code.sandbox.get("zygote") == ("child zygote" if mode == "1" else None)
        finally:
            code.close()
    forked, bwrapped = views["1"], views["0"]
    assert forked["status"]["Seccomp"] == "2" and forked["status"]["NoNewPrivs"] == "1"
    assert forked["status"]["CapEff"] == "0000000000000000"
    assert forked["ids"][0] == 2 and forked["loopback"] == 1
    for key in ("mounts", "status", "limits", "listing", "ids", "cwd", "env", "argv", "loopback", "hostname",
                "modes"):
        assert forked[key] == bwrapped[key], key


@needs_bwrap
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGXCPU])
def test_a_signal_that_ends_a_forked_child_is_reported_as_that_signal(monkeypatch, sig):
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    code = _start()
    try:
        with pytest.raises(StudentCrash) as e:
            code.call("die", int(sig))
        assert f"killed by {signal.Signals(sig).name}" in str(e.value)
    finally:
        code.close()
    client = next(iter(local._OWN_CHILD_ZYGOTES.clients.values()))
    assert not [f for f in os.listdir(client.folder) if f.startswith("core")]  # no root core dump


@needs_bwrap
def test_pid_1_of_a_forked_sandbox_holds_no_privilege(monkeypatch):
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    code = _start()
    try:
        outer = code.handle.proc.pid
        init = [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == outer]
        assert len(init) == 1
        status = dict(line.split(":", 1) for line in Path(f"/proc/{init[0]}/status").read_text().splitlines())
        assert status["CapEff"].strip() == status["CapPrm"].strip() == "0000000000000000"
        assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    finally:
        code.close()


@needs_bwrap
def test_a_sandbox_that_cannot_be_built_by_forking_falls_back_to_bubblewrap(monkeypatch):
    """A fork that fails before its sandbox stands (here: a cgroup it cannot join) is the
    machine's problem: the child starts under bubblewrap and the student loses nothing."""
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    monkeypatch.setattr(local, "_ZYGOTE_FAILED", None)
    start = forkserver.Endpoint.start

    def broken(self, request, fds=()):
        return start(self, dict(request, cgroups=["/nonexistent-cgroup"]), fds)

    monkeypatch.setattr(forkserver.Endpoint, "start", broken)
    code = _start()
    try:
        assert code.call("traces").value == [None, False, False]
        assert code.sandbox["zygote"].startswith("none: the forked sandbox could not be built here")
        assert code.handle.proc.__class__.__name__ == "Popen"
    finally:
        code.close()


@needs_bwrap
def test_the_fork_server_path_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("DLOPT_ZYGOTE", "0")
    code = _start()
    try:
        assert code.sandbox.get("zygote") is None
        assert code.handle.proc.__class__.__name__ == "Popen"
    finally:
        code.close()


@needs_bwrap
def test_a_child_zygote_that_died_is_replaced(monkeypatch):
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    _start().close()
    client = next(iter(local._OWN_CHILD_ZYGOTES.clients.values()))
    client.proc.kill()
    client.proc.wait()
    code = _start()
    try:
        assert code.sandbox.get("zygote") == "child zygote"
        assert next(iter(local._OWN_CHILD_ZYGOTES.clients.values())) is not client
    finally:
        code.close()


# -- the judge zygote ---------------------------------------------------------------------
def _judge(tmp_path: Path, statement: str, timeout: float = 60.0, name: str = "judge") -> tuple[int | None, str]:
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    code = judge_zygote.run(["timeit", "-n", "1", "-r", "1", statement], dict(os.environ, TMPDIR=str(tmp_path)),
                            str(tmp_path), str(out), str(err), timeout)
    return code, out.read_text() + err.read_text()


def test_judges_from_the_zygote_draw_fresh_numbers_and_keep_their_own_environment(tmp_path):
    stmt = ("import random, os, tempfile, numpy, torch; "
            "print('R', torch.rand(1).item(), random.random(), numpy.random.rand(), tempfile.gettempdir(), os.getpid())")
    draws = []
    for i in range(2):
        folder = tmp_path / str(i)
        folder.mkdir()
        code, text = _judge(folder, stmt)
        assert code == 0, text
        line = next(x for x in text.splitlines() if x.startswith("R "))
        draws.append(line.split()[1:])
        assert draws[-1][3] == str(folder)  # TMPDIR as this judge was given it
    assert all(draws[0][k] != draws[1][k] for k in range(3)), draws  # torch, random, numpy
    assert draws[0][4] != draws[1][4]  # two processes, never one reused


def test_a_judge_past_its_time_is_killed_and_its_group_with_it(tmp_path):
    import time

    started = time.monotonic()
    code, _ = _judge(tmp_path, "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)",
                     timeout=3)
    assert code is None and time.monotonic() - started < 15
    # the group's SIGKILL is delivered asynchronously: on a loaded machine give it a few seconds
    for _ in range(50):
        leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == "sleep 300"]
        if not leftovers:
            break
        time.sleep(0.1)
    assert leftovers == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_a_changed_engine_file_starts_a_new_judge_zygote(tmp_path):
    assert _judge(tmp_path, "pass")[0] == 0
    client = judge_zygote._SHARED.clients["judge"]
    watched = next(f for f in client.files if f.endswith(os.path.join("judge", "compare.py")))
    st = os.stat(watched)
    try:
        os.utime(watched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert _judge(tmp_path, "pass", name="after")[0] == 0
        assert judge_zygote._SHARED.clients["judge"] is not client
        assert client.proc.poll() is not None  # the stale one was ended
    finally:
        os.utime(watched, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_grades_are_the_same_with_and_without_the_zygotes(monkeypatch, tmp_path):
    probe = assignments.load(str(REPO / "tests" / "fixtures" / "probe"))
    sub = tmp_path / "submission.py"  # one right function, one wrong for negative inputs
    sub.write_text("def double(x):\n    return x * 2\n\ndef square(v):\n    return v * v if v > 0 else -v * v\n")
    results = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("DLOPT_ZYGOTE", mode)
        r = grade(probe, sub)
        results[mode] = (r.score, r.error, [(t.name, t.status, t.points) for t in r.tests], r.sandbox.get("zygote"))
    assert results["1"][:3] == results["0"][:3]
    assert 0 < results["1"][0] < probe.points
    assert (results["1"][3], results["0"][3]) == ("child zygote", None)


@needs_bwrap
def test_judges_share_one_child_zygote_kept_by_the_judge_zygote(monkeypatch, tmp_path):
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    probe = assignments.load(str(REPO / "tests" / "fixtures" / "probe"))
    sub = tmp_path / "submission.py"
    sub.write_text("def double(x):\n    return x * 2\n\ndef square(v):\n    return v * v\n")
    for _ in range(2):
        r = grade(probe, sub)
        assert r.score == probe.points and r.sandbox.get("zygote") == "child zygote", r.grader_errors
    owner = judge_zygote._SHARED.clients["judge"].proc.pid
    kept = [p for p in os.listdir("/proc") if p.isdigit() and "sandbox/child_zygote.py" in _cmdline(p)
            and _parent(p) == owner]
    assert len(kept) == 1


def _parent(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_a_judge_zygote_that_died_is_replaced_without_losing_the_grade(adam, monkeypatch):
    monkeypatch.setenv("DLOPT_ZYGOTE", "1")
    client = judge_zygote._SHARED.get("judge", dict(os.environ))
    client.proc.kill()
    client.proc.wait()
    r = grade(adam, REPO / "assignments" / "adam" / "examples" / "correct_alternative.py", keyword="bias")
    assert r.error is None and not r.grader_errors and r.score > 0
    assert judge_zygote._SHARED.clients["judge"] is not client


def test_the_fork_server_refuses_what_is_not_a_request(tmp_path):
    """Anything but one JSON object per connection is dropped, and the server goes on."""
    import socket

    assert _judge(tmp_path, "pass")[0] == 0
    client = judge_zygote._SHARED.clients["judge"]
    for junk in (b"[1, 2]\n", b"not json\n", b"x" * (forkserver.MAX_REQUEST + 10)):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(client.path)
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(15)
                assert s.recv(100) == b""  # no pid: nothing was forked
            except (BrokenPipeError, ConnectionResetError):
                pass
    assert _judge(tmp_path, "pass", name="after")[0] == 0
    assert judge_zygote._SHARED.clients["judge"] is client


def test_only_its_owner_can_reach_a_zygote():
    client = judge_zygote._SHARED.get("judge", dict(os.environ))
    assert os.stat(client.folder).st_mode & 0o777 == 0o700
    assert os.stat(client.path).st_mode & 0o777 == 0o600


def test_a_fork_server_op_can_pass_descriptors_and_cleans_up_when_its_owner_goes(tmp_path):
    """What the docker runner's pool relies on (sandbox/pool.py): an op answered in the
    server hands a file descriptor to the asker, and `on_exit` runs when the owner leaves."""
    import sys
    import time

    script = tmp_path / "server.py"
    script.write_text(
        "import os, sys\n"
        "from autograder.sandbox import forkserver\n"
        "def give(req):\n"
        "    r, w = os.pipe()\n"
        "    os.write(w, req['say'].encode()); os.close(w)\n"
        "    return {'ok': True}, [r]\n"
        f"forkserver.serve(sys.argv[1], None, {{}}, ops={{'give': give}},\n"
        f"                 on_exit=lambda: open({str(tmp_path / 'gone')!r}, 'w').write('x'))\n")
    server = forkserver.Client([sys.executable, str(script)], dict(os.environ, PYTHONPATH=str(REPO)), "dlopt-test-")
    try:
        answer, fds = server.ask_fds({"op": "give", "say": "hello"})
        assert answer == {"ok": True} and len(fds) == 1
        assert os.read(fds[0], 100) == b"hello"
        os.close(fds[0])
        assert server.ask({"op": "give", "say": "x"}) == {"ok": True}  # `ask` closes what came
    finally:
        server.close()
    deadline = time.monotonic() + 10
    while not (tmp_path / "gone").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "gone").exists()
