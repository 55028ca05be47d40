"""Harness of `ring_allreduce`: trusted code that runs in the sandboxed child.

`run_ranks` forks `world` processes from the child (the student's functions are
already loaded there), each joins a process group of its own making (gloo over
loopback inside the sandbox's network namespace, rendezvous through a file in the
private /tmp; NCCL when there is one GPU per rank), runs a list of cases with the
student's functions, and sends back its results, the bytes it sent through
send/isend/batch_isend_irecv, and any error: `autograder.child.ranks` does all of
that, this file says what one case is. Collectives other than `barrier` raise in
every rank; a rank that does not finish in time (a deadlock) is killed and reported.
The judge sees only tensors and strings.
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
