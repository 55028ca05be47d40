"""Harness of `attention`: the leaderboards' tasks (autograder/judge/boards.py decides
everything; autograder/child/timed.py runs the loop) and what the judge needs to check
them (inputs from a seed, the float64 truth, the least work a shape needs).

Two boards, both in bfloat16: "flash-forward" times `flash_attention_triton(q, k, v,
causal)`; "flash-forward-backward" times it followed by
`flash_attention_triton_backward(do, q, k, v, o, lse, causal)`. A shape is a table
{"b", "h", "n", "d", "causal"}; every iteration's q, k, v (and dO) are fresh draws from
the iteration's seed, on the grading device.
"""

from __future__ import annotations

import torch

from autograder.child import timed

FORWARD, BACKWARD = "flash_attention_triton", "flash_attention_triton_backward"
DTYPE = torch.bfloat16


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(shape: dict, seed: int, device: str, backward: bool = False) -> tuple:
    g = torch.Generator(device=device).manual_seed(seed)
    size = (shape["b"], shape["h"], shape["n"], shape["d"])
    dtype = DTYPE if device != "cpu" else torch.float32  # the interpreter on CPUs: float32
    count = 4 if backward else 3
    return tuple(torch.randn(size, generator=g, device=device).to(dtype) for _ in range(count))


def _board_call(ns, shape: dict, backward: bool):
    forward, causal = ns[FORWARD], bool(shape["causal"])
    if not backward:
        return lambda inputs: forward(*inputs, causal=causal)
    bwd = ns[BACKWARD]

    def both(inputs):
        q, k, v, do = inputs
        o, lse = forward(q, k, v, causal=causal)
        return (o, lse, *bwd(do, q, k, v, o, lse, causal=causal))

    return both


def board_run(ns, shape: dict, seeds: list[int], l2_bytes: int = 0, backward: bool = False) -> dict:
    device = _device()
    return timed.run(_board_call(ns, shape, backward), lambda s: make_inputs(shape, s, device, backward), seeds,
                     device, l2_bytes)


def board_run_backward(ns, shape: dict, seeds: list[int], l2_bytes: int = 0) -> dict:
    return board_run(ns, shape, seeds, l2_bytes, backward=True)


def board_reveal(ns, indices: list[int]) -> list:
    return timed.reveal(indices)


# -- the judge's side (imported there, never trusted from the child) ------------------------------
def truth(shape: dict, inputs: tuple, backward: bool = False) -> list[torch.Tensor]:
    """o, lse (and dq, dk, dv) in float64 from the same (rounded) inputs."""
    from reference import attention as ref

    q, k, v = (t.double() for t in inputs[:3])
    causal = bool(shape["causal"])
    o, lse = ref.attention_forward(q, k, v, causal)
    if not backward:
        return [o, lse]
    return [o, lse, *ref.attention_backward(inputs[3].double(), q, k, v, o, lse, causal)]


def null_output(shape: dict, inputs: tuple, backward: bool = False):
    q = inputs[0]
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    return (torch.empty_like(q), lse) + ((torch.empty_like(q),) * 3 if backward else ())


def cost(shape: dict, backward: bool = False) -> tuple[float, float]:
    """(bytes at least: inputs read and outputs written once; FLOPs of the matmuls:
    4 B H N^2 D, halved when causal, x 3.5 with the backward)."""
    b, h, n, d = shape["b"], shape["h"], shape["n"], shape["d"]
    elems = b * h * n * d
    nbytes = (3 * elems + elems) * 2 + b * h * n * 4
    flops = 4 * b * h * n * n * d / (2 if shape["causal"] else 1)
    if backward:
        nbytes += 4 * elems * 2
        flops *= 3.5
    return float(nbytes), float(flops)


def _reference(shape, inputs, backward):
    from reference import triton_flash_attention as tfa

    causal = bool(shape["causal"])
    o, lse = tfa.flash_attention_forward(*inputs[:3], causal=causal)
    return (o, lse, *tfa.flash_attention_backward(inputs[3], *inputs[:3], o, lse, causal=causal)) if backward else (o, lse)


def _sdpa(shape, inputs, backward):
    causal = bool(shape["causal"])
    if not backward:
        return torch.nn.functional.scaled_dot_product_attention(*inputs[:3], is_causal=causal)
    leaves = [t.detach().requires_grad_() for t in inputs[:3]]
    o = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=causal)
    o.backward(inputs[3])
    return (o, *(t.grad for t in leaves))


def board_harness(board: str) -> dict:
    """The judge's side of a board, by name: inputs, truth, a do-nothing output, cost, and
    the baselines the judge times itself (the Triton reference, PyTorch's SDPA)."""
    backward = board == "flash-forward-backward"
    return {"make_inputs": lambda shape, seed, device: make_inputs(shape, seed, device, backward),
            "truth": lambda shape, inputs: truth(shape, inputs, backward),
            "null_output": lambda shape, inputs: null_output(shape, inputs, backward),
            "cost": lambda shape: cost(shape, backward),
            "baselines": {"reference": lambda shape, inputs: _reference(shape, inputs, backward),
                          "sdpa": lambda shape, inputs: _sdpa(shape, inputs, backward)}}
