"""A correct submission (issue 13): both backwards compute Delta as rowsum(P * dP), with P
recomputed from S - lse in float32 (the inputs' own dtype for float64), not as do . o.
On the CPU this lost points to the old tolerances (dq about 2x over in the extreme-logits
and custom-scale tests); the tolerances now measure this formulation too. Forwards are
the correct alternative's."""

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


def attention_forward(q, k, v, causal=False, scale=None):
    assert not causal or q.size(-2) == k.size(-2)
    s = torch.einsum("bhnd,bhmd->bhnm", q.double(), k.double()) * _tau(q, scale)
    bias = _bias(0, q.size(-2), 0, k.size(-2), causal, q.device)
    if bias is not None:
        s = s + bias
    p = torch.softmax(s, dim=-1)
    o = torch.einsum("bhnm,bhmd->bhnd", p, v.double())
    return o.to(q.dtype), torch.logsumexp(s, dim=-1).to(_lse_dtype(q.dtype))


def _work(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_backward(do, q, k, v, o, lse, causal=False, scale=None):
    w = _work(q.dtype)
    tau = _tau(q, scale)
    qw, kw, vw, dow = q.to(w), k.to(w), v.to(w), do.to(w)
    s = qw @ kw.transpose(-2, -1) * tau
    if causal:
        n = q.size(-2)
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), NEG)
    p = torch.exp(s - lse.to(w).unsqueeze(-1))
    dp = dow @ vw.transpose(-2, -1)
    delta = (p * dp).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    return ((ds @ kw * tau).to(q.dtype), (ds.transpose(-2, -1) @ qw * tau).to(k.dtype),
            (p.transpose(-2, -1) @ dow).to(v.dtype))


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, block_size=64):
    w = _work(q.dtype)
    B, H, N, D = q.shape
    M = k.shape[2]
    tau = _tau(q, scale)
    dq = torch.empty_like(q)
    dk = torch.zeros(k.shape, dtype=w, device=k.device)
    dv = torch.zeros(v.shape, dtype=w, device=v.device)

    def tile(qb, dob, lb, a, b, c, e):
        kb, vb = k[:, :, c:e].to(w), v[:, :, c:e].to(w)
        s = qb @ kb.transpose(2, 3) * tau
        if causal:
            r = torch.arange(a, b, device=q.device)[:, None]
            cc = torch.arange(c, e, device=q.device)[None, :]
            s = s.masked_fill(cc > r, NEG)
        p = torch.exp(s - lb)
        return kb, vb, p, dob @ vb.transpose(2, 3)

    for a in range(0, N, block_size):
        b = min(N, a + block_size)
        qb, dob = q[:, :, a:b].to(w), do[:, :, a:b].to(w)
        lb = lse[:, :, a:b].to(w).unsqueeze(-1)
        keys = range(0, b if causal else M, block_size)
        delta = torch.zeros(B, H, b - a, 1, dtype=w, device=q.device)
        for c in keys:  # first pass: Delta = rowsum(P * dP), one tile at a time
            _, _, p, dp = tile(qb, dob, lb, a, b, c, min(M, c + block_size))
            delta += (p * dp).sum(-1, keepdim=True)
        dqb = torch.zeros_like(qb)
        for c in keys:
            e = min(M, c + block_size)
            kb, vb, p, dp = tile(qb, dob, lb, a, b, c, e)
            ds = p * (dp - delta)
            dqb += ds @ kb * tau
            dk[:, :, c:e] += ds.transpose(2, 3) @ qb * tau
            dv[:, :, c:e] += p.transpose(2, 3) @ dob
        dq[:, :, a:b] = dqb.to(q.dtype)
    return dq, dk.to(k.dtype), dv.to(v.dtype)


def flash_attention_forward(q, k, v, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[2]
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
