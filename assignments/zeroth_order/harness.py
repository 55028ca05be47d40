"""Harness of `zeroth_order`: trusted code that runs next to the student's functions in
the sandboxed child, and this assignment's problem set.

The objectives (`objective` specs: quadratic, logistic, MLP regression) and the model
losses (`model_loss` specs) are registered here, at import: the engine loads this file
in the child before any student code, the suites import it on the judge's side, and
both sides build the same object from the same data; no code crosses over. Models
arrive as the engine's generic `mlp` specs; a model is stored here under a key first,
so a watched step measures only what the student's step allocates, not the model's own
construction."""

from __future__ import annotations

from collections.abc import Callable

import torch

from autograder.protocol.codec import ProtocolError, Spec
from autograder.protocol.specs import build_mlp, register


# -- the problem set ---------------------------------------------------------------------
class Objective:
    """A trusted objective handed to student code: `f(x)` -> 0-dim tensor. The judge
    sends it as a spec (kind and data), never as code; both sides build the same one."""

    def __init__(self, kind: str, fn: Callable[[torch.Tensor], torch.Tensor], dim: int):
        self.kind, self._fn, self.dim = kind, fn, dim

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.numel() != self.dim:
            raise ValueError(f"this objective takes a tensor of {self.dim} elements, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        return self._fn(x.reshape(-1))

    def __repr__(self) -> str:
        return f"<{self.kind} objective of dimension {self.dim}>"


def objective_spec(kind: str, **data) -> Spec:
    return Spec("objective", {"kind": kind, **data})


def _tensor(value, name: str, dim: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != dim or not value.is_floating_point():
        raise ProtocolError(f"objective: {name} must be a floating tensor with {dim} dimension(s)")
    return value


@register("objective")
def build_objective(kind: str, **data) -> Objective:
    """quadratic: 0.5 x^T A x - b^T x; logistic: mean(softplus(-y * (X x))) + lam/2 |x|^2
    (labels y in {-1, +1}); mlp: the mean squared error of a tanh MLP of `sizes` on
    (X, Y), as a function of its parameters flattened in `parameters()` order."""
    if kind == "quadratic":
        a, b = _tensor(data.get("A"), "A", 2), _tensor(data.get("b"), "b", 1)
        if a.shape != (b.numel(), b.numel()):
            raise ProtocolError("objective: A must be d x d for b of d elements")
        return Objective(kind, lambda x: 0.5 * (x @ (a.to(x.dtype) @ x)) - b.to(x.dtype) @ x, b.numel())
    if kind == "logistic":
        xs, ys = _tensor(data.get("X"), "X", 2), _tensor(data.get("y"), "y", 1)
        lam = float(data.get("lam", 0.0))
        return Objective(kind, lambda w: torch.nn.functional.softplus(-ys.to(w.dtype) * (xs.to(w.dtype) @ w)).mean()
                         + 0.5 * lam * (w @ w), xs.shape[1])
    if kind == "mlp":
        sizes = data.get("sizes")
        model = build_mlp(sizes, {}, "tanh", torch.float64)
        shapes = [p.shape for p in model.parameters()]
        xs, ys = _tensor(data.get("X"), "X", 2), _tensor(data.get("Y"), "Y", 2)

        def mse(theta: torch.Tensor) -> torch.Tensor:
            h, i, out = xs.to(theta.dtype), 0, []
            for shape in shapes:
                n = int(torch.Size(shape).numel())
                out.append(theta[i:i + n].view(shape))
                i += n
            for layer in range(0, len(out), 2):
                h = h @ out[layer].T + out[layer + 1]
                if layer + 2 < len(out):
                    h = torch.tanh(h)
            return ((h - ys.to(theta.dtype)) ** 2).mean()

        return Objective(kind, mse, sum(int(torch.Size(s).numel()) for s in shapes))
    raise ProtocolError(f"unknown objective kind {kind!r}")


def _model_mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def _model_cross_entropy(model, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


_MODEL_LOSSES = {"mse": _model_mse, "cross_entropy": _model_cross_entropy}


@register("model_loss")
def build_model_loss(name: str) -> Callable[..., torch.Tensor]:
    """`loss_fn(model, batch)` of zeroth-order training: batch = (inputs, targets)."""
    if name not in _MODEL_LOSSES:
        raise ProtocolError(f"unknown model loss {name!r}")
    return _MODEL_LOSSES[name]


# -- tasks -------------------------------------------------------------------------------

_MODELS: dict[str, torch.nn.Module] = {}


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
    value = ns[fn](_MODELS[key], loss_fn, batch, **kwargs)
    if not isinstance(value, int | float | torch.Tensor) or (isinstance(value, torch.Tensor) and value.numel() != 1):
        raise TypeError(f"{fn} returned {type(value).__name__}; it must return projected_grad as a float")
    return float(value)


def train(ns, fn, key, loss_fn, batch, steps, kwargs, seed0, v_every=0):
    """`steps` calls with seeds seed0, seed0 + 1, ...; for lozo the V seed changes every
    `v_every` steps (the lazy update of V). Returns the loss before and after each step."""
    student = ns[fn]
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
