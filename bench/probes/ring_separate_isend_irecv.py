r"""PROBE (bench/ring_nccl_check.py): the reference ring with isend and irecv posted as
separate calls, the master before it moved to batch_isend_irecv. Correct on gloo.

The flattened tensor is split into $p$ chunks as `torch.tensor_split` does (the first
`numel % p` chunks one element longer). Reduce-scatter: at step $s = 0..p-2$ rank $r$
sends its running sum of chunk $(r - s - 1) \bmod p$ to rank $r + 1$ and adds what rank
$r - 1$ sends, chunk $(r - s - 2) \bmod p$; after the last step it holds chunk $r$ summed
over all ranks. All-gather: at step $s$ rank $r$ forwards chunk $(r - s) \bmod p$ and
receives chunk $(r - s - 1) \bmod p$. Each rank sends $p - 1$ chunks in each phase:
$2 (p - 1) / p$ of the tensor in all, whatever $p$, which is why NCCL uses rings for
large messages. Sends and receives of one step are posted together (one
`batch_isend_irecv`), so no rank waits on a neighbour that is itself waiting to send; empty chunks (fewer
elements than ranks) are not sent at all, on both sides alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _ring():
    rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, (rank + 1) % world, (rank - 1) % world


def _exchange(send: Tensor, recv: Tensor, to: int, frm: int) -> None:
    # One batch: NCCL runs a batch's sends and receives together. Separate isend and
    # irecv calls are queued one after the other on the GPU, and two neighbours that
    # both send first wait forever once a message outgrows NCCL's buffers (~MBs).
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
        send_i, recv_i = (rank - s - 1) % world, (rank - s - 2) % world
        buf = torch.empty_like(chunks[recv_i])
        _exchange(chunks[send_i], buf, nxt, prv)
        chunks[recv_i] += buf
    return chunks[rank]


def ring_all_gather(chunk: Tensor, numel: int) -> Tensor:
    rank, world, nxt, prv = _ring()
    out = torch.empty(numel, dtype=chunk.dtype, device=chunk.device)
    parts = list(torch.tensor_split(out, world))  # views into out
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
            if p.grad.is_floating_point():
                p.grad /= world
            else:
                p.grad //= world

