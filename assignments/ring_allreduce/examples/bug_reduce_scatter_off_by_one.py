"""The classic ring's indices: rank r ends with chunk r + 1 and returns it (all-reduce still right)."""

import torch
import torch.distributed as dist
from torch import Tensor


def _ring():
    rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, (rank + 1) % world, (rank - 1) % world


def _exchange(send: Tensor, recv: Tensor, to: int, frm: int) -> None:
    ops = []
    if send.numel():
        ops.append(dist.isend(send.contiguous(), to))
    if recv.numel():
        ops.append(dist.irecv(recv, frm))
    for op in ops:
        op.wait()


def ring_reduce_scatter(tensor: Tensor) -> Tensor:
    rank, world, nxt, prv = _ring()
    chunks = [c.clone() for c in torch.tensor_split(tensor.reshape(-1), world)]
    for s in range(world - 1):
        send_i, recv_i = (rank - s) % world, (rank - s - 1) % world
        buf = torch.empty_like(chunks[recv_i])
        _exchange(chunks[send_i], buf, nxt, prv)
        chunks[recv_i] += buf
    return chunks[(rank + 1) % world]


def ring_all_gather(chunk: Tensor, numel: int) -> Tensor:
    rank, world, nxt, prv = _ring()
    out = torch.empty(numel, dtype=chunk.dtype, device=chunk.device)
    parts = list(torch.tensor_split(out, world))  # views into out
    parts[rank].copy_(chunk.reshape(-1))
    for s in range(world - 1):
        send_i, recv_i = (rank - s) % world, (rank - s - 1) % world
        _exchange(parts[send_i], parts[recv_i], nxt, prv)
    return out


def _gather_from(chunk, numel, owner_shift):
    rank, world, nxt, prv = _ring()
    out = torch.empty(numel, dtype=chunk.dtype, device=chunk.device)
    parts = list(torch.tensor_split(out, world))
    parts[(rank + owner_shift) % world].copy_(chunk.reshape(-1))
    for s in range(world - 1):
        send_i, recv_i = (rank + owner_shift - s) % world, (rank + owner_shift - s - 1) % world
        _exchange(parts[send_i], parts[recv_i], nxt, prv)
    return out


def ring_all_reduce(tensor: Tensor) -> None:
    summed = _gather_from(ring_reduce_scatter(tensor), tensor.numel(), 1)
    tensor.copy_(summed.view_as(tensor))


def average_gradients(model: torch.nn.Module) -> None:
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            ring_all_reduce(p.grad)
            if p.grad.is_floating_point():
                p.grad /= world
            else:
                p.grad //= world
