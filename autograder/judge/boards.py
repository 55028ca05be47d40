"""Kernel leaderboards: timing a correct submission's kernel so that no cheat ranks.

An assignment declares its boards in assignment.toml (`[[boards]]`: the function, the
shapes, the dtype, the harness tasks that make inputs and call it, the reference, the
baselines); this module times one submission on one board, on the worker's GPU.

Where the evidence comes from (the student's process may rewrite anything in it):
- **time**: the judge's own clock around each timed task (a whole loop of n iterations,
  n chosen so that a loop lasts `seconds_per_loop`), less the loop's own cost (fresh
  inputs, L2 flush, device synchronisation, fingerprints) measured by the judge running
  the same loop in its own process with a call that does nothing. The loop's own figures
  are never read. Median and spread over `loops` loops, per shape.
- **work**: each iteration's inputs come from a seed the child learns with the task (the
  board's public seed combined with a secret drawn per loop); each output's fingerprint
  is committed inside the window; after each loop the judge picks `reveal` iterations at
  random and asks for their outputs: each must match its commitment and the truth the
  judge computes itself (the board's reference, float64) to the board's tolerance.
- **plausibility**: a time under the least the device needs for the shape's memory
  traffic at its bandwidth, or its FLOPs at its peak, ranks nothing (KernelGuard's
  SCORE_IMPOSSIBLE).
- **shapes**: every declared shape is timed, in a random order; the board's score is the
  geometric mean of the per-shape medians.
A board result without a time says why (`reason`); only results with a time rank.
"""

from __future__ import annotations

import math
import random
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from autograder.child import timed
from autograder.protocol.fingerprint import fingerprint

# Peak figures of the devices boards run on (dense tensor-core FLOP/s for 2-byte types,
# memory bandwidth); a device not listed gets no plausibility floor from them.
DEVICE_PEAKS = {
    "H100": {"flops": 989e12, "bytes_per_s": 3.35e12, "l2_bytes": 50 << 20},
    "H200": {"flops": 989e12, "bytes_per_s": 4.8e12, "l2_bytes": 50 << 20},
    "A100": {"flops": 312e12, "bytes_per_s": 2.0e12, "l2_bytes": 40 << 20},
}


@dataclass
class Board:
    name: str
    function: str                      # the student function the board times (its tests gate it)
    shapes: list[dict]                 # harness parameters of each timed shape
    cpu_shapes: list[dict] = field(default_factory=list)  # the checks only, on CPUs (interpreter)
    dtype: str = "bfloat16"
    timed: str = "forward"             # what one call does, in words (shown on the board)
    requires: list[str] = field(default_factory=list)  # functions whose tests gate it (default: function)
    run_task: str = "board_run"        # harness task: (names, shape, seeds) -> {"commits": ...}
    reveal_task: str = "board_reveal"  # harness task: (names, indices) -> outputs
    baselines: list[str] = field(default_factory=lambda: ["reference", "sdpa"])
    rtol: float = 2e-2
    atol: float = 2e-2
    loops: int = 5
    reveal: int = 3
    seconds_per_loop: float = 0.2
    max_iterations: int = 50

    @classmethod
    def from_config(cls, cfg: dict) -> Board:
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"[[boards]] {cfg.get('name')!r}: unknown keys {sorted(unknown)}")
        return cls(**cfg)


@dataclass
class ShapeTiming:
    shape: dict
    seconds: list[float]               # per-iteration time of each loop, less the loop's own cost
    overhead: float                    # the loop's own cost per iteration (the judge's null loop)
    iterations: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median over the loops."""
        return (max(self.seconds) - min(self.seconds)) / self.median if self.median > 0 else math.inf


@dataclass
class BoardResult:
    board: str
    device: str
    seconds: float | None = None       # geometric mean of the per-shape medians; None: no rank
    spread: float | None = None
    shapes: list[ShapeTiming] = field(default_factory=list)
    reason: str | None = None          # why there is no time
    checked: int = 0                   # outputs revealed and verified
    baselines: dict = field(default_factory=dict)  # name -> seconds (the same loop, in the judge, same run)

    def to_dict(self) -> dict:
        return {"board": self.board, "device": self.device, "seconds": self.seconds, "spread": self.spread,
                "reason": self.reason, "checked": self.checked, "baselines": self.baselines,
                "shapes": [{"shape": s.shape, "median": s.median, "spread": s.spread, "overhead": s.overhead,
                            "iterations": s.iterations, "seconds": s.seconds} for s in self.shapes]}


class NoRank(Exception):
    """A board check failed: the submission gets no time (the message says which)."""


def derive_seeds(public: int, secret: int, count: int) -> list[int]:
    rng = random.Random(f"{public}:{secret}")
    return [rng.getrandbits(62) for _ in range(count)]


def device_peaks(device: str) -> dict | None:
    name = torch.cuda.get_device_name(device) if device != "cpu" and torch.cuda.is_available() else ""
    return next((v for k, v in DEVICE_PEAKS.items() if k in name), None)


@dataclass
class Harness:
    """What the judge needs of the assignment's harness for one board: inputs from a seed
    (on the device, identical to the child's), the call (the judge's null loop and truth
    use the same), the truth, and the shape's minimum traffic and FLOPs."""
    make_inputs: Callable[[dict, int, str], tuple]
    truth: Callable[[dict, tuple], list[torch.Tensor]]
    null_output: Callable[[dict, tuple], Any]
    cost: Callable[[dict], tuple[float, float]]   # (bytes moved at least, FLOPs)
    # name -> call(shape, inputs): trusted implementations timed by the judge itself
    # with the same loop, in the same run, on the same shapes (GPU only)
    baselines: dict = field(default_factory=dict)


def _verify(board: Board, harness: Harness, shape: dict, device: str, seeds: list[int], commits: list,
            picked: list[int], revealed: Any) -> None:
    if not isinstance(revealed, list) or len(revealed) != len(picked):
        raise NoRank("the revealed outputs are not the ones asked for")
    for i, outs in zip(picked, revealed):
        if not isinstance(outs, list) or not all(isinstance(t, torch.Tensor) for t in outs):
            raise NoRank(f"iteration {i}: the revealed output is not a list of tensors")
        if [fingerprint(t) for t in outs] != commits[i]:
            raise NoRank(f"iteration {i}: the output revealed after the timed loop is not the one committed inside it "
                         "(work finished after the window, or an output made up)")
        want = harness.truth(shape, harness.make_inputs(shape, seeds[i], device))
        if len(outs) != len(want):
            raise NoRank(f"iteration {i}: {len(outs)} outputs, expected {len(want)}")
        for k, (got, ref) in enumerate(zip(outs, want)):
            if got.shape != ref.shape:
                raise NoRank(f"iteration {i}, output {k}: shape {list(got.shape)}, expected {list(ref.shape)}")
            err = (got.double().cpu() - ref.double().cpu()).abs()
            bound = board.atol + board.rtol * ref.double().cpu().abs()
            if not bool(torch.isfinite(got).all()) or bool((err > bound).any()):
                worst = float((err - bound).max())
                raise NoRank(f"iteration {i}, output {k}: off the truth by up to {float(err.max()):.3g} "
                             f"(tolerance {board.atol} + {board.rtol} |truth|; {worst:.3g} over): a precision "
                             "downgrade or wrong work")


def _judge_loop(call, harness: Harness, shape: dict, seeds: list[int], device: str, l2_bytes: int) -> float:
    """Seconds per iteration of the timed loop run in this (the judge's) process."""
    started = time.perf_counter()
    timed.run(call, lambda s: harness.make_inputs(shape, s, device), seeds, device, l2_bytes)
    return (time.perf_counter() - started) / len(seeds)


def _null_loop(harness: Harness, shape: dict, seeds: list[int], device: str, l2_bytes: int) -> float:
    """Seconds per iteration of the loop with a call that does nothing, in this process."""
    out = harness.null_output(shape, harness.make_inputs(shape, seeds[0], device))
    return _judge_loop(lambda inputs: out, harness, shape, seeds, device, l2_bytes)


def time_baselines(board: Board, harness: Harness, device: str, l2_bytes: int, iterations: int = 10) -> dict:
    """Each baseline's board time (geometric mean over the shapes of the median of
    `board.loops` loops, less the null loop), measured in the judge's process."""
    out = {}
    for name, fn in harness.baselines.items():
        medians = []
        for shape in board.shapes:
            seeds = derive_seeds(0, 2, iterations)
            call = lambda inputs, fn=fn, shape=shape: fn(shape, inputs)  # noqa: E731
            _judge_loop(call, harness, shape, seeds[:2], device, l2_bytes)  # warm-up
            overhead = _null_loop(harness, shape, seeds, device, l2_bytes)
            medians.append(statistics.median(_judge_loop(call, harness, shape, seeds, device, l2_bytes) - overhead
                                             for _ in range(board.loops)))
        if all(m > 0 for m in medians):
            out[name] = math.exp(sum(math.log(m) for m in medians) / len(medians))
    return out


def time_board(student, board: Board, harness: Harness, device: str, public_seed: int = 0,
               rng: random.Random | None = None) -> BoardResult:
    """Time `student`'s board function on every shape of `board`; never raises for the
    student's doing (the result's `reason` says why there is no time)."""
    rng = rng or random.SystemRandom()
    peaks = device_peaks(device)
    name = torch.cuda.get_device_name(device) if device != "cpu" and torch.cuda.is_available() else "cpu"
    result = BoardResult(board.name, name)
    l2 = (peaks or {}).get("l2_bytes", 0) if device != "cpu" else 0
    shapes = list(board.shapes)
    rng.shuffle(shapes)

    def loop(shape: dict, count: int) -> tuple[float, list[int], list]:
        seeds = derive_seeds(public_seed, secrets.randbits(62), count)
        started = time.perf_counter()
        reply = student.task(board.run_task, shape, seeds, l2_bytes=l2, what=f"the timed loop of {board.function}").value
        wall = time.perf_counter() - started
        commits = reply.get("commits") if isinstance(reply, dict) else None
        if not isinstance(commits, list) or len(commits) != count:
            raise NoRank("the timed loop did not commit to one output per iteration")
        return wall, seeds, commits

    try:
        for shape in shapes:
            loop(shape, 2)  # warm-up: compilation, autotuning, caches (not timed, not kept)
            student.task(board.reveal_task, [], what="dropping the warm-up's outputs")
            wall, seeds, commits = loop(shape, 2)
            student.task(board.reveal_task, [], what="dropping the calibration's outputs")
            n = max(2, min(board.max_iterations, math.ceil(board.seconds_per_loop / max(wall / 2, 1e-6))))
            overhead = min(_null_loop(harness, shape, derive_seeds(public_seed, 1, n), device, l2) for _ in range(2))
            per_loop = []
            for _ in range(board.loops):
                wall, seeds, commits = loop(shape, n)
                picked = rng.sample(range(n), min(board.reveal, n))
                revealed = student.task(board.reveal_task, picked, what="revealing timed outputs").value
                _verify(board, harness, shape, device, seeds, commits, picked, revealed)
                result.checked += len(picked)
                per_loop.append(wall / n - overhead)
            timing = ShapeTiming(shape, per_loop, overhead, n)
            if peaks is not None:
                nbytes, flops = harness.cost(shape)
                floor = max(nbytes / peaks["bytes_per_s"], flops / peaks["flops"])
                if timing.median < floor:
                    raise NoRank(f"shape {shape}: {timing.median * 1e6:.1f} us per call is under the least this "
                                 f"device needs ({floor * 1e6:.1f} us for its memory traffic and FLOPs)")
            result.shapes.append(timing)
    except NoRank as e:
        result.reason = str(e)
        return result
    except Exception as e:  # noqa: BLE001 - the student's loop raised, timed out or crashed
        result.reason = f"the timed loop failed: {type(e).__name__}: {str(e)[:300]}"
        return result
    medians = [s.median for s in result.shapes]
    if any(m <= 0 for m in medians):
        result.reason = "a time at or under the loop's own cost (nothing measurable was left)"
        return result
    result.seconds = math.exp(sum(math.log(m) for m in medians) / len(medians))
    result.spread = max(s.spread for s in result.shapes)
    if device != "cpu" and harness.baselines:
        try:
            result.baselines = time_baselines(board, harness, device, l2)
        except Exception as e:  # noqa: BLE001 - a baseline's failure is the course's, never the student's
            result.baselines = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return result
