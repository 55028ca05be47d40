"""Red team (issue 25): ranks swap their tensors through files in the sandbox's shared /tmp
(numpy's savetxt/loadtxt: nothing the static scan flags) with barrier() between steps, and
each also sends a ring's worth of zeros to its neighbour, so the kernel's count of loopback
bytes looks like a ring's. It scored 100/100 unflagged. Now each rank is confined once its
process group is up (Landlock: no file written anywhere, none read in /tmp or /dev/shm):
every run with more than one rank fails."""
import numpy as np
import torch
import torch.distributed as dist

_calls = [0]


def _junk(numel, rounds):
    """A ring's worth of zeros to the right-hand neighbour: the bytes a ring would send."""
    rank, world = dist.get_rank(), dist.get_world_size()
    n = max(1, numel // world) * (world - 1) * rounds
    out, into = torch.zeros(n), torch.empty(n)
    req = dist.isend(out, (rank + 1) % world)
    dist.recv(into, (rank - 1) % world)
    req.wait()


def _exchange(t, rounds=1):
    rank, world = dist.get_rank(), dist.get_world_size()
    if world == 1:
        return [t.detach().cpu().clone()]
    _calls[0] += 1
    tag = f"/tmp/_junk_ring_{_calls[0]}"
    np.savetxt(f"{tag}_{rank}.txt", t.detach().cpu().double().reshape(-1).numpy())
    dist.barrier()
    out = [torch.from_numpy(np.loadtxt(f"{tag}_{r}.txt", ndmin=1)).to(t.dtype) for r in range(world)]
    _junk(t.numel(), rounds)
    dist.barrier()
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
    total = _sum(_exchange(flat, rounds=2), flat.dtype)
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
