"""The float64 attention reference against PyTorch: scaled_dot_product_attention for the
output, logsumexp of the scores for lse, and autograd for the backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autograder.judge.suite import generator, randn
from reference import attention as ref

F64 = dict(rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("n,m,d,scale,causal", [(17, 17, 8, None, False), (17, 17, 8, None, True),
                                                (5, 33, 16, 0.3, False), (64, 64, 32, None, False),
                                                (64, 64, 32, None, True)])
def test_reference_matches_sdpa_and_autograd(n, m, d, scale, causal):
    g = generator(f"attn-{n}-{m}-{d}-{causal}")
    q, k, v = (randn(g, 2, 3, s, d, dtype=torch.float64) for s in (n, m, m))
    do = randn(g, 2, 3, n, d, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o = F.scaled_dot_product_attention(*leaves, is_causal=causal, scale=scale)
    o.backward(do)
    r_o, r_lse = ref.attention_forward(q, k, v, causal, scale)
    torch.testing.assert_close(r_o, o.detach(), **F64)
    s = (q @ k.transpose(-2, -1)) * (scale or d**-0.5)
    if causal:
        s = s.masked_fill(~torch.ones(n, m, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(r_lse, torch.logsumexp(s, -1), **F64)
    for got, want in zip(ref.attention_backward(do, q, k, v, r_o, r_lse, causal, scale), (t.grad for t in leaves)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11)


def test_reference_dtypes_and_extreme_logits():
    g = generator("attn-dtypes")
    q, k, v = (randn(g, 1, 2, 9, 8) for _ in range(3))
    for dtype, lse_dtype in [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                             (torch.float32, torch.float32)]:
        o, lse = ref.attention_forward(q.to(dtype), k.to(dtype), v.to(dtype))
        assert o.dtype == dtype and lse.dtype == lse_dtype
    big = q.double() * 300  # scores of size 1e4 and more: still finite and exact in float64
    o, lse = ref.attention_forward(big, k.double(), v.double(), causal=True)
    assert torch.isfinite(o).all() and torch.isfinite(lse).all()
    want = F.scaled_dot_product_attention(big, k.double(), v.double(), is_causal=True)
    torch.testing.assert_close(o, want, **F64)


def test_causal_needs_square_scores():
    q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4)
    with pytest.raises(ValueError, match="N == M"):
        ref.attention_forward(q, k, k, causal=True)
