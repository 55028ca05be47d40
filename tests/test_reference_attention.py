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


pytest.importorskip("triton", reason="triton is not installed")
GPU = torch.cuda.is_available()
needs_triton_backend = pytest.mark.skipif(
    not GPU and __import__("os").environ.get("TRITON_INTERPRET") != "1",
    reason="no GPU and TRITON_INTERPRET is not 1: Triton has no backend to run on")
# The interpreter runs small blocks and sizes on the CPU; a GPU runs the sizes of the course.
# On the CPU: ragged tails (37, 53), whole blocks only (32), one short block (5, 7), and
# blocks of two sizes (the diagonal split into inner blocks).
TRITON_CASES = ([(1, 2, 37, 37, 16, True, torch.float32, None), (1, 2, 20, 53, 32, False, torch.float32, None),
                 (1, 1, 64, 64, 16, True, torch.float32, (32, 16)), (1, 1, 5, 5, 16, True, torch.float32, None),
                 (1, 2, 16, 7, 16, False, torch.float32, None), (1, 1, 45, 45, 16, True, torch.float32, (16, 32)),
                 (1, 2, 37, 37, 16, True, torch.float32, "tma"), (1, 2, 20, 53, 32, False, torch.float32, "tma")]
                if not GPU else
                [(2, 4, 1000, 1000, 64, True, torch.float16, None), (2, 4, 333, 777, 128, False, torch.bfloat16, None),
                 (1, 2, 257, 257, 128, True, torch.bfloat16, None), (2, 2, 130, 130, 64, False, torch.float32, None),
                 (1, 2, 1024, 1024, 128, True, torch.float16, None), (1, 2, 512, 512, 64, False, torch.bfloat16, "tune"),
                 (1, 2, 300, 300, 32, True, torch.float16, (64, 32)), (2, 4, 1000, 1000, 64, True, torch.bfloat16, "tma"),
                 (2, 4, 333, 777, 128, False, torch.float16, "tma")])


@needs_triton_backend
@pytest.mark.parametrize("b,h,n,m,d,causal,dtype,blocks", TRITON_CASES)
def test_triton_flash_attention_matches_sdpa_and_autograd(b, h, n, m, d, causal, dtype, blocks):
    """Against SDPA and autograd computed in float32 from the same (rounded) inputs.
    Tolerance: float32 inputs 1e-5 in the interpreter (accumulation order only) and 4e-3 on
    a GPU, where tl.dot takes float32 operands as TF32 (10 mantissa bits: 2**-11 relative
    per product, grown by the D- and N-long sums); float16/bfloat16 inputs: the
    kernel rounds P to the input dtype before P @ V and stores o, dq, dk, dv in it: a few
    ulps of that dtype (2**-10 and 2**-7 relative) on values of size ~1."""
    from reference.triton_flash_attention import flash_attention_backward, flash_attention_forward

    device = "cuda" if GPU else "cpu"
    g = generator(f"fa-{n}-{m}-{d}-{causal}-{dtype}")
    q, k, v = (randn(g, b, h, s, d).to(dtype).to(device) for s in (n, m, m))
    do = randn(g, b, h, n, d).to(dtype).to(device)
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    o_ref = F.scaled_dot_product_attention(*leaves, is_causal=causal)
    o_ref.backward(do.float())
    s = (leaves[0].detach() @ leaves[1].detach().transpose(-2, -1)) / d**0.5
    if causal:
        s = s.masked_fill(~torch.ones(n, m, dtype=torch.bool, device=device).tril(), float("-inf"))
    blocks = (dict(autotune=True) if blocks == "tune" else dict(tma=True) if blocks == "tma" else
              dict(block_m=blocks[0], block_n=blocks[1]) if blocks else {} if GPU else dict(block_m=16, block_n=16))
    tma = blocks.pop("tma", None)
    o, lse = flash_attention_forward(q, k, v, causal, tma=tma, **blocks)
    f32 = dict(rtol=4e-3, atol=4e-3) if GPU else dict(rtol=1e-5, atol=1e-5)
    tol = {torch.float32: f32, torch.float16: dict(rtol=4e-3, atol=4e-3),
           torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}[dtype]
    assert o.dtype == dtype and lse.dtype == torch.float32
    torch.testing.assert_close(o.float(), o_ref.detach(), **tol)
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), rtol=1e-4, atol=1e-4)
    grads = flash_attention_backward(do, q, k, v, o, lse, causal, **blocks)
    for got, leaf in zip(grads, leaves):
        torch.testing.assert_close(got.float(), leaf.grad, **tol)
