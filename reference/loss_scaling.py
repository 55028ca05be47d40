r"""Reference dynamic loss scaling, mixed-precision SGD and FP8 quantization.

Dynamic loss scaling (the rule of `torch.amp.GradScaler`, `_amp_update_scale_`): with
scale $s$, growth factor $\gamma$, backoff $\beta$, interval $K$ and a count $c$ of good steps:
on a step whose unscaled gradients hold an inf or NaN, $s \leftarrow \beta s$ and $c \leftarrow 0$;
otherwise $c \leftarrow c + 1$ and, when $c = K$, $s \leftarrow \gamma s$ (if that stays finite) and $c \leftarrow 0$.
Gradients are unscaled in float32: $g \leftarrow g \cdot (1/s)$, as GradScaler multiplies by the
float32 reciprocal.

Mixed-precision SGD step: forward and backward in the model's low precision on the
scaled loss $s\,\ell$; gradients copied to float32 and unscaled; skip the step on
inf/NaN; else $w \leftarrow w - \eta g$ on the float32 masters, copied back to the model.

FP8 (per-tensor scaling): $\sigma = \max|x| / M$ with $M$ = 448 (e4m3fn) or 57344 (e5m2)
($\sigma = 1$ for an all-zero $x$); $q = \operatorname{fp8}(x / \sigma)$; $\hat x = q\,\sigma$.
"""

from __future__ import annotations

import math
import struct

import torch
from torch import Tensor

FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def _f32(x: float) -> float:
    """Round to float32, as GradScaler keeps its scale in a float32 tensor."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


class DynamicLossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self._scale = _f32(float(init_scale))
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self._growth_tracker = 0

    def scale(self, loss: Tensor) -> Tensor:
        return loss * self._scale

    def unscale_(self, grads: list[Tensor]) -> bool:
        inv = torch.tensor(1.0 / self._scale, dtype=torch.float32)
        found = False
        for g in grads:
            g.copy_((g.float() * inv.to(g.device)).to(g.dtype))
            found |= not bool(torch.isfinite(g).all())
        return found

    def update(self, found_inf: bool) -> None:
        if found_inf:
            self._scale = _f32(self._scale * _f32(self.backoff_factor))
            self._growth_tracker = 0
            return
        self._growth_tracker += 1
        if self._growth_tracker == self.growth_interval:
            grown = _f32(self._scale * _f32(self.growth_factor))
            if math.isfinite(grown):
                self._scale = grown
            self._growth_tracker = 0

    def get_scale(self) -> float:
        return self._scale

    def state_dict(self) -> dict:
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: dict) -> None:
        self._scale = float(state["scale"])
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])


def mixed_precision_sgd_step(model, master_params, x, y, loss_fn, lr, scaler) -> tuple[float, bool]:
    params = list(model.parameters())
    for p in params:
        p.grad = None
    loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    grads = [p.grad.float() if p.grad is not None else torch.zeros_like(m) for p, m in zip(params, master_params)]
    found_inf = scaler.unscale_(grads)
    if not found_inf:
        with torch.no_grad():
            for p, m, g in zip(params, master_params, grads):
                m.sub_(lr * g)
                p.copy_(m.to(p.dtype))
    scaler.update(found_inf)
    return float(loss.detach().float()), found_inf


def fp8_quantize(x: Tensor, fmt: str = "e4m3") -> tuple[Tensor, Tensor]:
    dtype = FP8[fmt]
    amax = x.abs().max().float()
    scale = amax / torch.finfo(dtype).max if float(amax) > 0 else torch.tensor(1.0)
    scale = scale.to(torch.float32).to(x.device)
    return (x.float() / scale).to(dtype), scale


def fp8_dequantize(x_fp8: Tensor, scale: Tensor) -> Tensor:
    return x_fp8.float() * scale
