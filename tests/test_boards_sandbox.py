"""The board protocol with the student's code in a real sandboxed child (attention's
harness and boards): what the child can reach of the timing does not help it. The timing
precheck would flag these submissions before any timing; here boards.time_board is called
directly, so the protocol's own guarantees are what is tested:

- a child that rewrites the harness's loop (commits to nothing, computes at reveal) gets
  no time: its commitments do not match;
- a child that forges a reply on its own reply channel gets no time (the forged reply's
  commitments are made up, and the channel then desynchronises: the loop fails);
- a child that slows the clocks in its own process changes nothing the judge measures
  (the judge's clock is its own process's): it gets the honest kernel's time, not a tenth.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from autograder import assignment as assignments
from autograder.judge import boards
from autograder.judge.student import StudentCode
from autograder.judge.suite import load_module

A = assignments.load("attention")
HARNESS = load_module(A.harness, "attention_board_harness")
BOARD = dict(next(b for b in A.boards if b["name"] == "flash-forward"))
KERNEL = (Path(A.examples_dir) / "board_honest_torch.py").read_text()


def _time(source: str):
    board = boards.Board.from_config(BOARD)
    board.shapes, board.loops, board.reveal, board.max_iterations, board.seconds_per_loop = \
        list(board.cpu_shapes), 2, 2, 2, 0.0
    code = StudentCode(source, A.limits, harness=A.harness)
    try:
        code.current_functions = [board.function]
        return boards.time_board(code, board, boards.Harness(**HARNESS.board_harness(board.name)), "cpu",
                                 rng=random.Random(0))
    finally:
        code.close()


def test_an_honest_kernel_in_the_sandbox_gets_a_time():
    r = _time(KERNEL)
    assert r.reason is None and r.seconds > 0 and r.checked == 4


def test_rewriting_the_loop_in_the_child_gets_no_time():
    source = KERNEL + (Path(A.examples_dir) / "board_lazy_loop.py").read_text().split("def flash_attention_triton(")[0]
    r = _time(source + "\n\ndef flash_attention_triton(q, k, v, causal=False):\n    return _forward(q, k, v, causal)\n")
    assert r.seconds is None and "not the one committed" in r.reason


def test_a_reply_forged_on_the_childs_own_channel_gets_no_time():
    forge = '''
import os as _os
from autograder.protocol import codec as _codec, framing as _framing

_CALLS = [0]


def flash_attention_triton(q, k, v, causal=False):
    _CALLS[0] += 1
    if _CALLS[0] == 3:  # inside the timed loop: reply at once with made-up commitments
        for fd in range(3, 64):
            try:
                _framing.write_frame(fd, {"ok": True, "value": {"commits": [[1, 2]] * 2}, "seconds": 0.0,
                                          "forbidden": []})
            except Exception:
                pass
    return _forward(q, k, v, causal)
'''
    r = _time(KERNEL.split("def flash_attention_triton(")[0] + forge)
    assert r.seconds is None, r.to_dict()


def test_slowing_the_childs_clocks_changes_nothing_the_judge_measures():
    """A kernel that sleeps 50 ms per call and makes every clock in its process crawl (a
    tenth of real time) or stop: the judge still measures at least the 50 ms."""
    slow = ("import time as _t\n_real, _sleep = _t.perf_counter, _t.sleep\n"
            "_t.perf_counter = lambda: _real() / 10\n_t.monotonic = lambda: 0.0\n_t.time = lambda: 0.0\n")
    source = slow + KERNEL.replace("def _forward(q, k, v, causal):\n", "def _forward(q, k, v, causal):\n    _sleep(0.05)\n")
    r = _time(source)
    assert r.reason is None and r.seconds >= 0.045, r.to_dict()


@pytest.mark.parametrize("name", ["flash-forward", "flash-forward-backward"])
def test_the_harness_truth_agrees_with_the_reference_on_its_own_inputs(name):
    """The judge's side of the harness: inputs from a seed are the same twice, the truth
    is the float64 reference's, the do-nothing output has the truth's shapes."""
    import torch

    h = HARNESS.board_harness(name)
    shape = {"b": 1, "h": 2, "n": 24, "d": 16, "causal": True}
    a, b = h["make_inputs"](shape, 7, "cpu"), h["make_inputs"](shape, 7, "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    truth = h["truth"](shape, a)
    assert [t.shape for t in truth] == [t.shape for t in h["null_output"](shape, a)]
    assert all(t.dtype == torch.float64 for t in truth)
