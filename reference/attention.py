r"""Reference attention, forward and backward, written as the math (float64 by default).

For queries $q[B,H,N,D]$, keys and values $k, v[B,H,M,D]$, scale $\tau$ (default $1/\sqrt D$):
    $S = \tau\, q k^\top$, masked to $-\infty$ where $j > i$ when causal (then $N = M$);
    $\operatorname{lse}_i = \log \sum_j e^{S_{ij}}$,  $P = e^{S - \operatorname{lse}}$,  $o = P v$.
Backward with $do$ and $\Delta_i = \sum_d do_{id}\, o_{id}$ (which equals $\sum_j P_{ij} dP_{ij}$):
    $dv = P^\top do$,  $dP = do\, v^\top$,  $dS = P \odot (dP - \Delta)$,  $dq = \tau\, dS\, k$,  $dk = \tau\, dS^\top q$.
`lse` is float32 for float16/bfloat16 inputs (as FlashAttention keeps it), else the inputs' dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _scores(q: Tensor, k: Tensor, causal: bool, scale: float | None) -> Tensor:
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    if causal and n != m:
        raise ValueError("causal attention needs N == M")
    s = (q @ k.transpose(-2, -1)) * (scale if scale is not None else 1.0 / math.sqrt(d))
    if causal:
        keep = torch.ones(n, m, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return s


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def attention_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool = False,
                      scale: float | None = None, work: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """`work`: the dtype of every step (float64: the truth; the inputs' own dtype: the
    plain implementation whose error the hidden suite's tolerances are measured by)."""
    s = _scores(q.to(work), k.to(work), causal, scale)
    lse = torch.logsumexp(s, dim=-1)
    o = torch.exp(s - lse[..., None]) @ v.to(work)
    return o.to(q.dtype), lse.to(_lse_dtype(q.dtype))


def attention_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, causal: bool = False,
                       scale: float | None = None, work: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    d = q.shape[-1]
    tau = scale if scale is not None else 1.0 / math.sqrt(d)
    q64, k64, v64, do64, o64 = (t.to(work) for t in (q, k, v, do, o))
    p = torch.exp(_scores(q64, k64, causal, scale) - lse.to(work)[..., None])
    dv = p.transpose(-2, -1) @ do64
    dp = do64 @ v64.transpose(-2, -1)
    delta = (do64 * o64).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    return (tau * ds @ k64).to(q.dtype), (tau * ds.transpose(-2, -1) @ q64).to(k.dtype), dv.to(v.dtype)
