"""FlashAttention-2 forward and backward in Triton (Dao, 2023; after the Triton tutorial
06-fused-attention), returning the logsumexp.

Forward: one program per (block of BLOCK_M queries, batch*head). It streams over the
key/value blocks with the online softmax (running max m_i, running sum l_i, rescaled
accumulator), skipping blocks above the diagonal when causal, and writes
o = acc / l_i and lse = m_i + log l_i (float32). Backward, two kernels that never store
the N x M probabilities: (1) per key block, stream over query blocks recomputing
P = exp(S - lse) to accumulate dk and dv; (2) per query block, stream over key blocks
to accumulate dq; both use delta = rowsum(do * o), computed first.
Any N and M (masked tails), head dims 16..128 (powers of two), float32/float16/bfloat16
with float32 accumulation (float32 operands go through the tensor cores as TF32 on a GPU). Checked against torch.nn.functional.scaled_dot_product_attention
and autograd in tests/test_reference_attention.py (interpreter on the CPU, compiled on a GPU).
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

if triton is not None:

    @triton.jit
    def _fwd_kernel(Q, K, V, Out, LSE, scale, N, M, stride_qh, stride_qn, stride_kh, stride_kn, stride_vh, stride_vn,
                    stride_oh, stride_on, CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr):
        start_m = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q = tl.load(Q + bh * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :], mask=offs_m[:, None] < N,
                    other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        hi = tl.minimum((start_m + 1) * BLOCK_M, M) if CAUSAL else M
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            # -- compute qk --
            k = tl.load(K + bh * stride_kh + cols[:, None] * stride_kn + offs_d[None, :], mask=cols[:, None] < M,
                        other=0.0)
            s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
            valid = cols[None, :] < M
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            s = tl.where(valid, s, float("-inf"))
            # -- update m_i and l_i (rows with nothing valid yet keep m = -inf) --
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            # -- update the output accumulator --
            v = tl.load(V + bh * stride_vh + cols[:, None] * stride_vn + offs_d[None, :], mask=cols[:, None] < M,
                        other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
            m_i = m_new
        o = acc / l_i[:, None]
        tl.store(Out + bh * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :], o.to(Out.dtype.element_ty),
                 mask=offs_m[:, None] < N)
        tl.store(LSE + bh * N + offs_m, m_i + tl.log(l_i), mask=offs_m < N)

    @triton.jit
    def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, scale, N, M, stride_qh, stride_qn, stride_kh, stride_kn,
                         CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        start_n = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        cols = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        kv_mask = cols[:, None] < M
        k = tl.load(K + bh * stride_kh + cols[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + bh * stride_kh + cols[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        lo = (start_n * BLOCK_N // BLOCK_M) * BLOCK_M if CAUSAL else 0
        for start_m in range(lo, N, BLOCK_M):
            rows = start_m + tl.arange(0, BLOCK_M)
            q = tl.load(Q + bh * stride_qh + rows[:, None] * stride_qn + offs_d[None, :], mask=rows[:, None] < N,
                        other=0.0)
            do = tl.load(DO + bh * stride_qh + rows[:, None] * stride_qn + offs_d[None, :], mask=rows[:, None] < N,
                         other=0.0)
            lse = tl.load(LSE + bh * N + rows, mask=rows < N, other=0.0)
            delta = tl.load(DELTA + bh * N + rows, mask=rows < N, other=0.0)
            # -- recompute P from lse --
            s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
            valid = (rows[:, None] < N) & (cols[None, :] < M)
            if CAUSAL:
                valid = valid & (cols[None, :] <= rows[:, None])
            p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)
            # -- dv += P^T do ; dS = P (dP - delta) ; dk += dS^T q --
            dv += tl.dot(tl.trans(p.to(do.dtype)), do).to(tl.float32)
            dp = tl.dot(do, tl.trans(v)).to(tl.float32)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q).to(tl.float32)
        tl.store(DK + bh * stride_kh + cols[:, None] * stride_kn + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty),
                 mask=kv_mask)
        tl.store(DV + bh * stride_kh + cols[:, None] * stride_kn + offs_d[None, :], dv.to(DV.dtype.element_ty),
                 mask=kv_mask)

    @triton.jit
    def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, scale, N, M, stride_qh, stride_qn, stride_kh, stride_kn,
                       CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        start_m = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        q_mask = rows[:, None] < N
        q = tl.load(Q + bh * stride_qh + rows[:, None] * stride_qn + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(DO + bh * stride_qh + rows[:, None] * stride_qn + offs_d[None, :], mask=q_mask, other=0.0)
        lse = tl.load(LSE + bh * N + rows, mask=rows < N, other=0.0)
        delta = tl.load(DELTA + bh * N + rows, mask=rows < N, other=0.0)
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        hi = tl.minimum((start_m + 1) * BLOCK_M, M) if CAUSAL else M
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(K + bh * stride_kh + cols[:, None] * stride_kn + offs_d[None, :], mask=cols[:, None] < M,
                        other=0.0)
            v = tl.load(V + bh * stride_kh + cols[:, None] * stride_kn + offs_d[None, :], mask=cols[:, None] < M,
                        other=0.0)
            s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
            valid = (rows[:, None] < N) & (cols[None, :] < M)
            if CAUSAL:
                valid = valid & (cols[None, :] <= rows[:, None])
            p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v)).to(tl.float32)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k).to(tl.float32)
        tl.store(DQ + bh * stride_qh + rows[:, None] * stride_qn + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
                 mask=q_mask)


def _prep(q, k, v, causal, scale):
    if triton is None:
        raise RuntimeError("triton is not installed")
    b, h, n, d = q.shape
    m = k.shape[-2]
    if causal and n != m:
        raise ValueError("causal attention needs N == M")
    if d not in (16, 32, 64, 128):
        raise ValueError("head dims 16, 32, 64 or 128")
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    return b, h, n, m, d, scale


def flash_attention_forward(q, k, v, causal=False, scale=None, block_m=64, block_n=64):
    """(o [B, H, N, D] in q's dtype, lse [B, H, N] float32)."""
    b, h, n, m, d, scale = _prep(q, k, v, causal, scale)
    q, k, v = (t.contiguous().reshape(b * h, t.shape[-2], d) for t in (q, k, v))
    o = torch.empty_like(q)
    lse = torch.empty(b * h, n, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(n, block_m), b * h)
    _fwd_kernel[grid](q, k, v, o, lse, scale, n, m, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0),
                      v.stride(1), o.stride(0), o.stride(1), CAUSAL=causal, D=d, BLOCK_M=block_m, BLOCK_N=block_n)
    return o.reshape(b, h, n, d), lse.reshape(b, h, n)


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, block_m=64, block_n=64):
    """(dq, dk, dv) from the forward's o and lse, without the N x M probabilities."""
    b, h, n, m, d, scale = _prep(q, k, v, causal, scale)
    q, k, v, o, do = (t.contiguous().reshape(b * h, t.shape[-2], d) for t in (q, k, v, o, do))
    lse = lse.contiguous().reshape(b * h, n).float()
    delta = (do.float() * o.float()).sum(-1).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _bwd_dkdv_kernel[(triton.cdiv(m, block_n), b * h)](q, k, v, do, lse, delta, dk, dv, scale, n, m, q.stride(0),
                                                      q.stride(1), k.stride(0), k.stride(1), CAUSAL=causal, D=d,
                                                      BLOCK_M=block_m, BLOCK_N=block_n)
    _bwd_dq_kernel[(triton.cdiv(n, block_m), b * h)](q, k, v, do, lse, delta, dq, scale, n, m, q.stride(0), q.stride(1),
                                                    k.stride(0), k.stride(1), CAUSAL=causal, D=d, BLOCK_M=block_m,
                                                    BLOCK_N=block_n)
    return dq.reshape(b, h, n, d), dk.reshape(b, h, m, d), dv.reshape(b, h, m, d)
