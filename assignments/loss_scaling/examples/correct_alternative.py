"""A correct solution written differently: the scale kept as a float32 tensor, unscale_ by
multiplication with the reciprocal (exact for power-of-two scales, as GradScaler does),
torch._foreach-free loops, state kept in a dict, FP8 max from a table. Full marks."""
import torch

_MAX = {"e4m3": (torch.float8_e4m3fn, 448.0), "e5m2": (torch.float8_e5m2, 57344.0)}


class DynamicLossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.state = {"scale": torch.tensor(float(init_scale), dtype=torch.float32), "growth": growth_factor,
                      "backoff": backoff_factor, "interval": growth_interval, "tracker": 0}

    def scale(self, loss):
        return loss * self.state["scale"].to(loss.dtype).item()

    def unscale_(self, grads):
        inv = float((1.0 / self.state["scale"].double()).float())
        bad = False
        for g in grads:
            g.copy_(g.to(torch.float32) * inv)
            bad = bad or not bool(torch.isfinite(g).all())
        return bad

    def update(self, found_inf):
        st = self.state
        if found_inf:
            st["scale"] = st["scale"] * st["backoff"]
            st["tracker"] = 0
            return
        st["tracker"] += 1
        if st["tracker"] >= st["interval"]:
            grown = st["scale"] * st["growth"]
            if bool(torch.isfinite(grown)):  # as GradScaler: never grow to inf
                st["scale"] = grown
            st["tracker"] = 0

    def get_scale(self):
        return float(self.state["scale"])

    def state_dict(self):
        return {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in self.state.items()}

    def load_state_dict(self, state):
        self.state = dict(state)
        self.state["scale"] = torch.tensor(float(state["scale"]), dtype=torch.float32)


def mixed_precision_sgd_step(model, master_params, x, y, loss_fn, lr, scaler):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    grads = [p.grad.detach().to(torch.float32) for p in model.parameters()]
    skipped = scaler.unscale_(grads)
    if not skipped:
        with torch.no_grad():
            for p, m, g in zip(model.parameters(), master_params, grads):
                m.add_(g, alpha=-lr)
                p.copy_(m.to(p.dtype))
    scaler.update(skipped)
    return float(loss), skipped


def fp8_quantize(x, fmt="e4m3"):
    dtype, top = _MAX[fmt]
    amax = x.detach().abs().amax().to(torch.float32)
    scale = torch.where(amax > 0, amax / top, torch.ones_like(amax))
    return (x.to(torch.float32) / scale).clamp(-top, top).to(dtype), scale


def fp8_dequantize(x_fp8, scale):
    return x_fp8.to(torch.float32).mul(scale)
