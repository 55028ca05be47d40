"""Registered problem specs: trusted builders for the objects a test hands to student code.

The judge sends `Spec(name, params)`; the receiving side calls `build(name, params)`,
which runs only registered builders. Params are protocol values (numbers, strings,
tensors), so a spec carries a whole model (architecture and weights) without any code
crossing over.

The engine registers one generic builder, `mlp` (a model several assignments train).
Everything particular to an assignment (zeroth_order's objectives and model losses, for
one) is registered by that assignment's own harness (`register(name)` at import): the
engine loads the harness as trusted code in the child before any student code, and a
suite imports it on the judge's side (`autograder.judge.suite.load_module`).
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
