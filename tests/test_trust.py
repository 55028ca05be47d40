"""Attacks on what the judge believes and holds, written as a student would (issue 13).

Each attack runs real student code in a real sandboxed child and asserts what the
judge does: how much memory it takes whatever the child sends, how long it waits,
that the channel never falls out of step, that no hidden input reaches visible
feedback, and that a hostile file ends as that file's result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

from autograder import assignment as assignments
from autograder.authoring.notebook import MAX_SOURCE_BYTES, extract_bounded
from autograder.grading import grade
from autograder.judge.student import StudentCode, StudentCrash, StudentError, StudentTimeout
from autograder.sandbox import Limits

from sandbox_marks import needs_bwrap

REPO = Path(__file__).resolve().parents[1]
TRUST = REPO / "tests" / "fixtures" / "trust"

# The reply channel is the child's fd named in its configuration (argv) or, in a
# container, its one socket: a student reads either as easily as we do.
FORGE = r'''
import json, os, struct, sys, time
import torch

def _reply_fd():
    cfg = json.loads(sys.argv[-1])
    if cfg.get("rep_fd") is not None:
        return cfg["rep_fd"]
    for name in os.listdir("/proc/self/fd"):
        if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
            return int(name)

def ok(x):
    return x + 1

def huge_claim():
    os.write(_reply_fd(), struct.pack("<4sIQ", b"DLO1", 64 << 20, 4 << 30))
    time.sleep(30)

def claim_and_stall():
    fd = _reply_fd()
    os.write(fd, struct.pack("<4sIQ", b"DLO1", 2, 200 << 20) + b"{}" + b"0123456789")
    time.sleep(30)

def nested_header():
    head = b"[" * 5000 + b"]" * 5000
    os.write(_reply_fd(), struct.pack("<4sIQ", b"DLO1", len(head), 0) + head)
    time.sleep(30)

def _shm_reply(info):
    head = json.dumps({"shm_reply": info}).encode()
    os.write(_reply_fd(), struct.pack("<4sIQ", b"DLO1", len(head), 0) + head)
    time.sleep(30)

def shm_over_budget():
    _shm_reply({"size": 4 << 30, "h": {"dict": [["ok", True]]}})

def shm_malformed():
    _shm_reply({"size": "1e9", "h": None})

def shm_past_its_end():
    path = os.path.join(json.loads(sys.argv[-1])["xfer"], "reply.bin")
    os.truncate(path, 0)
    _shm_reply({"size": 1 << 20, "h": {"dict": [["ok", True], ["value", {"tensor": "uint8", "shape": [1 << 20],
                                              "offset": 0, "nbytes": 1 << 20, "on": "cpu"}]]}})

def shm_forged_tensor():
    # a header whose tensor lies outside the bytes it claims: refused before a byte is read
    _shm_reply({"size": 1 << 20, "h": {"dict": [["ok", True], ["value", {"tensor": "float32", "shape": [1 << 20],
                                              "offset": 0, "nbytes": 4 << 20, "on": "cpu"}]]}})

def shm_unoffered():
    # a watched call, for which the judge offers no reply file: a well-formed reply there anyway
    import mmap
    from autograder.protocol.codec import encode_chunks
    header, chunks = encode_chunks({"ok": True, "value": torch.ones(1 << 18)})
    size = sum(len(c) for c in chunks)
    fd = os.open(os.path.join(json.loads(sys.argv[-1])["xfer"], "reply.bin"), os.O_RDWR)
    os.ftruncate(fd, size)
    with mmap.mmap(fd, size) as m:
        m[:] = b"".join(bytes(c) for c in chunks)
    _shm_reply({"size": size, "h": header})

KEPT = []

def keep(x):
    KEPT.append(x)  # a view of the judge's request file
    return None

def peek():
    return float(KEPT[0].sum())

def big(n):
    return torch.ones(n)

def stop_reading():
    import autograder.protocol.channel as channel
    channel.read_frame = lambda *a, **k: time.sleep(10**6)
    return "stopped"
'''


def _code(source: str, **limits) -> StudentCode:
    return StudentCode(source, Limits(**{"call_seconds": 4, "submission_seconds": 120, "wall_factor": 1.0,
                                         **limits}))


def _judge_peak(fn) -> tuple[object, int]:
    """Run fn() and return (its outcome, the judge's peak Python allocation in bytes)."""
    tracemalloc.start()
    try:
        try:
            outcome = fn()
        except Exception as e:  # noqa: BLE001
            outcome = e
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_forged_frame_claiming_gigabytes_costs_the_judge_nothing():
    code = _code(FORGE)
    try:
        code.call("ok", 1)  # the child is up before memory is measured
        started = time.monotonic()
        outcome, peak = _judge_peak(lambda: code.call("huge_claim"))
        assert isinstance(outcome, StudentCrash) and "too large" in str(outcome), outcome
        assert time.monotonic() - started < 3, "refused at the prefix, not after waiting"
        assert peak < 2 << 20, f"the judge allocated {peak:,} bytes for a refused frame"
        assert code.call("ok", 41).value == 42  # a fresh child, the channel in step
    finally:
        code.close()


def test_a_frame_that_stalls_holds_only_what_arrived_until_the_deadline():
    code = _code(FORGE, call_seconds=3)
    try:
        code.call("ok", 1)
        started = time.monotonic()
        outcome, peak = _judge_peak(lambda: code.call("claim_and_stall"))
        elapsed = time.monotonic() - started
        assert isinstance(outcome, StudentTimeout), outcome
        assert 2.5 < elapsed < 16, elapsed  # the call's seconds + 10 once a frame has begun
        # 200 MiB were claimed (within the reply budget): memory grows only as bytes arrive.
        assert peak < 4 << 20, f"the judge allocated {peak:,} bytes for 10 bytes received"
        assert code.call("ok", 1).value == 2
    finally:
        code.close()


@pytest.mark.parametrize("fn, match", [("shm_over_budget", "oversized"), ("shm_malformed", "malformed"),
                                       ("shm_past_its_end", "shorter"), ("shm_forged_tensor", "cover")])
def test_a_forged_shared_reply_fails_that_call_and_costs_the_judge_at_most_its_budget(fn, match):
    """Large replies come back through the judge's reply file (protocol/shm.py): a frame
    that points to it is held to the reply budget, the file's real size and the codec's
    validation, and fails only its own call."""
    code = _code(FORGE)
    try:
        code.call("ok", 1)
        outcome, peak = _judge_peak(lambda: code.call(fn))
        assert isinstance(outcome, StudentCrash) and match in str(outcome), outcome
        assert peak < 8 << 20, f"the judge allocated {peak:,} bytes"
        assert code.call("ok", 41).value == 42
    finally:
        code.close()


def test_a_reply_by_a_transport_the_call_did_not_offer_fails_that_call_only():
    """The reply file is offered per call (issue 25): a watched call's reply comes by the
    pipe, whatever the child writes in the file and claims."""
    code = _code(FORGE)
    try:
        assert code.call("ok", 1).value == 2  # an offered call: the reply file exists
        with pytest.raises(StudentCrash, match="did not offer"):
            code.call("shm_unoffered", watch_memory=True)
        assert code.call("ok", 41).value == 42
    finally:
        code.close()


# The red team's load forgery (issue 25): a class body swaps the child's reply function so
# that the load's reply claims the whole reply file. The load offers none: every load fails.
LOAD_FORGERY = r'''
import sys

def ok(x):
    return x + 1

class _Transport:
    _channel = sys.modules["autograder.protocol.channel"]

    def _forged(self, reply, request, _honest=_channel.ChildChannel.reply):
        from autograder.protocol.codec import encode_chunks
        from autograder.protocol.framing import write_encoded
        if reply.names:
            header, _ = encode_chunks(reply.to_wire())
            return write_encoded(self.rep_fd, {"shm_reply": {"size": 256 << 20, "h": header}}, [])
        return _honest(self, reply, request)

    _channel.ChildChannel.reply = _forged
'''


def test_a_load_reply_forged_through_the_reply_file_fails_the_load():
    code = _code(LOAD_FORGERY)
    try:
        with pytest.raises(StudentCrash, match="loading your code.*did not offer"):
            code.call("ok", 1)
    finally:
        code.close()


def test_the_judge_drops_the_reply_file_after_a_take_and_request_files_before_unlinking():
    """No page of the reply file outlives a take; a request file is truncated before it is
    unlinked, so a child that kept a view of its inputs keeps nothing the judge paid for
    (it gets SIGBUS there)."""
    code = _code(FORGE)
    try:
        out = code.call("big", 1 << 20)  # 4 MiB: through the reply file
        assert torch.equal(out.value, torch.ones(1 << 20))
        reply_file = code.handle.shared_reply()
        assert reply_file is not None and os.fstat(reply_file.fd).st_size == 0
        assert code.call("keep", torch.zeros(1 << 18)).value is None  # 1 MiB: through a request file
        assert not [p for p in code.handle.xfer.iterdir() if p.name.startswith("call-")]
        with pytest.raises(StudentCrash, match="SIGBUS"):
            code.call("peek")
        assert code.call("ok", 1).value == 2
    finally:
        code.close()


def test_a_header_nested_5000_deep_fails_that_call_and_the_channel_stays_in_step():
    code = _code(FORGE)
    try:
        with pytest.raises(StudentCrash, match="invalid reply"):
            code.call("nested_header")
        # Before: an uncaught RecursionError left the channel one reply behind, and every
        # later call read the previous call's answer.
        assert [code.call("ok", k).value for k in range(5)] == [1, 2, 3, 4, 5]
    finally:
        code.close()


def test_a_child_that_stops_reading_cannot_block_the_judge():
    code = _code(FORGE, call_seconds=3)
    try:
        assert code.call("stop_reading").value == "stopped"
        big = torch.randn(4 << 20)  # 16 MiB: far more than a pipe holds
        started = time.monotonic()
        with pytest.raises(StudentTimeout):
            code.call("ok", big)
        assert time.monotonic() - started < 16, "the write gave up at the call's wall backstop"
        assert code.call("ok", 1).value == 2
    finally:
        code.close()


def test_the_reply_budget_follows_the_limits_and_the_request():
    lim = Limits(reply_mb=8, reply_header_kb=64)
    assert lim.reply_budget(0) == (64 << 10, 8 << 20)
    assert lim.reply_budget(100 << 20) == (64 << 10, 400 << 20)  # 4x what was sent


# -- hidden and public suites never share a child ------------------------------------------
LOGGER = '''
SEEN = []

def echo(x):
    try:
        with open("/tmp/seen.txt") as f:
            earlier = f.read().split()
    except OSError:
        earlier = []
    with open("/tmp/seen.txt", "a") as f:
        f.write(f"{x}\\n")
    SEEN.append(x)
    if SEEN[:-1] or earlier:
        return {"seen in this process": SEEN, "seen in /tmp": earlier}
    return x
'''


@needs_bwrap
def test_hidden_inputs_never_reach_visible_feedback(tmp_path):
    sub = tmp_path / "logger.py"
    sub.write_text(LOGGER)
    r = grade(assignments.load(TRUST), sub)
    assert r.error is None, r.error
    by_name = {t.name: t for t in r.tests}
    assert by_name["test_public_echo"].status == "passed", by_name["test_public_echo"].feedback
    for t in r.tests:
        assert "918273645" not in (t.feedback or ""), t
    assert r.score == 4, [(t.name, t.feedback) for t in r.tests]  # add_all is not defined: 0 of 1


@needs_bwrap
def test_each_visibility_group_gets_a_fresh_child():
    code = _code(LOGGER)
    try:
        code.enter_group("hidden")
        assert code.call("echo", 918273645).value == 918273645
        code.enter_group("public")  # a new process and a new /tmp
        assert code.call("echo", 7).value == 7
        code.enter_group("public")  # the same group: the same child
        assert code.call("echo", 8).value["seen in this process"] == [7, 8]
    finally:
        code.close()


# -- intake never loses a batch -----------------------------------------------------------
def _notebook(cells: list[str], **extra) -> dict:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
          "cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": c} for c in cells]}
    nb.update(extra)
    return nb


HOSTILE_FILES = {
    "meta_list.ipynb": json.dumps(_notebook(["def echo(x):\n    return x\n"], metadata={"dlopt": [1]})),
    "meta_str.ipynb": json.dumps(_notebook(["def echo(x):\n    return x\n"], metadata="oops")),
    "deep_json.ipynb": '{"nbformat": 4, "cells": [], "metadata": ' + "[" * 100000 + "]" * 100000 + "}",
    "cells_not_strings.ipynb": json.dumps(_notebook([["def echo(x):\n", 3, None, "    return x\n"]])),
    "deep_code.ipynb": json.dumps(_notebook(["def echo(x):\n    return x\n", "y = " + "(" * 5000 + "1" + ")" * 5000,
                                            "z = " + "-" * 200000 + "1", "w = " + "[" * 100000])),
    "huge.py": "x = 1\n" * ((MAX_SOURCE_BYTES // 6) + 10),
    "binary.ipynb": "\udcff",
    "empty.ipynb": "",
}


def _write_hostile(folder: Path) -> list[Path]:
    paths = []
    for name, text in HOSTILE_FILES.items():
        p = folder / name
        p.write_bytes(text.encode("utf-8", "surrogateescape"))
        paths.append(p)
    return paths


def test_hostile_files_end_as_reasons_quickly(tmp_path):
    for p in _write_hostile(tmp_path):
        started = time.monotonic()
        ex = extract_bounded(p)
        took = time.monotonic() - started
        assert took < 20, f"{p.name}: {took:.1f} s"
        if p.name in ("meta_list.ipynb", "meta_str.ipynb", "cells_not_strings.ipynb", "deep_code.ipynb"):
            assert ex.fatal is None and "def echo" in ex.source, (p.name, ex.fatal)
        else:
            assert ex.fatal, p.name
    huge = extract_bounded(tmp_path / "huge.py")
    assert "limit is 2 MB" in huge.fatal
    deep = extract_bounded(tmp_path / "deep_code.ipynb")
    assert len(deep.notes) == 3 and all("cell" in n for n in deep.notes), deep.notes


def test_a_cli_batch_of_hostile_files_writes_one_entry_per_file(tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    paths = _write_hostile(folder)
    (folder / "good.py").write_text("def echo(x):\n    return x\n")
    out = tmp_path / "scores.json"
    proc = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(TRUST), str(folder),
                           "--json", str(out), "--jobs", "2"], capture_output=True, text=True, timeout=900)
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert sorted(Path(r["path"]).name for r in rows) == sorted([p.name for p in paths] + ["good.py"])
    good = next(r for r in rows if r["path"].endswith("good.py"))
    assert good["score"] == 4, good  # echo right; add_all missing
    for r in rows:
        if Path(r["path"]).name in ("deep_json.ipynb", "huge.py", "binary.ipynb", "empty.ipynb"):
            assert r["error"] and r["score"] == 0, r


# -- every resource of the sandbox is bounded -------------------------------------------------
BOUNDS = r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)

def new_namespaces():
    out = {}
    for name, flags in (("user+mount", 0x10000000 | 0x00020000), ("user", 0x10000000), ("mount", 0x00020000),
                        ("net", 0x40000000)):
        out[name] = libc.unshare(flags)
    return out

def mount_tmpfs():
    os.makedirs("/tmp/m", exist_ok=True)
    return libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, b"size=1000g")

def fill_tmp(files, mb):
    written = 0
    for k in range(files):
        try:
            with open(f"/tmp/fill{k}", "wb") as f:
                for _ in range(mb):
                    f.write(b"\1" * (1 << 20))
                    written += 1
        except OSError:
            break
    return written

def fork_and_thread():
    import threading
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    out = []
    t = threading.Thread(target=lambda: out.append(1))
    t.start()
    t.join()
    return [os.waitpid(pid, 0)[1] >> 8, out]
'''


def test_no_namespaces_mounts_or_unbounded_tmp_inside_the_sandbox(runner):
    if runner == "local" and not __import__("autograder.sandbox.local", fromlist=["x"]).bwrap_path():
        pytest.skip("bubblewrap is missing here: the local runner is weak")
    # 6 GiB of address space: a CUDA build of torch maps more than 2 GiB just to load.
    code = StudentCode(BOUNDS, Limits(call_seconds=30, submission_seconds=120, memory_mb=6144, tmp_mb=96))
    try:
        made = code.call("new_namespaces").value
        # No user namespace anywhere (the way to capabilities); the local runner's filter
        # refuses every namespace. Podman's own profile lets a capability-less process make
        # a mount or net namespace, in which it still cannot mount anything (checked next).
        assert made["user+mount"] != 0 and made["user"] != 0, made
        if runner == "local":
            assert all(v != 0 for v in made.values()), made
        assert code.call("mount_tmpfs").value != 0
        # 96 files of 64 MiB asked for: /tmp holds 96 MiB, whatever the files.
        assert code.call("fill_tmp", 96, 64).value <= 96
        assert code.call("fork_and_thread").value == [7, [1]]  # fork and threads still work
        if runner == "local":
            from autograder.sandbox.memwatch import MemoryWatch

            watch = MemoryWatch()
            cgroups = watch.method.startswith("cgroup")  # not under gVisor, say: no writable cgroup
            watch.close()
            assert code.sandbox.get("seccomp") and code.sandbox.get("memory_limit") == cgroups, code.sandbox
    finally:
        code.close()


# -- scores do not depend on load ----------------------------------------------------------------
BURN = """
import time

def burn(seconds):
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n > 0
"""


def _hogs(n: int):
    # Each in a session of its own: with autogroup scheduling, CPU is shared between sessions.
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(n)]


def test_a_call_within_its_cpu_limit_passes_on_an_oversubscribed_machine():
    # 1.5 s of CPU against a 2.5 s limit. With 4 spinning processes on this machine's cores
    # the call takes several seconds of wall time: a wall-clock limit failed it, the CPU
    # limit does not; a call over its CPU limit still fails, loaded or not.
    code = StudentCode(BURN, Limits(call_seconds=2.5, submission_seconds=60))
    hogs = _hogs(3 * (len(__import__("os").sched_getaffinity(0))))
    try:
        code.call("burn", 0.1)
        started = time.monotonic()
        assert code.call("burn", 1.5).value is True
        loaded_wall = time.monotonic() - started
        with pytest.raises(StudentTimeout, match="CPU time"):
            code.call("burn", 4.0)
    finally:
        for h in hogs:
            h.kill()
        code.close()
    assert loaded_wall > 2.5, f"the machine was not oversubscribed ({loaded_wall:.1f} s): the test proves nothing"


# -- forbidden routines cannot be reached ------------------------------------------------------
# Every path a student finds to a forbidden routine, each a function of its own; each must
# raise in the sandbox (the guard is installed before any student code exists there).
PATHS = r'''
import gc, importlib, math, sys
import torch
import torch.nn.functional as F

def _q(n=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, n, 16, generator=g) for _ in range(3)]

def sdpa_plain():
    return F.scaled_dot_product_attention(*_q())

def sdpa_c_nn():
    return torch._C._nn.scaled_dot_product_attention(*_q())

def sdpa_aten_computed():
    op = getattr(torch.ops.aten, "_scaled_dot_product_" + "flash_attention_for_cpu")
    return getattr(op, "__wrapped__", op)(*_q(), 0.0, False)[0]

def sdpa_inference_mode():
    with torch.inference_mode():
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(*_q(), 0.0, False)[0]

def sdpa_redispatch_cpu():
    ks = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default.redispatch(ks, *_q(), 0.0, False)[0]

def sdpa_in_dispatch_mode():
    from torch.utils._python_dispatch import TorchDispatchMode
    class M(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))
    with M():
        return F.scaled_dot_product_attention(*_q())

def sdpa_after_destroying_libraries():
    for o in gc.get_objects():
        if isinstance(o, torch.library.Library):
            try:
                o._destroy()
            except Exception:
                pass
    return F.scaled_dot_product_attention(*_q())

def mha_module():
    m = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(1, 4, 16)
    return m(x, x, x)[0]

def autograd_grad():
    x = torch.randn(3, requires_grad=True)
    return torch.autograd.grad((x * x).sum(), x)[0]

def autograd_importlib_no_inference():
    ag = importlib.import_module("torch.auto" + "grad")
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.randn(3, requires_grad=True)
        return ag.grad((x * x).sum(), x)[0]

def tensor_backward():
    with torch.enable_grad():
        x = torch.randn(3, requires_grad=True)
        (x * x).sum().backward()
        return x.grad

def func_grad():
    return torch.func.grad(lambda x: (x * x).sum())(torch.randn(3))

def func_jvp():
    return torch.func.jvp(lambda x: x * x, (torch.randn(3),), (torch.ones(3),))[1]

def grad_fn_call():
    with torch.enable_grad():
        x = torch.randn(3, requires_grad=True)
        y = x * 3
        return y.grad_fn(torch.ones(3))

def ordinary_ops():
    q, k, v = _q()
    s = q @ k.transpose(-1, -2) / math.sqrt(16)
    p = torch.exp(s - s.amax(-1, keepdim=True))
    o = (p / p.sum(-1, keepdim=True)) @ v
    with torch.no_grad():
        w = torch.nn.functional.relu(torch.randn(4, 4)) @ torch.randn(4, 4)
    return float(o.sum() + w.sum())

def foreach_wrapped():
    fn = getattr(torch, "_foreach" + "_add_")
    xs = [torch.ones(3)]
    getattr(fn, "__wrapped__", fn)(xs, [torch.ones(3)])
    return xs[0]

def fused_adamw():
    p = [torch.ones(3)]
    torch._fused_adamw_(p, [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [], [torch.ones(())],
                        lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
    return p[0]

def adamw_subclass():
    class A(getattr(torch.optim, "Adam" + "W")):
        pass
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    A([w], lr=0.1).step()
    return w.detach()

def adamw_through_subclasses():
    cls = next(c for c in torch.optim.Adam.__subclasses__() + [torch.optim.Adam] if "Adam" in c.__name__)
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    cls([w], lr=0.1).step()
    return w.detach()

def own_optimizer_still_works():
    class Mine(torch.optim.Optimizer):
        def __init__(self, ps):
            super().__init__(ps, {"lr": 0.5})
        def step(self):
            for g in self.param_groups:
                for p in g["params"]:
                    p.data.add_(p.grad, alpha=-g["lr"])
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    opt = Mine([w])
    opt.step()
    opt.zero_grad()
    return w.detach()
'''

ATTENTION_GUARD = assignments.load("attention").guard
ADAM_GUARD = assignments.load("adam").guard


@pytest.mark.parametrize("guard,blocked,allowed", [
    (ATTENTION_GUARD, ["sdpa_plain", "sdpa_c_nn", "sdpa_aten_computed", "sdpa_inference_mode", "sdpa_redispatch_cpu",
                       "sdpa_in_dispatch_mode", "sdpa_after_destroying_libraries", "mha_module", "autograd_grad",
                       "autograd_importlib_no_inference", "tensor_backward", "func_grad", "func_jvp", "grad_fn_call"],
     ["ordinary_ops"]),
    (ADAM_GUARD, ["foreach_wrapped", "fused_adamw", "adamw_subclass", "adamw_through_subclasses"],
     ["own_optimizer_still_works", "autograd_grad", "ordinary_ops"]),
], ids=["attention", "adam"])
def test_forbidden_routines_raise_whatever_the_path(guard, blocked, allowed):
    code = StudentCode(PATHS, Limits(call_seconds=30, submission_seconds=300), guard=guard)
    try:
        reached = []
        for fn in blocked:
            try:
                code.call(fn)
                reached.append(fn)
            except StudentError:
                pass  # raised (most say "forbidden by the assignment"; some torch paths fail earlier)
        assert not reached, f"forbidden routines reached through {reached}"
        for fn in allowed:
            code.call(fn)  # ordinary code keeps working
    finally:
        code.close()


LOOPBACK = '''
import socket

def chatter(nbytes):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    cli.sendall(b"x" * nbytes)
    got = 0
    while got < nbytes:
        got += len(conn.recv(1 << 20))
    for s in (cli, conn, srv):
        s.close()
    return got
'''


@needs_bwrap
def test_the_judge_counts_the_sandboxs_loopback_bytes_itself():
    # The ring's total traffic is the kernel's count of the sandbox's own network: 1 MB
    # sent there shows up, whatever the child would say about it.
    code = StudentCode(LOOPBACK, Limits(call_seconds=10, submission_seconds=60))
    try:
        small = code.call("chatter", 1000).loopback_bytes
        big = code.call("chatter", 1_000_000).loopback_bytes
        assert small is not None and big is not None
        assert 990_000 <= big - small < 1_100_000, (small, big)  # payload: bytes less 66 per packet
    finally:
        code.close()


# -- through the real path and both runners: one submission, one attack per class ----------------
HOSTILE_ALL = r'''
import json, os, struct, sys, time
import torch

def _reply_fd():
    cfg = json.loads(sys.argv[-1])
    if cfg.get("rep_fd") is not None:
        return cfg["rep_fd"]
    for name in os.listdir("/proc/self/fd"):
        if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
            return int(name)

def _fill_tmp():
    for k in range(64):
        try:
            with open(f"/tmp/fill{k}", "wb") as f:
                for _ in range(64):
                    f.write(b"\\1" * (1 << 20))
        except OSError:
            return

def echo(x):
    if x == 918273645:  # the hidden call: forge a reply claiming 4 GiB, then stall
        os.write(_reply_fd(), struct.pack("<4sIQ", b"DLO1", 64, 4 << 30) + b"{" * 64)
        time.sleep(60)
    if x == 918273646:  # the after-deadline call: fill /tmp first (bounded), then answer
        _fill_tmp()
    return x

def add_all(xs, c):
    fn = getattr(torch, "_foreach" + "_add")  # a computed name: raises in the child, and flagged
    return list(fn(xs, c))
'''


def test_every_attack_class_through_the_real_path(runner, tmp_path):
    import resource

    if runner == "local" and not __import__("autograder.sandbox.local", fromlist=["x"]).bwrap_path():
        pytest.skip("bubblewrap is missing here: the local runner is weak")
    sub = tmp_path / "hostile_all.py"
    sub.write_text(HOSTILE_ALL)
    started = time.monotonic()
    r = grade(assignments.load(TRUST), sub)
    took = time.monotonic() - started
    by = {t.name: t for t in r.tests}
    assert r.error is None and not r.grader_errors, (r.error, r.grader_errors)
    # honest behaviour: echo answers 7 and the secret + 1; the forged frame fails only its own test
    assert by["test_public_echo"].points == 2 and by["test_after_deadline_echo"].points == 1, by
    assert by["test_hidden_echo"].points == 0 and "invalid reply" in by["test_hidden_echo"].feedback
    assert by["test_add_all"].points == 0 and by["forbidden_api_check"].status == "failed"
    assert r.score == 3
    # the name is folded ("_foreach" + "_add") and named: a private torch routine
    assert any("torch._foreach_add" in f["construct"] for f in r.flags), r.flags
    # the judge never took the 4 GiB it was offered (max RSS of any process grade() waited for)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1_500_000, "KiB"
    assert took < 120, took


def test_examples_score_the_same_on_an_oversubscribed_machine():
    """Three adam examples, 4 judges at once on this machine's cores, with a spinning
    process per core in sessions of their own: every score is the one scores.toml gives
    (the CPU-time limits count the child's own work, not the machine's)."""
    import tomllib
    from concurrent.futures import ThreadPoolExecutor

    adam = assignments.load("adam")
    expected = tomllib.loads((adam.examples_dir / "scores.toml").read_text())
    names = ["correct_alternative.py", "bug_no_bias_correction.py", "bug_modifies_inputs.py",
             "bug_adamw_global_step_count.py"]
    hogs = _hogs(len(__import__("os").sched_getaffinity(0)))
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda n: grade(adam, adam.examples_dir / n), names))
    finally:
        for h in hogs:
            h.kill()
    for name, r in zip(names, results):
        assert r.error is None, (name, r.error)
        assert abs(r.score - expected[name]) < 1e-6, (name, r.score, expected[name],
                                                     [(t.name, t.feedback) for t in r.tests if t.status != "passed"])


def test_forbidden_findings_name_the_cell_and_line_of_the_notebook(tmp_path):
    """The forbidden-API feedback points where the student wrote it (cell and line in the
    notebook), not at a line of the code the grader extracted from it."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("# work"), new_code_cell("import torch\nX = 1\n"),
                             new_markdown_cell("more"),
                             new_code_cell("def echo(x):\n    return x\n\ndef add_all(xs):\n"
                                           "    out = torch.zeros(1)\n    torch._foreach_add_([out], [xs[0]])\n"
                                           "    return out\n")])
    path = tmp_path / "s.ipynb"
    nbformat.write(nb, str(path))
    r = grade(assignments.load(TRUST), path)
    check = next(t for t in r.tests if t.name == "forbidden_api_check")
    assert check.status == "failed" and "cell 4, line 6" in check.feedback, check.feedback
    assert r.forbidden and r.forbidden[0]["where"] == "cell 4, line 6"


# -- inputs as a forked task left them: read back by the judge, whatever the child says ----------
FORKING_HARNESS = '''
import os

HOST_TENSORS = True  # the judge's tensors stay in the shared file, as the ring's do


def in_a_forked_process(ns, x):
    pid = os.fork()
    if pid == 0:  # a "rank": the student's function works on the judge's tensor
        try:
            ns["scribble"](x)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return None
'''

FORGING_STUDENT = r'''
import sys

def scribble(x):
    x.add_(1)

def forge():
    # Rewrite every later reply of the child so that it reports its arguments untouched.
    srv = sys.modules["autograder.child.server"]
    real = srv.Child.call
    def call(self, req):
        reply = real(self, req)
        reply.args_after = ["untouched"] * len(req.args)
        return reply
    srv.Child.call = call
    return True
'''


def test_a_forked_tasks_changes_to_its_inputs_are_read_back_by_the_judge(tmp_path):
    """The ring's ranks are processes the child forks: what they do to their inputs reaches
    the judge through the request's shared file, and a child that forges its report of the
    arguments changes nothing the judge sees."""
    harness = tmp_path / "harness.py"
    harness.write_text(FORKING_HARNESS)
    code = StudentCode(FORGING_STUDENT, Limits(call_seconds=10, submission_seconds=60), harness=str(harness))
    try:
        x = torch.arange(6, dtype=torch.float64)
        honest = code.task("in_a_forked_process", x, return_args=True)
        assert torch.equal(honest.args_after[0], x + 1), honest.args_after
        assert code.call("forge").value is True
        forged = code.task("in_a_forked_process", x, return_args=True)
        assert torch.equal(forged.args_after[0], x + 1), forged.args_after  # not "untouched"
        assert torch.equal(x, torch.arange(6, dtype=torch.float64))  # the judge's own tensor: never shared
        plain = code.task("in_a_forked_process", x)
        assert plain.args_after is None
    finally:
        code.close()
