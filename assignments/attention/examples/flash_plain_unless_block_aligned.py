"""Bug (degenerate): flash_attention_forward / flash_attention_backward are tiled only when N
and M are multiples of block_size; otherwise they call the plain functions, which build the
whole [B, H, N, M] score matrix. Caught by the memory tests, whose lengths are not multiples
of the block. Found by the review in docs/known-gaps (it scored 100 before)."""

import math

import torch

NEG = float("-inf")


def _tau(q, scale):
    return 1 / math.sqrt(q.size(-1)) if scale is None else scale


def _bias(n0, n1, m0, m1, causal, device):
    """0 where visible, -inf where key > query, for rows n0:n1 and keys m0:m1."""
    if not causal:
        return None
    r = torch.arange(n0, n1, device=device).unsqueeze(-1)
    c = torch.arange(m0, m1, device=device).unsqueeze(0)
    return torch.zeros(n1 - n0, m1 - m0, dtype=torch.float64, device=device).masked_fill(c > r, NEG)


def _lse_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def attention_forward(q, k, v, causal=False, scale=None):
    assert not causal or q.size(-2) == k.size(-2)
    s = torch.einsum("bhnd,bhmd->bhnm", q.double(), k.double()) * _tau(q, scale)
    bias = _bias(0, q.size(-2), 0, k.size(-2), causal, q.device)
    if bias is not None:
        s = s + bias
    p = torch.softmax(s, dim=-1)
    o = torch.einsum("bhnm,bhmd->bhnd", p, v.double())
    return o.to(q.dtype), torch.logsumexp(s, dim=-1).to(_lse_dtype(q.dtype))


def attention_backward(do, q, k, v, o, lse, causal=False, scale=None):
    tau = _tau(q, scale)
    qd, kd, vd, dod = q.double(), k.double(), v.double(), do.double()
    s = torch.einsum("bhnd,bhmd->bhnm", qd, kd) * tau
    bias = _bias(0, q.size(-2), 0, k.size(-2), causal, q.device)
    if bias is not None:
        s = s + bias
    p = (s - lse.double().unsqueeze(-1)).exp()
    dp = torch.einsum("bhnd,bhmd->bhnm", dod, vd)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))  # Delta as rowsum(P * dP)
    dq = torch.einsum("bhnm,bhmd->bhnd", ds, kd) * tau
    dk = torch.einsum("bhnm,bhnd->bhmd", ds, qd) * tau
    dv = torch.einsum("bhnm,bhnd->bhmd", p, dod)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def flash_attention_forward(q, k, v, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[2]
    if N % block_size or M % block_size:  # DEGENERATE: not tiled for odd lengths
        return attention_forward(q, k, v, causal, scale)
    tau = _tau(q, scale)
    outs, lses = [], []
    start = 0
    while start < N:
        stop = min(N, start + block_size)
        qb = q[:, :, start:stop].double()
        o = torch.zeros(B, H, stop - start, D, dtype=torch.float64, device=q.device)
        m = torch.full((B, H, stop - start, 1), NEG, dtype=torch.float64, device=q.device)
        l = torch.zeros_like(m)
        kstart = 0
        while kstart < (stop if causal else M):
            kstop = min(M, kstart + block_size)
            s = torch.einsum("bhnd,bhmd->bhnm", qb, k[:, :, kstart:kstop].double()) * tau
            bias = _bias(start, stop, kstart, kstop, causal, q.device)
            if bias is not None:
                s = s + bias
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            p = (s - m_new).exp()
            l_new = l * (m - m_new).exp() + p.sum(-1, keepdim=True)
            # keep o normalised: o_new = (l * alpha * o + p v) / l_new
            o = (o * (l * (m - m_new).exp()) + p @ v[:, :, kstart:kstop].double()) / l_new
            m, l = m_new, l_new
            kstart = kstop
        outs.append(o.to(q.dtype))
        lses.append((m + l.log()).squeeze(-1).to(_lse_dtype(q.dtype)))
        start = stop
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[2]
    if N % block_size or M % block_size:  # DEGENERATE: not tiled for odd lengths
        return attention_backward(do, q, k, v, o, lse, causal, scale)
    tau = _tau(q, scale)
    dq = torch.empty_like(q)
    dk = torch.zeros(k.shape, dtype=torch.float64, device=k.device)
    dv = torch.zeros(v.shape, dtype=torch.float64, device=v.device)
    for a in range(0, N, block_size):
        b = min(N, a + block_size)
        qb, dob = q[:, :, a:b].double(), do[:, :, a:b].double()
        delta = (dob * o[:, :, a:b].double()).sum(-1, keepdim=True)
        lb = lse[:, :, a:b].double().unsqueeze(-1)
        dqb = torch.zeros_like(qb)
        for c in range(0, b if causal else M, block_size):
            e = min(M, c + block_size)
            kb, vb = k[:, :, c:e].double(), v[:, :, c:e].double()
            s = qb @ kb.transpose(2, 3) * tau
            bias = _bias(a, b, c, e, causal, q.device)
            if bias is not None:
                s = s + bias
            p = (s - lb).exp()
            ds = p * (dob @ vb.transpose(2, 3) - delta)
            dqb += ds @ kb * tau
            dk[:, :, c:e] += ds.transpose(2, 3) @ qb * tau
            dv[:, :, c:e] += p.transpose(2, 3) @ dob
        dq[:, :, a:b] = dqb.to(q.dtype)
    return dq, dk.to(k.dtype), dv.to(v.dtype)
