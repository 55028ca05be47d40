"""Cheat: no data moves through send/recv. Each rank torch.save()s its tensor to a file in
/tmp (shared by the forked ranks), dist.barrier() (allowed), reads every rank's file and
reduces locally. Right answers, but the kernel counts almost no traffic between the ranks:
every run with more than one rank fails the traffic floor (the least any correct
implementation must send). Found by the review in docs/known-gaps (it scored 88.6 before)."""
import os

import torch
import torch.distributed as dist

_calls = [0]


def _exchange(t):
    """DEGENERATE: every rank gets every rank's tensor through files in /tmp, no send/recv."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return [t.detach().cpu().clone()]
    _calls[0] += 1  # every rank makes the same calls in the same order
    tag = f"/tmp/_degenerate_ring_{os.getppid()}_{_calls[0]}"
    torch.save(t.detach().cpu().clone(), f"{tag}_{rank}.tmp")
    os.replace(f"{tag}_{rank}.tmp", f"{tag}_{rank}.pt")
    dist.barrier()
    out = [torch.load(f"{tag}_{r}.pt") for r in range(world)]
    dist.barrier()
    os.remove(f"{tag}_{rank}.pt")
    return out


def _sum(tensors, dtype):
    if dtype.is_floating_point:
        total = torch.zeros(tensors[0].shape, dtype=torch.float64)
        for x in tensors:
            total += x.double()
        return total.to(dtype)
    total = tensors[0].clone()
    for x in tensors[1:]:
        total += x
    return total


def ring_reduce_scatter(tensor):
    rank, world = dist.get_rank(), dist.get_world_size()
    flat = tensor.reshape(-1)
    total = _sum(_exchange(flat), flat.dtype)
    return torch.tensor_split(total, world)[rank].clone().to(tensor.device)


def ring_all_gather(chunk, numel):
    parts = _exchange(chunk.reshape(-1))
    return torch.cat(parts).to(chunk.device)


def ring_all_reduce(tensor):
    flat = tensor.reshape(-1)
    total = _sum(_exchange(flat), flat.dtype)
    tensor.copy_(total.reshape(tensor.shape).to(tensor.device))


def average_gradients(model):
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    ring_all_reduce(flat)
    flat /= dist.get_world_size()
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()
