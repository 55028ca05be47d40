"""Tiled forward: the running sum is rescaled when the max grows, the output accumulator is not."""

import math

import torch


def _softmax_scale(q, scale):
    return scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])


def _work_dtype(dtype):
    # float16/bfloat16 inputs: accumulate in float32, as FlashAttention does.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _causal_mask(rows, cols, device):
    """True where key j may NOT be seen by query i (j > i), for absolute indices."""
    return cols[None, :] > rows[:, None]


def attention_forward(q, k, v, causal=False, scale=None):
    n, m = q.shape[-2], k.shape[-2]
    if causal and n != m:
        raise ValueError("causal attention needs N == M")
    work = _work_dtype(q.dtype)
    s = (q.to(work) @ k.to(work).transpose(-2, -1)) * _softmax_scale(q, scale)
    if causal:
        idx = torch.arange(n, device=q.device)
        s = s.masked_fill(_causal_mask(idx, idx, q.device), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    o = p @ v.to(work)
    return o.to(q.dtype), lse.to(work)


def attention_backward(do, q, k, v, o, lse, causal=False, scale=None):
    n = q.shape[-2]
    work = _work_dtype(q.dtype)
    tau = _softmax_scale(q, scale)
    q_, k_, v_, do_, o_ = (t.to(work) for t in (q, k, v, do, o))
    s = (q_ @ k_.transpose(-2, -1)) * tau
    if causal:
        idx = torch.arange(n, device=q.device)
        s = s.masked_fill(_causal_mask(idx, idx, q.device), float("-inf"))
    p = torch.exp(s - lse.to(work)[..., None])
    dv = p.transpose(-2, -1) @ do_
    dp = do_ @ v_.transpose(-2, -1)
    delta = (do_ * o_).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    dq = tau * (ds @ k_)
    dk = tau * (ds.transpose(-2, -1) @ q_)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def flash_attention_forward(q, k, v, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[-2]
    if causal and N != M:
        raise ValueError("causal attention needs N == M")
    work = _work_dtype(q.dtype)
    tau = _softmax_scale(q, scale)
    o = torch.empty_like(q)
    lse = torch.empty(B, H, N, dtype=work, device=q.device)
    for i0 in range(0, N, block_size):
        i1 = min(i0 + block_size, N)
        qi = q[:, :, i0:i1].to(work) * tau
        m_i = torch.full((B, H, i1 - i0), float("-inf"), dtype=work, device=q.device)
        l_i = torch.zeros(B, H, i1 - i0, dtype=work, device=q.device)
        acc = torch.zeros(B, H, i1 - i0, D, dtype=work, device=q.device)
        # Causal: key blocks that start after this query block's last row are all masked.
        j_end = min(M, i1) if causal else M
        for j0 in range(0, j_end, block_size):
            j1 = min(j0 + block_size, M)
            s = qi @ k[:, :, j0:j1].to(work).transpose(-2, -1)
            if causal and j1 - 1 > i0:  # this block crosses the diagonal
                rows = torch.arange(i0, i1, device=q.device)
                cols = torch.arange(j0, j1, device=q.device)
                s = s.masked_fill(_causal_mask(rows, cols, q.device), float("-inf"))
            m_new = torch.maximum(m_i, s.amax(-1))
            alpha = torch.exp(m_i - m_new)  # rescales what was summed under the old max
            p = torch.exp(s - m_new[..., None])
            l_i = alpha * l_i + p.sum(-1)
            acc = acc + p @ v[:, :, j0:j1].to(work)
            m_i = m_new
        o[:, :, i0:i1] = (acc / l_i[..., None]).to(q.dtype)
        lse[:, :, i0:i1] = m_i + torch.log(l_i)
    return o, lse


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[-2]
    work = _work_dtype(q.dtype)
    tau = _softmax_scale(q, scale)
    # delta_i = sum_d do_id * o_id, one query block at a time.
    delta = torch.empty(B, H, N, dtype=work, device=q.device)
    for i0 in range(0, N, block_size):
        i1 = min(i0 + block_size, N)
        delta[:, :, i0:i1] = (do[:, :, i0:i1].to(work) * o[:, :, i0:i1].to(work)).sum(-1)
    dq = torch.zeros(B, H, N, D, dtype=work, device=q.device)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    for j0 in range(0, M, block_size):
        j1 = min(j0 + block_size, M)
        kj = k[:, :, j0:j1].to(work)
        vj = v[:, :, j0:j1].to(work)
        dk_j = torch.zeros(B, H, j1 - j0, D, dtype=work, device=q.device)
        dv_j = torch.zeros_like(dk_j)
        for i0 in range(0, N, block_size):
            i1 = min(i0 + block_size, N)
            if causal and i1 - 1 < j0:  # every query of this block comes before every key
                continue
            qi = q[:, :, i0:i1].to(work)
            doi = do[:, :, i0:i1].to(work)
            s = (qi @ kj.transpose(-2, -1)) * tau
            if causal and j1 - 1 > i0:
                rows = torch.arange(i0, i1, device=q.device)
                cols = torch.arange(j0, j1, device=q.device)
                s = s.masked_fill(_causal_mask(rows, cols, q.device), float("-inf"))
            p = torch.exp(s - lse[:, :, i0:i1].to(work)[..., None])  # recomputed from lse
            dv_j += p.transpose(-2, -1) @ doi
            dp = doi @ vj.transpose(-2, -1)
            ds = p * (dp - delta[:, :, i0:i1, None])
            dq[:, :, i0:i1] += tau * (ds @ kj)
            dk_j += tau * (ds.transpose(-2, -1) @ qi)
        dk[:, :, j0:j1] = dk_j.to(k.dtype)
        dv[:, :, j0:j1] = dv_j.to(v.dtype)
    return dq.to(q.dtype), dk, dv
