"""Harness of `ring_allreduce`: trusted code that runs in the sandboxed child.

One process per rank, each in a process group of its own making inside the sandbox (gloo
over loopback, NCCL with one GPU per rank), all of it done by `autograder.child.ranks`:
this file says what one case of the ring is. Every collective but `barrier` raises in the
ranks; bytes sent are counted per rank; a deadlock is killed and reported. The judge sees
only tensors and strings.
"""

from __future__ import annotations

import torch

from autograder.child import ranks


def _run_case(ns, case, device):
    op = case["op"]
    if op == "noop":  # the process group alone: the judge's baseline for loopback bytes
        return None
    if op in ("reduce_scatter", "all_gather"):
        x = case["input"].to(device)  # on the CPU: the judge's tensor itself, in the shared file
        if op == "reduce_scatter":
            value = ns["ring_reduce_scatter"](x)
        else:
            value = ns["ring_all_gather"](x, case["numel"])
        if x is not case["input"]:
            # A rank on a GPU worked on its own copy: the input goes back to the host tensor,
            # which the judge reads back (a change there is a change the student made).
            case["input"].copy_(x.detach().cpu())
        return value
    if op == "all_reduce":
        t = case["input"].to(device).clone()
        ns["ring_all_reduce"](t)  # in place: what it returns is ignored
        return t
    if op == "average_gradients":
        from autograder.protocol.specs import build

        model = build("mlp", dict(case["model"]))
        model.to(device)
        x, y = case["x"].to(device), case["y"].to(device)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        ns["average_gradients"](model)
        return [p.grad.detach().clone() if p.grad is not None else None for p in model.parameters()]
    raise ValueError(f"unknown case {op!r}")


def run_ranks(ns, world, cases, timeout=30.0, device="cpu"):
    """cases: a list of per-rank lists (case[rank] = {"op": ..., ...}). Returns
    {"results": [per rank: [per case: {...}]], "error": str | None}."""
    return ranks.run_ranks(ns, world, cases, _run_case, timeout, device)
