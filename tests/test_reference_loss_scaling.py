"""The references of `loss_scaling` against PyTorch: the scaler against torch.amp.GradScaler
(its scale trajectory, exactly), unscaling against torch's own kernel
(`torch._amp_foreach_non_finite_check_and_unscale_`), the mixed-precision step against
a GradScaler-driven SGD on float32 masters, FP8 against torch's casts; the Triton
unscale kernel against torch's kernel (CPU interpreter, or the GPU)."""

from __future__ import annotations

import os
import random

import pytest
import torch

from autograder.judge.suite import generator, randn
from autograder.protocol.specs import build_mlp
from reference import loss_scaling as ref

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gradscaler_trajectory(init, pattern, reload_at=None, device="cpu"):
    gs = torch.amp.GradScaler(device, **init)
    p = torch.nn.Parameter(torch.ones(3, device=device))
    opt = torch.optim.SGD([p], lr=0.0)
    out = []
    for t, bad in enumerate(pattern):
        if t == reload_at:
            state = gs.state_dict()
            gs = torch.amp.GradScaler(device)
            gs.load_state_dict(state)
        gs.scale(p.sum())
        p.grad = torch.full((3,), float("nan") if bad else 1.0, device=device)
        gs.step(opt)
        gs.update()
        out.append(gs.get_scale())
    return out


def _ours(init, pattern, reload_at=None):
    s = ref.DynamicLossScaler(**init)
    out = []
    for t, bad in enumerate(pattern):
        if t == reload_at:
            state = s.state_dict()
            s = ref.DynamicLossScaler()
            s.load_state_dict(state)
        s.update(s.unscale_([torch.full((3,), float("nan") if bad else 1.0)]))
        out.append(s.get_scale())
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("init", [dict(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=20),
                                  dict(init_scale=3000.0, growth_factor=1.5, backoff_factor=0.25, growth_interval=3)])
def test_scale_trajectory_matches_gradscaler_exactly(init, device):
    rng = random.Random(3)
    pattern = [rng.random() < 0.08 for _ in range(600)]
    assert _ours(init, pattern) == _gradscaler_trajectory(init, pattern, device=device)
    assert _ours(init, pattern, reload_at=301) == _gradscaler_trajectory(init, pattern, reload_at=301, device=device)


def test_unscale_matches_torchs_kernel():
    g = generator("ref-unscale")
    for dtype in (torch.float32, torch.float16):
        grads = [(randn(g, 40, 7) * 3000).to(dtype) for _ in range(4)]
        theirs = [x.clone() for x in grads]
        found = torch.zeros(1)
        torch._amp_foreach_non_finite_check_and_unscale_(theirs, found, torch.tensor(1 / 3000.0))
        ours = [x.clone() for x in grads]
        assert ref.DynamicLossScaler(3000.0).unscale_(ours) is bool(found.item()) is False
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)


def test_mixed_precision_step_matches_gradscaler_sgd():
    """The reference step against PyTorch's recipe: GradScaler + SGD on float32 masters."""
    torch.manual_seed(0)
    model_a = build_mlp([6, 12, 3], {}, "tanh", dtype=torch.float16)
    model_b = build_mlp([6, 12, 3], {k: v.clone() for k, v in model_a.state_dict().items()}, "tanh", dtype=torch.float16)
    masters_a = [p.detach().float().clone() for p in model_a.parameters()]
    masters_b = [torch.nn.Parameter(p.detach().float().clone()) for p in model_b.parameters()]
    scaler_a = ref.DynamicLossScaler(2.0**10, growth_interval=4)
    scaler_b = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=4)
    opt_b = torch.optim.SGD(masters_b, lr=0.05)
    g = generator("ref-mp")
    for t in range(20):
        x, y = randn(g, 16, 6).half(), randn(g, 16, 3).half() * (1e4 if t in (3, 9) else 1)
        loss_a, skipped_a = ref.mixed_precision_sgd_step(model_a, masters_a, x, y, torch.nn.functional.mse_loss, 0.05,
                                                         scaler_a)
        model_b.zero_grad(set_to_none=True)
        loss_b = torch.nn.functional.mse_loss(model_b(x), y)
        scaler_b.scale(loss_b).backward()
        for m, p in zip(masters_b, model_b.parameters()):
            m.grad = p.grad.float()
        scale_before = scaler_b.get_scale()
        scaler_b.step(opt_b)
        scaler_b.update()
        with torch.no_grad():
            for m, p in zip(masters_b, model_b.parameters()):
                p.copy_(m.half())
        assert skipped_a == (scaler_b.get_scale() < scale_before)
        assert scaler_a.get_scale() == scaler_b.get_scale()
        lb = float(loss_b.detach())
        assert loss_a == lb or (loss_a != loss_a and lb != lb)
    for a, b in zip(masters_a, masters_b):
        torch.testing.assert_close(a, b.detach(), rtol=4 * 2**-23, atol=4 * 2**-23)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_reference(fmt):
    dtype = ref.FP8[fmt]
    assert torch.finfo(dtype).max == {"e4m3": 448.0, "e5m2": 57344.0}[fmt]
    x = randn(generator(f"ref-fp8-{fmt}"), 1000, scale=5.0)
    q, s = ref.fp8_quantize(x, fmt)
    assert q.dtype == dtype and s.dtype == torch.float32
    assert float(q.float().abs().max()) == torch.finfo(dtype).max  # amax maps to the format's max
    back = ref.fp8_dequantize(q, s)
    normal = x.abs() / s >= torch.finfo(dtype).smallest_normal
    rel = ((back - x).abs() / x.abs())[normal]
    assert float(rel.max()) <= 2.0 ** -({"e4m3": 3, "e5m2": 2}[fmt] + 1) * (1 + 1e-6)
    zq, zs = ref.fp8_quantize(torch.zeros(3, 3), fmt)
    assert float(zs) == 1.0 and float(zq.float().abs().sum()) == 0.0


pytest.importorskip("triton", reason="triton is not installed")
needs_triton_backend = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="no GPU and TRITON_INTERPRET is not 1: Triton has no backend to run on")


@needs_triton_backend
@pytest.mark.parametrize("bad", [None, "nan", "inf", "-inf"])
def test_triton_unscale_matches_torchs_kernel(bad):
    from reference.triton_unscale import unscale_and_check_

    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = generator(f"tri-unscale-{bad}")
    # float32 and float16: torch's CUDA kernel has no bfloat16 version (ours does).
    # one launch per dtype: chunks of 4096 whole and ragged, one element, a view at an odd address
    grads = [(randn(g, n) * 2**14).to(dt).to(device) for n, dt in
             [(5000, torch.float32), (1, torch.float32), (777, torch.float16), (3000, torch.float16),
              (8192, torch.float32), (4096, torch.float16)]]
    grads.append((randn(g, 301) * 2**14).to(device)[1:])
    if bad:
        grads[2][500] = float(bad)
    theirs = [x.clone() for x in grads]
    found = torch.zeros(1, device=device)
    inv = torch.tensor(2.0**-14, device=device)
    torch._amp_foreach_non_finite_check_and_unscale_(theirs, found, inv)
    ours = [x.clone() for x in grads]
    assert float(unscale_and_check_(ours, inv)) == float(found)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b) or bool(torch.isnan(a).any())  # NaN != NaN: compare where finite
        fin = torch.isfinite(b)
        assert torch.equal(a[fin], b[fin])
