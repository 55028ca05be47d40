"""Hostile (issue 13): the tiled forward keeps full-width score rows (block_size x M for one
head) in a numpy buffer filled by torch ops with `out=`, so the in-child allocation watch
sees neither (numpy, and out= writes into existing storage). Each row block breaks the
memory rule (block_size * M elements, far above B*H*block_size**2 and every input); the
kernel's measure of the child's memory, with a budget of a few of the rule's tiles, sees
it. Everything else is the correct alternative's code."""
import math

import numpy as np
import torch

NEG = float("-inf")


def flash_attention_forward(q, k, v, causal=False, scale=None, block_size=64):
    b, h, n, d = q.shape
    m = k.shape[-2]
    if causal and n != m:
        raise ValueError("causal attention needs N == M")
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[work]
    rows_np = np.empty((block_size, m), dtype=np_dtype)
    rows = torch.from_numpy(rows_np)
    o = torch.empty(b, h, n, d, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h, n, dtype=work, device=q.device)
    kk, vv = k.to(work), v.to(work)
    for bi in range(b):
        for hi in range(h):
            for i0 in range(0, n, block_size):
                i1 = min(n, i0 + block_size)
                s = rows[: i1 - i0]
                torch.matmul(q[bi, hi, i0:i1].to(work), kk[bi, hi].transpose(0, 1), out=s)
                s.mul_(scale)
                if causal:
                    cols = torch.arange(m)
                    s.masked_fill_(cols[None, :] > torch.arange(i0, i1)[:, None], float("-inf"))
                mx = s.amax(-1, keepdim=True)
                s.sub_(mx).exp_()
                tot = s.sum(-1, keepdim=True)
                o[bi, hi, i0:i1] = (s @ vv[bi, hi] / tot).to(q.dtype)
                lse[bi, hi, i0:i1] = (mx + tot.log()).squeeze(-1)
    return o, lse


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


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[2]
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
