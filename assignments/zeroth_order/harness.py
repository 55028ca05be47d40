"""Harness of `zeroth_order`: trusted code that runs next to the student's functions in
the sandboxed child. Models arrive as registered specs (`mlp`), losses as `model_loss`
specs; a model is stored here under a key first, so a watched step measures only what
the student's step allocates, not the model's own construction."""

from __future__ import annotations

import torch

_MODELS: dict[str, torch.nn.Module] = {}


def _student(ns, fn):
    if fn not in ns:
        raise NameError(f"`{fn}` is not defined at the top level of your submission")
    return ns[fn]


def store_model(ns, key, model):
    _MODELS[key] = model
    return sum(p.numel() for p in model.parameters())


def warm_up(ns, key, loss_fn, batch):
    """On a GPU: one forward pass and one random draw on the stored model's device before a
    watched step, so that CUDA's libraries (cuBLAS, the generators) load their host memory
    outside the measured call: it is not the student's memory."""
    model = _MODELS[key]
    p = next(model.parameters())
    with torch.no_grad():
        float(loss_fn(model, batch))
        torch.randn(p.shape, device=p.device, dtype=p.dtype, generator=torch.Generator(p.device).manual_seed(0))
    return True


def drop_model(ns, key):
    _MODELS.pop(key, None)
    return True


def parameters(ns, key):
    return [p.detach().clone() for p in _MODELS[key].parameters()]


def step(ns, fn, key, loss_fn, batch, kwargs):
    """One call of the student's mezo_step / lozo_step on the stored model."""
    value = _student(ns, fn)(_MODELS[key], loss_fn, batch, **kwargs)
    if not isinstance(value, int | float | torch.Tensor) or (isinstance(value, torch.Tensor) and value.numel() != 1):
        raise TypeError(f"{fn} returned {type(value).__name__}; it must return projected_grad as a float")
    return float(value)


def train(ns, fn, key, loss_fn, batch, steps, kwargs, seed0, v_every=0):
    """`steps` calls with seeds seed0, seed0 + 1, ...; for lozo the V seed changes every
    `v_every` steps (the lazy update of V). Returns the loss before and after each step."""
    student = _student(ns, fn)
    model = _MODELS[key]
    losses = []
    with torch.no_grad():
        losses.append(float(loss_fn(model, batch)))
    for t in range(steps):
        kw = dict(kwargs, seed=seed0 + t)
        if v_every:
            kw["v_seed"] = seed0 + 100_000 + t // v_every
        student(model, loss_fn, batch, **kw)
        with torch.no_grad():
            losses.append(float(loss_fn(model, batch)))
    return losses
