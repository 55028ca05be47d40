"""The reference of `muon` against PyTorch's own: reference.muon.newton_schulz and
muon_step against torch.optim.Muon (the same operations: bit for bit), the quintic's
exact singular values against a float64 iteration, and MuonAdamW's judge-side wrapper
against torch.optim.Muon and torch.optim.AdamW run apart. Run by `dlopt check muon`."""

from __future__ import annotations

import torch
from torch.optim._muon import _zeropower_via_newtonschulz

from autograder.judge.suite import generator, randn
from reference import muon as ref


def test_newton_schulz_is_torch_muons_bit_for_bit():
    for shape in [(48, 24), (24, 48), (30, 30)]:
        G = randn(generator(f"ref-ns-{shape}"), *shape)
        for steps, coef in [(5, ref.COEFFICIENTS), (3, (15 / 8, -10 / 8, 3 / 8))]:
            assert torch.equal(ref.newton_schulz(G, steps, coef), _zeropower_via_newtonschulz(G, coef, steps, ref.EPS))


def test_muon_step_is_one_step_of_torch_muon():
    for shape, fn, nesterov in [((40, 20), None, True), ((20, 40), "match_rms_adamw", False),
                                ((33, 17), "original", True)]:
        g = generator(f"ref-step-{shape}")
        param, grads = randn(g, *shape), [randn(g, *shape) for _ in range(4)]
        p = torch.nn.Parameter(param.clone())
        opt = torch.optim.Muon([p], lr=0.03, momentum=0.9, nesterov=nesterov, weight_decay=0.2, adjust_lr_fn=fn)
        mine, buf = param.clone(), None
        for grad in grads:
            p.grad = grad.clone()
            opt.step()
            mine, buf, _ = ref.muon_step(mine, grad, buf, lr=0.03, momentum=0.9, nesterov=nesterov,
                                         weight_decay=0.2, adjust_lr_fn=fn)
            # param * (1 - lr wd) then add(O, alpha=-lr'): torch does it in place, the
            # reference out of place, the same float32 operations.
            assert torch.equal(mine, p.detach())
            assert torch.equal(buf, opt.state[p]["momentum_buffer"])


def test_expected_singular_values_are_the_float64_iteration():
    G = randn(generator("ref-sv"), 40, 24, dtype=torch.float64)
    X = G / G.norm()
    a, b, c = ref.COEFFICIENTS
    for _ in range(5):
        A = X.T @ X
        X = a * X + X @ (b * A + c * A @ A)
    torch.testing.assert_close(torch.linalg.svdvals(X), ref.expected_singular_values(G), rtol=1e-10, atol=1e-12)
    lo, hi = ref.invariant_interval()
    s = torch.linspace(lo, hi, 1001, dtype=torch.float64)
    image = ref.quintic_map(s, 1)
    assert float(image.min()) >= lo - 1e-9 and float(image.max()) <= hi + 1e-9


def test_torch_muon_adamw_is_muon_and_adamw_run_apart():
    g = generator("ref-wrapper")
    W, v = randn(g, 12, 8), randn(g, 8)
    grads = [(randn(g, 12, 8), randn(g, 8)) for _ in range(5)]
    a, b = torch.nn.Parameter(W.clone()), torch.nn.Parameter(v.clone())
    both = ref.TorchMuonAdamW([{"params": [a], "use_muon": True, "lr": 0.05},
                               {"params": [b], "use_muon": False, "weight_decay": 0.1}])
    c, d = torch.nn.Parameter(W.clone()), torch.nn.Parameter(v.clone())
    muon = torch.optim.Muon([c], lr=0.05, weight_decay=0.0)
    adamw = torch.optim.AdamW([d], lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.1, foreach=False)
    for gw, gv in grads:
        a.grad, b.grad, c.grad, d.grad = gw.clone(), gv.clone(), gw.clone(), gv.clone()
        both.step()
        muon.step()
        adamw.step()
    assert torch.equal(a, c) and torch.equal(b, d)
