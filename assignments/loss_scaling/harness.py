"""Trusted harness tasks for `loss_scaling`: drive the student's scaler and training step
in the sandbox. The judge runs the same tasks with the reference in its own process."""

from __future__ import annotations

import torch


def scaler_script(ns, init_kwargs, ops):
    """Apply `ops` to a DynamicLossScaler(**init_kwargs); return what each op gives back.

    ops: {"op": "update", "found_inf": bool} | {"op": "get_scale"} | {"op": "scale", "loss": tensor}
    | {"op": "unscale", "grads": [tensors]} | {"op": "state_dict"} | {"op": "reload"} (a fresh
    scaler loaded from this one's state_dict replaces it)."""
    Scaler = ns["DynamicLossScaler"]
    scaler = Scaler(**init_kwargs)
    out = []
    for op in ops:
        kind = op["op"]
        if kind == "update":
            scaler.update(op["found_inf"])
            out.append(None)
        elif kind == "get_scale":
            out.append(float(scaler.get_scale()))
        elif kind == "scale":
            out.append(scaler.scale(op["loss"]))
        elif kind == "unscale":
            grads = [g.clone() for g in op["grads"]]
            found = scaler.unscale_(grads)
            out.append({"found_inf": bool(found), "grads": grads})
        elif kind == "state_dict":
            out.append({k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in scaler.state_dict().items()})
        elif kind == "reload":
            fresh = Scaler()
            fresh.load_state_dict(scaler.state_dict())
            scaler = fresh
            out.append(None)
    return out


# The loss functions a test may hand the student's step (by name: the task's arguments are data).
LOSSES = {"mse": torch.nn.functional.mse_loss, "l1": torch.nn.functional.l1_loss,
          "smooth_l1": torch.nn.functional.smooth_l1_loss}


def train_mixed_precision(ns, model, X, Y, lr, scaler_kwargs, overflow_steps=(), overflow_factor=1e4, loss="mse"):
    """Run mixed_precision_sgd_step over the batches X[t], Y[t] with float32 masters of the
    (low-precision) model; the targets of the steps in `overflow_steps` are multiplied by
    `overflow_factor`, so that the float16 loss (squares of about 1e9) overflows. `loss`
    names the loss_fn handed to the step (LOSSES)."""
    step = ns["mixed_precision_sgd_step"]
    loss_fn = LOSSES[loss]
    scaler = ns["DynamicLossScaler"](**scaler_kwargs)
    masters = [p.detach().float().clone() for p in model.parameters()]
    losses, skipped, scales, masters_after = [], [], [], []
    for t in range(X.shape[0]):
        y = Y[t] * overflow_factor if t in overflow_steps else Y[t]
        before = [m.clone() for m in masters]
        dtype = next(model.parameters()).dtype
        value, skip = step(model, masters, X[t].to(dtype), y.to(dtype), loss_fn, lr, scaler)
        losses.append(float(value))
        skipped.append(bool(skip))
        scales.append(float(scaler.get_scale()))
        masters_after.append(all(torch.equal(a, b) for a, b in zip(before, masters)))
    return {"losses": losses, "skipped": skipped, "scales": scales, "unchanged": masters_after,
            "masters": [m.clone() for m in masters], "model": [p.detach().clone() for p in model.parameters()],
            "model_dtypes": [str(p.dtype) for p in model.parameters()]}
