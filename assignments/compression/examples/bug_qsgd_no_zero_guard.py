"""QSGD without the zero guard: 0 / 0 gives NaN."""
import math

import torch
import torch.distributed as dist


def topk_compress(x, k):
    """The k entries of largest magnitude: (values [k], indices int64 [k])."""
    indices = x.abs().topk(k).indices
    return x[indices], indices.to(torch.int64)


def decompress(values, indices, d):
    """A dense [d] vector: values at indices, zeros elsewhere."""
    out = torch.zeros(d, dtype=values.dtype, device=values.device)
    out[indices] = values
    return out


def randk_compress(x, k, seed):
    """k random entries (torch.randperm(d, generator)[:k]), scaled by d / k."""
    d = x.numel()
    g = torch.Generator().manual_seed(seed)
    indices = torch.randperm(d, generator=g)[:k].to(x.device)
    return x[indices] * (d / k), indices


def qsgd(x, s, seed):
    """QSGD with s levels; unbiased stochastic rounding from torch.Generator().manual_seed(seed)."""
    norm = x.norm()
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(x.numel(), generator=g).to(device=x.device, dtype=x.dtype)
    r = s * x.abs() / norm
    low = torch.floor(r)
    xi = low + (u < r - low).to(x.dtype)
    return norm * torch.sign(x) * xi / s


def error_feedback_step(grad, error, compress):
    """One step of error feedback: (message, new_error)."""
    p = grad + error
    message = compress(p)
    return message, p - message


def local_sgd(model, loss_fn, shard, lr, local_steps, rounds):
    """Local SGD on every rank: local_steps SGD steps, then average the parameters; rounds times."""
    world = dist.get_world_size()
    params = list(model.parameters())
    t = 0
    for _ in range(rounds):
        for _ in range(local_steps):
            for p in params:
                p.grad = None
            loss_fn(model, shard[t]).backward()
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p -= lr * p.grad
            t += 1
        with torch.no_grad():
            for p in params:
                dist.all_reduce(p.data)
                p.data /= world


def gossip_average(x, weights):
    """One step of gossip averaging on a ring: w0 x_{r-1} + w1 x_r + w2 x_{r+1}."""
    rank, world = dist.get_rank(), dist.get_world_size()
    w0, w1, w2 = (float(w) for w in weights)
    if world == 1:
        return (w0 + w1 + w2) * x
    left, right = (rank - 1) % world, (rank + 1) % world
    neighbours = [left] if left == right else [left, right]
    send = x.contiguous()
    got = {n: torch.empty_like(send) for n in neighbours}
    ops = [dist.P2POp(dist.isend, send, n) for n in neighbours]
    ops += [dist.P2POp(dist.irecv, got[n], n) for n in neighbours]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return w0 * got[left] + w1 * x + w2 * got[right]
