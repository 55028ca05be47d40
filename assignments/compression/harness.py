"""Trusted tasks of `compression`: they run in the sandboxed child next to the student's
code (reached through `ns`) and return only data.

- `error_feedback_run` hands the student's `error_feedback_step` a compressor of the
  grader's (one of COMPRESSORS) and records what it was called with.
- `run_ranks` forks one process per rank (autograder.child.ranks: gloo over the
  sandbox's loopback, NCCL with a GPU per rank) and runs `local_sgd` or `gossip_average`
  in each; collectives raise in every rank except `all_reduce` in a `local_sgd` case. The
  judge counts the bytes the ranks sent from the kernel's count of the sandbox's
  loopback; the per-destination counts the ranks keep explain a failure.
"""

from __future__ import annotations

import torch

from autograder.child import ranks

# The child keeps the judge's tensors on the CPU: each rank moves its own inputs to its
# GPU. A child that touched CUDA before forking could not give its ranks NCCL.
HOST_TENSORS = True


def _top3(p):
    out = torch.zeros_like(p)
    idx = p.abs().topk(min(3, p.numel())).indices
    out[idx] = p[idx]
    return out


def _scaled_sign(p):
    return torch.sign(p) * p.abs().mean()


def _quarters(p):
    return torch.round(p * 4) / 4


# Compressors the grader hands over (each returns a dense tensor, as the contract says).
COMPRESSORS = {"top3": _top3, "scaled_sign": _scaled_sign, "quarters": _quarters}


def compress_with(name: str, p: torch.Tensor) -> torch.Tensor:
    """The judge's own copy of a compressor's output."""
    return COMPRESSORS[name](p)


def error_feedback_run(ns, grads, error, compressor):
    """Steps of `error_feedback_step` over `grads`, starting from `error`, with the
    grader's compressor `compressor`. Per step: the message, the new error and the inputs
    the compressor was called with."""
    calls: list = []

    def compress(p):
        calls.append(p.detach().clone())
        return COMPRESSORS[compressor](p)

    steps = []
    for g in grads:
        calls.clear()
        g_before, e_before = g.clone(), error.clone()
        out = ns["error_feedback_step"](g, error, compress)
        changed = [name for name, t, was in (("grad", g, g_before), ("error", error, e_before)) if not torch.equal(t, was)]
        if not isinstance(out, tuple | list) or len(out) != 2:
            steps.append({"returned": f"{type(out).__name__} {repr(out)[:100]}", "calls": list(calls)})
            break
        message, new_error = out
        if not all(isinstance(t, torch.Tensor) for t in out):
            steps.append({"returned": f"({', '.join(type(t).__name__ for t in out)})", "calls": list(calls)})
            break
        steps.append({"message": message.detach().clone(), "error": new_error.detach().clone(), "calls": list(calls),
                      "changed": changed, "error_in": e_before})
        error = new_error
    return steps


def _mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def _run_case(ns, case, device):
    op = case["op"]
    if op == "noop":  # the process group alone: the judge's baseline for loopback bytes
        return None
    if op == "gossip":
        x = case["x"].to(device)
        return ns["gossip_average"](x, list(case["weights"]))
    if op == "local_sgd":
        from autograder.protocol.specs import build

        model = build("mlp", dict(case["model"])).to(device)
        shard = [(x.to(device), y.to(device)) for x, y in case["shard"]]
        ns["local_sgd"](model, _mse, shard, case["lr"], case["local_steps"], case["rounds"])
        return [p.detach().clone() for p in model.parameters()]
    raise ValueError(f"unknown case {op!r}")


def _allow(case) -> frozenset:
    # all_reduce is local_sgd's own way to average (the contract allows it there only).
    return frozenset({"all_reduce"}) if case.get("op") == "local_sgd" else frozenset()


def run_ranks(ns, world, cases, timeout=30.0, device="cpu"):
    """cases: a list of per-rank lists (case[rank] = {"op": ..., ...})."""
    return ranks.run_ranks(ns, world, cases, _run_case, timeout, device, allow=_allow)


def estimates(ns, fn, x, param, seeds):
    """`fn` ("randk_compress" or "qsgd") of `x` for each seed, as dense float64 rows [N, d]
    (random-k's values put at their indices here, by trusted code). A call that fails or
    returns something else ends the run: {"error": ...}."""
    rows = []
    for seed in seeds:
        try:
            out = ns[fn](x, param, seed)
            if fn == "randk_compress":
                values, indices = out
                dense = torch.zeros(x.numel(), dtype=torch.float64, device=x.device)
                dense[indices.long()] = values.double()
            else:
                dense = out.double()
            if dense.numel() != x.numel():
                return {"error": f"{fn}(x, {param}, seed={seed}) gave {dense.numel()} entries, expected {x.numel()}"}
            rows.append(dense.reshape(-1).cpu())
        except Exception as e:  # noqa: BLE001 - the student's failure, reported
            return {"error": f"{fn}(x, {param}, seed={seed}) raised or returned something unusable: "
                             f"{type(e).__name__}: {e}"[:400]}
    return {"rows": torch.stack(rows)}
