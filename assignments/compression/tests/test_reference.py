"""The reference of `compression` against PyTorch's own: the averages of local SGD and of
gossip against torch.distributed collectives (all_gather of every rank's vector, gloo, 1 to
4 processes spawned here), the estimators' expectations computed exactly, and top-k
against a sort. Run by `dlopt check compression`."""

from __future__ import annotations

import itertools
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from autograder.judge.suite import generator
from reference import compression as ref


def _ranks(rank, world, init, out):
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(11, generator=g, dtype=torch.float64)
    everyone = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(everyone, x)
    for weights in ((1 / 3, 1 / 3, 1 / 3), (0.1, 0.6, 0.3)):
        mine = ref.gossip_average(x, weights)
        theirs = ref.gossip_matrix(world, weights)[rank] @ torch.stack(everyone)
        torch.testing.assert_close(mine, theirs, rtol=1e-14, atol=1e-14)
    # local SGD: the parameters after the run equal the mean over ranks of... itself: all_gather them
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    shard = [(torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64))
             for _ in range(6)]
    loss = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])  # noqa: E731
    ref.local_sgd(model, loss, shard, 0.1, 3, 2)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    every = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(every, flat)
    # the simulation of all ranks in one process, from the same shards
    shards = []
    for r in range(world):
        gr = torch.Generator().manual_seed(r)
        torch.randn(11, generator=gr, dtype=torch.float64)
        shards.append([(torch.randn(5, 3, generator=gr, dtype=torch.float64),
                        torch.randn(5, 2, generator=gr, dtype=torch.float64)) for _ in range(6)])
    models = []
    for _ in range(world):
        torch.manual_seed(0)
        models.append(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double())
    ref.simulate_local_sgd(models, loss, shards, 0.1, 3, 2)
    sim = torch.cat([p.detach().reshape(-1) for p in models[0].parameters()])
    out.put((rank, all(torch.allclose(e, flat, rtol=0, atol=0) for e in every),
             float((flat - sim).abs().max())))
    dist.destroy_process_group()


def test_gossip_and_local_sgd_against_torch_distributed():
    for world in (1, 2, 3, 4):
        init = tempfile.mktemp(prefix="ref-pg-")
        ctx = mp.get_context("fork")
        out = ctx.SimpleQueue()
        procs = [ctx.Process(target=_ranks, args=(r, world, init, out)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0, f"rank failed on world {world}"
        for _ in range(world):
            rank, agree, off = out.get()
            assert agree, f"ranks disagree after local_sgd (world {world})"
            assert off < 1e-12, f"local_sgd differs from the simulation by {off} (world {world}, rank {rank})"
        if os.path.exists(init):
            os.unlink(init)


def test_randk_is_exactly_unbiased_over_every_subset():
    # E over the uniform random k-subset: each index is kept with probability k / d.
    x = torch.randn(6, generator=generator("ref-randk"), dtype=torch.float64)
    d, k = 6, 2
    total = torch.zeros(d, dtype=torch.float64)
    subsets = list(itertools.combinations(range(d), k))
    for s in subsets:
        idx = torch.tensor(s)
        total += ref.decompress(x[idx] * d / k, idx, d)
    torch.testing.assert_close(total / len(subsets), x, rtol=1e-14, atol=1e-14)
    values, indices = ref.randk_compress(x, k, seed=3)
    assert torch.equal(indices, torch.randperm(d, generator=torch.Generator().manual_seed(3))[:k])


def test_qsgd_expectation_and_variance_are_exact():
    x = torch.randn(9, generator=generator("ref-qsgd"), dtype=torch.float64)
    s = 3
    norm = x.norm()
    r = s * x.abs() / norm
    p = r - r.floor()
    # E[xi] = floor(r) + p = r, so E[x_hat] = x; the draw is u < p.
    expected = norm * torch.sign(x) * (r.floor() + p) / s
    torch.testing.assert_close(expected, x, rtol=1e-14, atol=1e-14)
    var = ((norm / s) ** 2 * p * (1 - p)).sum()
    assert var <= ref.qsgd_variance_bound(9, s) * norm**2
    u = torch.rand(9, generator=torch.Generator().manual_seed(4), dtype=torch.float32).double()
    want = norm * torch.sign(x) * (r.floor() + (u < p).double()) / s
    torch.testing.assert_close(ref.qsgd(x, s, 4), want, rtol=1e-14, atol=1e-14)
    assert torch.equal(ref.qsgd(torch.zeros(5), 4, 1), torch.zeros(5))


def test_topk_is_a_sort_by_magnitude():
    x = torch.randn(50, generator=generator("ref-topk"), dtype=torch.float64)
    values, indices = ref.topk_compress(x, 7)
    assert sorted(indices.tolist()) == sorted(x.abs().argsort(descending=True)[:7].tolist())
    assert torch.equal(values, x[indices]) and indices.dtype == torch.int64


def test_error_feedback_keeps_everything():
    g = generator("ref-ef")
    grads = [torch.randn(8, generator=g, dtype=torch.float64) for _ in range(30)]
    error, sent = torch.zeros(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    for gr in grads:
        m, error = ref.error_feedback_step(gr, error, lambda p: torch.round(p))
        sent += m
    torch.testing.assert_close(sent + error, sum(grads), rtol=0, atol=1e-12)
