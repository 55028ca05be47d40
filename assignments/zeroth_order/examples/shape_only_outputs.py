"""Degenerate: coordinate_gradient returns None and zo_gradient seeded noise of the right
shape. The inputs-unchanged and per-seed tests pay only functions that also compute (the
answer, or one sphere direction recomputed exactly). Found by the review in docs/known-gaps."""

import math

import torch


def coordinate_gradient(f, x, mu):
    return None  # DEGENERATE
    flat = x.reshape(-1)
    eye = torch.eye(flat.numel(), dtype=x.dtype, device=x.device) * mu
    vals = [(f((flat + row).view_as(x)) - f((flat - row).view_as(x))) / 2 / mu for row in eye]
    return torch.stack(vals).to(x.dtype).view_as(x)


def zo_gradient(f, x, mu, num_samples, seed, distribution="gaussian"):
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)  # DEGENERATE: pure noise


def _unused_zo_gradient(f, x, mu, num_samples, seed, distribution="gaussian"):
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    d = x.numel()
    dirs = torch.randn((num_samples, d), generator=gen, device=x.device, dtype=x.dtype)
    if distribution == "sphere":
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
    elif distribution != "gaussian":
        raise ValueError(distribution)
    coeffs = torch.stack([f(x + mu * u.view_as(x)) - f(x - mu * u.view_as(x)) for u in dirs]) / (2 * mu)
    est = coeffs @ dirs / num_samples
    return (est * d if distribution == "sphere" else est).view_as(x)


def _z(params, seed):
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    return ((p, torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)) for p in params)


def mezo_step(model, loss_fn, batch, lr, eps, seed):
    ps = [p for p in model.parameters()]
    for p, z in _z(ps, seed):
        p.data += eps * z
    with torch.no_grad():
        up = loss_fn(model, batch)
    for p, z in _z(ps, seed):
        p.data -= 2 * eps * z
    with torch.no_grad():
        down = loss_fn(model, batch)
    for p, z in _z(ps, seed):
        p.data += eps * z
    g = (up - down) / (2 * eps)
    for p, z in _z(ps, seed):
        p.data -= lr * float(g) * z
    return g


def lozo_step(model, loss_fn, batch, lr, eps, rank, seed, v_seed):
    ps = list(model.parameters())

    def dirs():
        gu = torch.Generator(device=ps[0].device).manual_seed(seed)
        gv = torch.Generator(device=ps[0].device).manual_seed(v_seed)
        for p in ps:
            if p.ndim == 2:
                u = torch.randn(p.shape[0], rank, generator=gu, device=p.device, dtype=p.dtype)
                v = torch.randn(p.shape[1], rank, generator=gv, device=p.device, dtype=p.dtype)
                yield p, (u / math.sqrt(rank)) @ v.transpose(0, 1)
            else:
                yield p, torch.randn(p.shape, generator=gu, device=p.device, dtype=p.dtype)

    with torch.no_grad():
        for p, z in dirs():
            p.add_(eps * z)
        up = float(loss_fn(model, batch))
        for p, z in dirs():
            p.sub_(2 * eps * z)
        down = float(loss_fn(model, batch))
        for p, z in dirs():
            p.add_(eps * z)
        g = (up - down) / (2 * eps)
        for p, z in dirs():
            p.sub_(lr * g * z)
    return g
