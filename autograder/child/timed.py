"""The timed loop of a kernel leaderboard, as it runs in the child (the judge's side, which
decides everything, is autograder/judge/boards.py).

Nothing here is trusted: it runs in the student's process, which may rewrite it. What
the judge takes from it is checked from outside: the judge times the whole task with its
own clock; each iteration's inputs come from seeds it sends only with the task; each
output's fingerprint is a commitment the loop must send inside the timed window, and the
judge, after the window, asks for a random sample of those outputs and checks them
against the commitments and against its own truth. A loop that skips work, reuses an
output, finishes on another stream after replying, or commits to anything but the
finished output, fails one of those checks; one that is merely slower only loses time.

Per iteration: fresh inputs (generated on the device from the iteration's seed), the L2
cache flushed (a buffer twice its size written), the call, the whole device synchronised
(work on any stream is counted), the output's fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from autograder.protocol.fingerprint import fingerprint

_KEPT: dict[str, list] = {"outputs": []}


def flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of an output (a tensor, or a tuple/list of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for o in out for t in flatten(o)]
    raise TypeError(f"a timed function must return tensors, not {type(out).__name__}")


def commit(out: Any) -> list[int]:
    return [fingerprint(t) for t in flatten(out)]


def flush_buffer(device: str, l2_bytes: int) -> torch.Tensor | None:
    if device == "cpu" or l2_bytes <= 0:
        return None
    return torch.empty(2 * l2_bytes // 4, dtype=torch.int32, device=device)


def run(call: Callable[[tuple], Any], make_inputs: Callable[[int], tuple], seeds: list[int], device: str,
        l2_bytes: int = 0) -> dict:
    """Run `call(make_inputs(seed))` once per seed; returns {"commits": [[fingerprints of
    each output's tensors] per iteration]} and keeps the outputs for `reveal`."""
    flush = flush_buffer(device, l2_bytes)
    cuda = device != "cpu"
    commits, outputs = [], []
    for seed in seeds:
        inputs = make_inputs(seed)
        if flush is not None:
            flush.fill_(seed & 0xFF)
        out = call(inputs)
        if cuda:
            torch.cuda.synchronize()  # the device, not a stream: work anywhere is inside the window
        commits.append(commit(out))
        outputs.append(out)
    _KEPT["outputs"] = outputs
    return {"commits": commits}


def reveal(indices: list[int]) -> list:
    """The outputs of the last run at `indices` (on the host), then forgets them all."""
    outputs, _KEPT["outputs"] = _KEPT["outputs"], []
    return [[t.detach().cpu() for t in flatten(outputs[i])] for i in indices]
