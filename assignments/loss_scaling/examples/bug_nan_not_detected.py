"""unscale_ checks for inf only (torch.isinf), not NaN."""
import math
import torch
class DynamicLossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self._scale = float(init_scale)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self._good_steps = 0

    def scale(self, loss):
        return loss * self._scale

    def unscale_(self, grads):
        """Divide every gradient in place by the scale (float32 arithmetic); True if any is inf/NaN."""
        found_inf = False
        for g in grads:
            g.copy_(g.float() / self._scale)
            found_inf = found_inf or torch.isinf(g).any().item()
        return found_inf

    def update(self, found_inf):
        if found_inf:
            self._scale *= self.backoff_factor
            self._good_steps = 0
        else:
            self._good_steps += 1
            if self._good_steps == self.growth_interval:
                if math.isfinite(self._scale * self.growth_factor):
                    self._scale *= self.growth_factor
                self._good_steps = 0

    def get_scale(self):
        return self._scale

    def state_dict(self):
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "good_steps": self._good_steps}

    def load_state_dict(self, state):
        self._scale = float(state["scale"])
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._good_steps = int(state["good_steps"])
def mixed_precision_sgd_step(model, master_params, x, y, loss_fn, lr, scaler):
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
                m -= lr * g
                p.copy_(m)
    scaler.update(found_inf)
    return loss.item(), bool(found_inf)
FP8_FORMATS = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
def fp8_quantize(x, fmt="e4m3"):
    dtype = FP8_FORMATS[fmt]
    amax = x.abs().max().float()
    if amax == 0:
        scale = torch.tensor(1.0, dtype=torch.float32, device=x.device)
    else:
        scale = (amax / torch.finfo(dtype).max).to(torch.float32)
    return (x.float() / scale).to(dtype), scale
def fp8_dequantize(x_fp8, scale):
    return x_fp8.float() * scale
