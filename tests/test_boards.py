"""The leaderboard's timing protocol (autograder/judge/boards.py, child/timed.py) against
the cheats of GPU MODE's and KernelBench's histories, on a small matmul board, in this
process (the sandboxed path is tests/test_boards_sandbox.py): each cheat must end with no
time and a reason, an honest kernel with one.
"""

from __future__ import annotations

import random

import pytest
import torch

from autograder.child import timed
from autograder.judge import boards
from autograder.protocol.fingerprint import fingerprint

SHAPES = [{"n": 24}, {"n": 40}]


def make_inputs(shape, seed, device="cpu"):
    g = torch.Generator(device=device).manual_seed(seed)
    n = shape["n"]
    return (torch.randn(n, n, generator=g, device=device), torch.randn(n, n, generator=g, device=device))


HARNESS = boards.Harness(
    make_inputs=make_inputs,
    truth=lambda shape, inputs: [inputs[0].double() @ inputs[1].double()],
    null_output=lambda shape, inputs: torch.empty_like(inputs[0]),
    cost=lambda shape: (3 * 4 * shape["n"] ** 2, 2 * shape["n"] ** 3))
BOARD = boards.Board(name="matmul", function="mm", shapes=SHAPES, dtype="float32", rtol=1e-4, atol=1e-4, loops=3,
                     reveal=2, seconds_per_loop=0.01, max_iterations=8)


class FakeStudent:
    """The child's side in this process: `fn` is the student's function; `run`/`reveal`
    may be replaced to play a cheat that rewrites the loop itself."""

    def __init__(self, fn, run=None, reveal=None):
        self.fn, self._run, self._reveal = fn, run or timed.run, reveal or timed.reveal

    def task(self, name, *args, what=None, l2_bytes=0):
        class R:
            pass

        r = R()
        if name == "board_run":
            shape, seeds = args
            r.value = self._run(lambda inputs: self.fn(*inputs), lambda s: make_inputs(shape, s), seeds, "cpu")
        else:
            r.value = self._reveal(*args)
        return r


def time(student, **kw):
    return boards.time_board(student, BOARD, HARNESS, "cpu", rng=random.Random(3), **kw)


def test_an_honest_kernel_gets_a_time_on_every_shape():
    r = time(FakeStudent(torch.matmul))
    assert r.reason is None and r.seconds > 0 and r.checked == 2 * 3 * 2
    assert sorted(s.shape["n"] for s in r.shapes) == [24, 40]
    assert all(len(s.seconds) == 3 for s in r.shapes)


def test_replaying_an_output_gets_no_time():
    """Outputs replayed from the first call (a guessed seed, a cache keyed by shape)."""
    cache = {}

    def replay(a, b):
        return cache.setdefault(a.shape, a @ b)

    r = time(FakeStudent(replay))
    assert r.seconds is None and "off the truth" in r.reason


def test_skipping_work_on_some_iterations_gets_no_time():
    calls = [0]

    def lazy(a, b):
        calls[0] += 1
        return a @ b if calls[0] % 2 else torch.zeros(a.shape[0], b.shape[1])

    assert time(FakeStudent(lazy)).seconds is None


def test_made_up_commitments_get_no_time():
    def run(call, make, seeds, device, l2=0):
        out = timed.run(call, make, seeds, device, l2)
        out["commits"] = [[c[0] ^ 1] for c in out["commits"]]
        return out

    r = time(FakeStudent(torch.matmul, run=run))
    assert r.seconds is None and "not the one committed" in r.reason


def test_work_finished_after_the_window_gets_no_time():
    """The loop commits without computing (replies early), and computes only what the
    judge asks to see afterwards."""
    kept = {}

    def run(call, make, seeds, device, l2=0):
        kept["jobs"] = [(call, make, s) for s in seeds]
        return {"commits": [[0] for _ in seeds]}

    def reveal(indices):
        return [[call(make(s))] for call, make, s in (kept["jobs"][i] for i in indices)]

    r = time(FakeStudent(torch.matmul, run=run, reveal=reveal))
    assert r.seconds is None and "not the one committed" in r.reason


def test_a_precision_downgrade_past_the_tolerance_gets_no_time():
    def half(a, b):
        return (a.bfloat16() @ b.bfloat16()).float()

    r = time(FakeStudent(half))
    assert r.seconds is None and "precision" in r.reason


def test_a_kernel_faster_than_the_hardware_allows_gets_no_time(monkeypatch):
    """A time under the shape's traffic at the device's bandwidth (here a made-up device
    1000x slower than this CPU's matmul): the timer was fooled somewhere."""
    monkeypatch.setattr(boards, "device_peaks", lambda device: {"flops": 1e3, "bytes_per_s": 1e3, "l2_bytes": 0})
    r = time(FakeStudent(torch.matmul))
    assert r.seconds is None and "under the least this device needs" in r.reason


def test_a_loop_that_raises_or_returns_garbage_gets_no_time():
    def boom(a, b):
        raise RuntimeError("kernel crashed")

    assert "failed" in time(FakeStudent(boom)).reason
    r = time(FakeStudent(torch.matmul, run=lambda *a, **k: {"commits": "yes"}))
    assert r.seconds is None and "one output per iteration" in r.reason


def test_fingerprints_see_every_bit_and_agree_across_devices():
    x = torch.randn(257, 3)
    y = x.clone()
    y[100, 1] = torch.nextafter(y[100, 1], torch.tensor(1e9))
    assert fingerprint(x) != fingerprint(y) and fingerprint(x) != fingerprint(-x)
    assert fingerprint(x) == fingerprint(x.clone()) != fingerprint(x.t())
    if torch.cuda.is_available():
        assert fingerprint(x.cuda()) == fingerprint(x)


def test_board_declarations_are_checked():
    with pytest.raises(ValueError, match="unknown keys"):
        boards.Board.from_config({"name": "b", "function": "f", "shapes": [], "speed": 1})
