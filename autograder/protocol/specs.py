"""Registered problem specs: trusted builders for the objects a test hands to student code.

The judge sends `Spec(name, params)`; the receiving side calls `build(name, params)`,
which runs only the builders registered here. Params are protocol values (numbers,
strings, tensors), so a spec carries a whole model (architecture and weights) without
any code crossing over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .codec import ProtocolError, Spec

_BUILDERS: dict[str, Callable[..., Any]] = {}


def register(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn

    return deco


def build(name: str, params: Any) -> Any:
    if name not in _BUILDERS:
        raise ProtocolError(f"unknown problem spec {name!r}")
    if not isinstance(params, dict):
        raise ProtocolError("spec params must be a dict")
    return _BUILDERS[name](**params)


def mlp_spec(sizes: list[int], state: dict[str, torch.Tensor] | None = None,
             activation: str = "tanh", dtype: torch.dtype = torch.float32) -> Spec:
    return Spec("mlp", {"sizes": list(sizes), "state": state or {}, "activation": activation,
                        "dtype": dtype})


_ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "gelu": torch.nn.GELU}


@register("mlp")
def build_mlp(sizes, state, activation="tanh", dtype=torch.float32, device=None) -> torch.nn.Module:
    """A multilayer perceptron: Linear layers of `sizes`, `activation` between them,
    weights from `state` (a state_dict) when given."""
    if activation not in _ACTIVATIONS:
        raise ProtocolError(f"unknown activation {activation!r}")
    if not (isinstance(sizes, list) and 2 <= len(sizes) <= 16 and all(isinstance(s, int) and 0 < s <= 1 << 16 for s in sizes)):
        raise ProtocolError("malformed mlp sizes")
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    model = torch.nn.Sequential(*layers).to(dtype)
    if state:
        model.load_state_dict(state)
    if device is not None:
        model = model.to(device)
    return model


_LOSSES = {
    "mse": torch.nn.functional.mse_loss,
    "cross_entropy": torch.nn.functional.cross_entropy,
}


@register("loss")
def build_loss(name: str) -> Callable[..., torch.Tensor]:
    if name not in _LOSSES:
        raise ProtocolError(f"unknown loss {name!r}")
    return _LOSSES[name]


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
