r"""Reference ring collectives from point-to-point messages (torch.distributed).

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

`ring_all_reduce_pipelined` is the same ring cut into segments that move one step apart
(how NCCL's own ring keeps its link busy): while segment $j$ is at step $s$, segment
$j + 1$ is at step $s - 1$, so one segment's reduction and its all-gather overlap the
next one's transfers, and each step posts several messages at once. It sends exactly the
bytes of `ring_all_reduce` and gives the same sums.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _ring():
    rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, (rank + 1) % world, (rank - 1) % world


def _post(ops: list, send: Tensor, recv: Tensor, to: int, frm: int, tag: int = 0) -> None:
    if send.numel():
        ops.append(dist.P2POp(dist.isend, send.contiguous(), to, tag=tag))
    if recv.numel():
        ops.append(dist.P2POp(dist.irecv, recv, frm, tag=tag))


def _run(ops: list) -> None:
    # One batch: NCCL runs a batch's sends and receives together. Separate isend and
    # irecv calls are queued one after the other on the GPU, and two neighbours that
    # both send first wait forever once a message outgrows NCCL's buffers (~MBs).
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def _exchange(send: Tensor, recv: Tensor, to: int, frm: int) -> None:
    ops: list = []
    _post(ops, send, recv, to, frm)
    _run(ops)


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


def ring_all_reduce_pipelined(tensor: Tensor, segments: int = 4) -> None:
    rank, world, nxt, prv = _ring()
    if world == 1:
        return
    chunks = [c.clone() for c in torch.tensor_split(tensor.reshape(-1), world)]
    # pieces[c][j]: segment j of chunk c, a view into the running sums.
    pieces = [torch.tensor_split(c, segments) for c in chunks]
    steps = 2 * (world - 1)  # world - 1 of reduce-scatter, then world - 1 of all-gather
    for tick in range(steps + segments - 1):
        ops: list = []
        adds = []
        for j in range(segments):
            s = tick - j  # the step segment j is at
            if not 0 <= s < steps:
                continue
            if s < world - 1:  # reduce-scatter: add what the left neighbour sends
                send_i, recv_i = (rank - s - 1) % world, (rank - s - 2) % world
                buf = torch.empty_like(pieces[recv_i][j])
                _post(ops, pieces[send_i][j], buf, nxt, prv, tag=j)
                adds.append((pieces[recv_i][j], buf))
            else:  # all-gather: forward the summed segment, receive into place
                g = s - (world - 1)
                send_i, recv_i = (rank - g) % world, (rank - g - 1) % world
                _post(ops, pieces[send_i][j], pieces[recv_i][j], nxt, prv, tag=j)
        _run(ops)
        for total, buf in adds:
            total += buf
    tensor.copy_(torch.cat(chunks).view_as(tensor))


def average_gradients(model: torch.nn.Module) -> None:
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            ring_all_reduce(p.grad)
            if p.grad.is_floating_point():
                p.grad /= world
            else:
                p.grad //= world
