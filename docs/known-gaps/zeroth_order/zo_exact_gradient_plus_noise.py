"""DEGENERATE: zo_gradient never makes a random two-point estimate: it computes the
coordinate-wise central-difference gradient (2d evaluations of f, deterministic) and adds
isotropic Gaussian noise, drawn from the seed, scaled so that E|noise|^2 is exactly what the
theory says a correct estimator's squared error is ((d + 1)|g|^2 / n for "gaussian",
(d - 1)|g|^2 / n for "sphere"). It is "the mean plus fake noise", not a sample of directions.

Passes wrongly: every zo_gradient test (30 hidden + 1 public): zo_stats.check_mse only checks
that the median of group means of |g_hat - g|^2 lies in [V/3, 3V], which this meets by
construction; test_zo_gradient_is_deterministic_per_seed holds (the noise comes from the seed).
Expected score: 100.
Sharper check: a structural check: with num_samples = 1 a two-point estimate is parallel to
its direction and, on a quadratic, g_hat . g = c (u . g)^2 >= 0 in EVERY call (the fake noise
gives g_hat . g < 0 often when |noise| > |g|); for "sphere", |g_hat|^2 = d (g_hat . g) exactly on
a quadratic, or recompute the estimate from u = g_hat / |g_hat| as described in zo_ignores_mu.py.
"""

import math

import torch


def coordinate_gradient(f, x, mu):
    flat = x.reshape(-1)
    eye = torch.eye(flat.numel(), dtype=x.dtype, device=x.device) * mu
    vals = [(f((flat + row).view_as(x)) - f((flat - row).view_as(x))) / 2 / mu for row in eye]
    return torch.stack(vals).to(x.dtype).view_as(x)


def zo_gradient(f, x, mu, num_samples, seed, distribution="gaussian"):
    # DEGENERATE: exact (central-difference) gradient + synthetic noise of the theoretical size
    gen = torch.Generator(device=x.device).manual_seed(seed)
    d = x.numel()
    g = coordinate_gradient(f, x, mu)
    c = d + 1 if distribution == "gaussian" else d - 1
    noise = torch.randn(d, generator=gen, dtype=x.dtype, device=x.device).view_as(x)
    return g + noise * g.norm() * math.sqrt(c / (num_samples * d))


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
