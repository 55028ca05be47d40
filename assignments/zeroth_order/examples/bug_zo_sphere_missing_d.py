"""Sphere directions without the factor d: the estimate is g / d."""

import math

import torch


def coordinate_gradient(f, x, mu):
    g = torch.empty_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e.view(-1)[i] = mu
        g.view(-1)[i] = (f(x + e) - f(x - e)) / (2 * mu)
    return g


def zo_gradient(f, x, mu, num_samples, seed, distribution="gaussian"):
    if distribution not in ("gaussian", "sphere"):
        raise ValueError(f"unknown distribution {distribution!r}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    est = torch.zeros_like(x)
    for _ in range(num_samples):
        u = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        if distribution == "sphere":
            u = u / u.norm()
        est += (f(x + mu * u) - f(x - mu * u)) / (2 * mu) * u
    est = est / num_samples
    return est


def _gaussian_directions(params, seed):
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    for p in params:
        yield torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)


def _perturb(params, directions, scale):
    # One direction at a time: never more than one parameter's worth of extra memory.
    for p, z in zip(params, directions):
        p.add_(z, alpha=scale)


def mezo_step(model, loss_fn, batch, lr, eps, seed):
    params = list(model.parameters())
    with torch.no_grad():
        _perturb(params, _gaussian_directions(params, seed), eps)
        loss_plus = loss_fn(model, batch).item()
        _perturb(params, _gaussian_directions(params, seed), -2 * eps)
        loss_minus = loss_fn(model, batch).item()
        _perturb(params, _gaussian_directions(params, seed), eps)  # back where we started
        projected_grad = (loss_plus - loss_minus) / (2 * eps)
        _perturb(params, _gaussian_directions(params, seed), -lr * projected_grad)
    return projected_grad


def _low_rank_directions(params, rank, seed, v_seed):
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    vgen = torch.Generator(device=params[0].device).manual_seed(v_seed)
    for p in params:
        if p.dim() == 2:
            u = torch.randn(p.shape[0], rank, generator=gen, device=p.device, dtype=p.dtype)
            v = torch.randn(p.shape[1], rank, generator=vgen, device=p.device, dtype=p.dtype)
            yield u @ v.T / math.sqrt(rank)
        else:
            yield torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)


def lozo_step(model, loss_fn, batch, lr, eps, rank, seed, v_seed):
    params = list(model.parameters())

    def directions():
        return _low_rank_directions(params, rank, seed, v_seed)

    with torch.no_grad():
        _perturb(params, directions(), eps)
        loss_plus = loss_fn(model, batch).item()
        _perturb(params, directions(), -2 * eps)
        loss_minus = loss_fn(model, batch).item()
        _perturb(params, directions(), eps)
        projected_grad = (loss_plus - loss_minus) / (2 * eps)
        _perturb(params, directions(), -lr * projected_grad)
    return projected_grad
