"""Public tests of `attention`: run them with `dlopt test attention.ipynb`.

They compare with PyTorch's own scaled_dot_product_attention and autograd in float64
on one small case each (your functions get float32 inputs; tolerance 1e-5, about 100
float32 roundings of values of size 1). The hidden suite tries odd lengths, N != M,
causal masks, custom scales, extreme logits, float16/bfloat16 and the memory rule.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autograder.judge.compare import GradingFailure, describe_call, expect_close

pytestmark = pytest.mark.visibility("public")
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _inputs(seed, n=12, m=12, d=16):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, s, d, generator=g, dtype=torch.float64) for s in (n, m, m, n)]


def _truth(q, k, v, do, causal):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    if causal:
        scores = scores.masked_fill(torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(scores, -1)
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    return o.detach(), lse.detach(), (dq, dk, dv)


def _check_forward(student, fn, causal, **extra):
    q, k, v, do = _inputs(1, 12, 20 if not causal else 12)
    o, lse, _ = _truth(q, k, v, do, causal)
    f32 = [t.float() for t in (q, k, v)]
    call = describe_call(fn, *f32, causal=causal, **extra)
    got = student.call(fn, *f32, causal=causal, **extra).value
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise GradingFailure(f"{call}: expected a tuple (o, lse), got {type(got).__name__}")
    expect_close(got[0], o.float(), call=call, what="o", **TOL)
    expect_close(got[1], lse.float(), call=call, what="lse", **TOL)


def _check_backward(student, fn, causal, **extra):
    q, k, v, do = _inputs(2)
    o, lse, grads = _truth(q, k, v, do, causal)
    args = [t.float() for t in (do, q, k, v, o, lse)]
    call = describe_call(fn, *args, causal=causal, **extra)
    got = student.call(fn, *args, causal=causal, **extra).value
    if not isinstance(got, tuple | list) or len(got) != 3:
        raise GradingFailure(f"{call}: expected a tuple (dq, dk, dv), got {type(got).__name__}")
    for name, g, want in zip(("dq", "dk", "dv"), got, grads):
        expect_close(g, want.float(), call=call, what=name, **TOL)


@pytest.mark.points(2)
@pytest.mark.function("attention_forward")
def test_public_forward(student):
    _check_forward(student, "attention_forward", causal=False)


@pytest.mark.points(3)
@pytest.mark.function("attention_backward")
def test_public_backward_causal(student):
    _check_backward(student, "attention_backward", causal=True)


@pytest.mark.points(2)
@pytest.mark.function("flash_attention_forward")
def test_public_flash_forward_causal(student):
    _check_forward(student, "flash_attention_forward", causal=True, block_size=8)


@pytest.mark.points(2)
@pytest.mark.function("flash_attention_backward")
def test_public_flash_backward(student):
    _check_backward(student, "flash_attention_backward", causal=False, block_size=8)
