"""Trusted harness tasks for `adam`: run next to the student's code in the sandbox.

Each task takes the student's namespace first. The judge runs the very same task
in its own process with `torch.optim.AdamW` in the namespace, and compares.
"""

from __future__ import annotations

import torch


def train_adamw(ns, model, X, Y, groups, defaults, steps, use_closure=False, extra_frozen=False,
                intermittent=False, schedule=(), reload_at=(), tiny=False):
    """Train `model` (an mlp spec, built here) on MSE(model(X), Y) for `steps` steps with
    `ns["AdamW"]`. `groups`: None for `model.parameters()`, else a list of dicts with
    "layers" (indices into the model's parameter list) and per-group options.
    `intermittent`: one more parameter that gets a gradient only on every third step
    (its .grad is None on the others), so its own step count differs from the number of
    step() calls: bias correction must use the parameter's count, as torch's does.
    `schedule`: [step, {option: value}] pairs: before that step, every group's options are
    set to those values (what an LR scheduler does). `reload_at`: before each of those steps
    the optimizer is replaced by a new AdamW over the same parameters loaded with
    `load_state_dict(opt.state_dict())` (a checkpoint resumed). `tiny`: one more parameter
    whose gradient is about 1e-9, where sqrt(v) is near the default eps (1e-8): the update
    there shows which eps the optimizer uses (returned as "tiny").
    Returns the final parameters, the losses, and what step(closure) returned."""
    AdamW = ns["AdamW"]
    params = list(model.parameters())
    frozen = None
    if extra_frozen:
        # A parameter the loss never touches: its .grad stays None and AdamW must skip it.
        frozen = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 7, dtype=params[0].dtype))
    sometimes = None
    if intermittent:
        sometimes = torch.nn.Parameter(torch.linspace(0.5, -0.5, 5, dtype=params[0].dtype))
    small = torch.nn.Parameter(torch.linspace(0.25, -0.25, 4, dtype=params[0].dtype)) if tiny else None
    extra = [p for p in (frozen, sometimes, small) if p is not None]
    if groups is None:
        arg = params + extra
    else:
        arg = []
        for g in groups:
            entry = {k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "layers"}
            entry["params"] = [params[i] for i in g["layers"]]
            arg.append(entry)
        arg[0]["params"] += extra
    options = {k: (tuple(v) if k == "betas" else v) for k, v in defaults.items()}
    opt = AdamW(arg, **options)
    changes = {int(at): dict(values) for at, values in schedule}
    losses, returned = [], []
    for k in range(steps):
        for group in opt.param_groups:
            group.update(changes.get(k, {}))
        if k in reload_at:
            saved = opt.state_dict()
            opt = AdamW(arg, **options)
            opt.load_state_dict(saved)
        def closure(k=k, opt=opt):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X), Y)
            if sometimes is not None and k % 3 == 2:
                loss = loss + 0.5 * ((sometimes - 0.3) ** 2).sum()
            if small is not None:
                loss = loss + 1e-9 * (small * torch.tensor([1.0, 0.7, 1.3, 0.4], dtype=small.dtype,
                                                           device=small.device)).sum()
            loss.backward()
            return loss

        if use_closure:
            out = opt.step(closure)
            returned.append(float(out) if isinstance(out, torch.Tensor) else out)
            losses.append(float(out.detach()) if isinstance(out, torch.Tensor) else float("nan"))
        else:
            loss = closure()
            opt.step()
            losses.append(float(loss.detach()))
    return {"params": [p.detach().clone() for p in params],
            "frozen": frozen.detach().clone() if frozen is not None else None,
            "sometimes": sometimes.detach().clone() if sometimes is not None else None,
            "tiny": small.detach().clone() if small is not None else None,
            "losses": losses, "returned": returned}
