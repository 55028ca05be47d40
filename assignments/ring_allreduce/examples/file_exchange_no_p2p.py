"""DEGENERATE: no data ever moves through send/recv/isend/irecv/batch_isend_irecv. Each rank
torch.save()s its tensor to a file in /tmp (shared by the forked ranks, the same /tmp the
harness puts its rendezvous file in), dist.barrier() (allowed), reads every rank's file,
and reduces locally in rank order (float64 for floating dtypes, int64 exactly); reduce-scatter,
all-gather and all-reduce are all built on this exchange. The contract says "Only send, recv,
isend, irecv and batch_isend_irecv may move data".

Passes wrongly: test_ring_all_reduce (24), test_ring_reduce_scatter (18), test_ring_all_gather
(14), test_ring_all_reduce_keeps_shape_in_place (8), test_average_gradients_equals_large_batch
(14), test_ring_all_reduce_int64_is_exact (4), public (4): 86 points. Only
test_ring_all_reduce_sends_two_p_minus_one_over_p fails (each rank's counted sends are 0);
its loopback sub-checks even pass (file I/O is not network traffic), so that test may still
give about 5/27 of its 14 points on a machine with the loopback count: ~88.
Nothing is flagged: torch.save/torch.load/os.replace/os.remove are not in the flag lists, no
forbidden API is named, and the runtime guard blocks only collectives.
Expected score: about 86-89 (bug_naive_all_to_all.py, which at least uses send/recv, gets 87.3).
Sharper check: make a function whose ranks' counted send bytes are zero (p > 1) or far below
the (p-1)/p payload lose its correctness points too (e.g. require every correctness case to
also send at least (p-1)/p of the bytes per rank), and/or deny the ranks a shared writable
/tmp (rendezvous through a directory only the harness can write, or a TCP store) and flag
torch.distributed.*Store, FileStore, TCPStore and file I/O in the graded functions.
"""
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
