"""Trusted tasks of `muon`: they run in the sandbox next to the student's code (reached
through `ns`, the student's namespace) and return only data. The judge runs the very
same task in its own process with `reference.muon.TorchMuonAdamW` (torch.optim.Muon and
torch.optim.AdamW) as `ns["MuonAdamW"]`, and compares.
"""

from __future__ import annotations

import copy

import torch


def _groups(params, groups, as_iterators=False):
    out = []
    for g in groups:
        entry = {k: (tuple(v) if k == "betas" else v) for k, v in g.items() if k != "layers"}
        entry["params"] = [params[i] for i in g["layers"]]
        if as_iterators:
            entry["params"] = iter(entry["params"])
        out.append(entry)
    return out


def run_with_gradients(ns, initial, groups, grads, reload_at=(), schedule=(), as_iterators=False):
    """Parameters start at `initial` (a list of tensors); before step t every parameter i
    gets `.grad = grads[t][i]` (None: no gradient that step) and `step()` runs.
    `reload_at`: before those steps a new optimizer over the same parameters loads
    `opt.state_dict()` (a resumed checkpoint). `schedule`: [step, {option: value}] pairs
    set in every group before that step (an LR scheduler's way). `as_iterators`: every
    group's "params" is an iterator (as model.parameters() is a generator).
    Returns the parameters after every step."""
    params = [torch.nn.Parameter(p.clone()) for p in initial]
    opt = ns["MuonAdamW"](_groups(params, groups, as_iterators))
    changes = {int(at): dict(values) for at, values in schedule}
    history = []
    for t, step_grads in enumerate(grads):
        if t in reload_at:
            # A checkpoint as a new process would read it: a copy of the state dict, and
            # new parameter objects holding the same values (state kept anywhere but in
            # self.state, on the parameters or in the class, does not survive it).
            saved = copy.deepcopy(opt.state_dict())
            params = [torch.nn.Parameter(p.detach().clone()) for p in params]
            opt = ns["MuonAdamW"](_groups(params, groups))
            opt.load_state_dict(saved)
        for group in opt.param_groups:
            group.update(changes.get(t, {}))
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


def construction_error(ns, shapes, use_muon):
    """Build MuonAdamW over parameters of `shapes` in one group; the exception's type name,
    or None when construction succeeded."""
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    try:
        ns["MuonAdamW"]([{"params": params, "use_muon": use_muon}])
    except Exception as e:  # noqa: BLE001 - the type is the answer
        return type(e).__name__
    return None


def train_with_closure(ns, weights, X, Y, steps, muon_options, adamw_options):
    """A two-layer tanh network y = W2 tanh(W1 x + b1) + b2 trained on MSE with
    `step(closure)`: matrices in a Muon group, biases in an AdamW group. Returns the
    parameters after every step and what each `step(closure)` returned."""
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    W1, b1, W2, b2 = params
    opt = ns["MuonAdamW"]([{"params": [W1, W2], "use_muon": True, **muon_options},
                           {"params": [b1, b2], "use_muon": False, **adamw_options}])
    history, returned = [], []

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(torch.tanh(X @ W1.T + b1) @ W2.T + b2, Y)
        loss.backward()
        return loss

    for _ in range(steps):
        out = opt.step(closure)
        returned.append(float(out) if isinstance(out, torch.Tensor) else out)
        history.append([p.detach().clone() for p in params])
    return {"history": history, "returned": returned}
