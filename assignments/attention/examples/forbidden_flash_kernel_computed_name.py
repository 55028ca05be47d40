"""Hostile (issue 13): both forward functions return torch's own flash-attention kernel,
reached through a name built from strings and `__wrapped__`, so no forbidden name appears
in the source. The kernel raises at the dispatcher in the sandbox, whatever the path: the
forward functions earn nothing; the backward functions (written honestly, from the
correct alternative) keep their points. The computed getattr is also flagged for review."""
import math

import torch

_OPS = torch.ops.aten
NEG = float("-inf")


def _kernel():
    op = getattr(_OPS, "_scaled_dot_product_" + "flash_attention_for_cpu")
    return getattr(op, "__wrapped__", op)


def attention_forward(q, k, v, causal=False, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    with torch.inference_mode(False):
        out = _kernel()(q, k, v, 0.0, causal, scale=scale)
    return out[0], out[1]


def flash_attention_forward(q, k, v, causal=False, scale=None, block_size=64):
    return attention_forward(q, k, v, causal, scale)


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
