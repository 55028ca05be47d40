"""Correct, written differently: top-k by sorting magnitudes, decompress by scatter, random-k
scaled in two steps, QSGD computed in float64 with torch.where, error feedback by sub, local
SGD with zero_grad and one all_reduce of all parameters flattened per round, gossip with
isend/irecv pairs (no batch) and one send when both neighbours are one rank."""
import torch
import torch.distributed as dist


def topk_compress(x, k):
    order = torch.argsort(x.abs(), descending=True)[:k]
    return x.index_select(0, order), order.long()


def decompress(values, indices, d):
    return torch.zeros(d, dtype=values.dtype, device=values.device).scatter(0, indices, values)


def randk_compress(x, k, seed):
    gen = torch.Generator()
    gen.manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)
    return x[idx] * x.shape[0] / k, idx


def qsgd(x, s, seed):
    x64 = x.double()
    n = torch.linalg.vector_norm(x64)
    if n.item() == 0.0:
        return torch.zeros_like(x)
    u = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed)).double().to(x.device)
    r = x64.abs() * s / n
    lo = r.floor()
    level = torch.where(u < r - lo, lo + 1, lo)
    return (x64.sign() * level * n / s).to(x.dtype)


def error_feedback_step(grad, error, compress):
    corrected = torch.add(grad, error)
    message = compress(corrected)
    return message, corrected.sub(message)


def local_sgd(model, loss_fn, shard, lr, local_steps, rounds):
    params = [p for p in model.parameters()]
    for r in range(rounds):
        for i in range(local_steps):
            model.zero_grad(set_to_none=False)
            loss_fn(model, shard[r * local_steps + i]).backward()
            with torch.no_grad():
                for p in params:
                    p.add_(p.grad, alpha=-lr)
        with torch.no_grad():
            flat = torch.cat([p.reshape(-1) for p in params])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= dist.get_world_size()
            offset = 0
            for p in params:
                p.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()


def gossip_average(x, weights):
    p, r = dist.get_world_size(), dist.get_rank()
    if p == 1:
        return x * sum(weights)
    prev, nxt = (r - 1) % p, (r + 1) % p
    buf = x.contiguous()
    if prev == nxt:
        other = torch.empty_like(buf)
        reqs = [dist.isend(buf, nxt), dist.irecv(other, prev)]
        for q in reqs:
            q.wait()
        return (weights[0] + weights[2]) * other + weights[1] * x
    a, b = torch.empty_like(buf), torch.empty_like(buf)
    reqs = [dist.isend(buf, prev), dist.isend(buf, nxt), dist.irecv(a, prev), dist.irecv(b, nxt)]
    for q in reqs:
        q.wait()
    return weights[0] * a + weights[1] * x + weights[2] * b
