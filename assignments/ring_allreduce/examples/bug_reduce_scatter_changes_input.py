"""ring_reduce_scatter sums into views of its input (tensor_split without clone): the chunk
it returns is right, but the caller's tensor is left holding partial sums. ring_all_reduce
built on it is still right (it overwrites the tensor anyway)."""

import torch
import torch.distributed as dist
from torch import Tensor


def _ring():
    rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, (rank + 1) % world, (rank - 1) % world


def _exchange(send: Tensor, recv: Tensor, to: int, frm: int) -> None:
    ops = []
    if send.numel():
        ops.append(dist.P2POp(dist.isend, send.contiguous(), to))
    if recv.numel():
        ops.append(dist.P2POp(dist.irecv, recv, frm))
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def ring_reduce_scatter(tensor: Tensor) -> Tensor:
    rank, world, nxt, prv = _ring()
    chunks = list(torch.tensor_split(tensor.reshape(-1), world))  # views: the sums land in `tensor`
    for s in range(world - 1):
        send_i, recv_i = (rank - s - 1) % world, (rank - s - 2) % world
        buf = torch.empty_like(chunks[recv_i])
        _exchange(chunks[send_i], buf, nxt, prv)
        chunks[recv_i] += buf
    return chunks[rank]


def ring_all_gather(chunk: Tensor, numel: int) -> Tensor:
    rank, world, nxt, prv = _ring()
    out = torch.empty(numel, dtype=chunk.dtype, device=chunk.device)
    parts = list(torch.tensor_split(out, world))
    parts[rank].copy_(chunk.reshape(-1))
    for s in range(world - 1):
        send_i, recv_i = (rank - s) % world, (rank - s - 1) % world
        _exchange(parts[send_i], parts[recv_i], nxt, prv)
    return out


def ring_all_reduce(tensor: Tensor) -> None:
    summed = ring_all_gather(ring_reduce_scatter(tensor), tensor.numel())
    tensor.copy_(summed.view_as(tensor))


def average_gradients(model: torch.nn.Module) -> None:
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            ring_all_reduce(p.grad)
            p.grad /= world
