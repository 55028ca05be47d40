r"""Reference of `kv_cache`: a preallocated KV cache, prefill and decode steps, grouped-query
attention and StreamingLLM's sink-and-window cache (Xiao et al., 2024).
`assignments/kv_cache/tests/test_reference.py` checks it against
`torch.nn.functional.scaled_dot_product_attention` (with `enable_gqa`) over the whole
sequence, in float64.

Shapes: queries q [B, Hq, T, D], keys and values k, v [B, Hkv, T, D], Hq a multiple of Hkv;
query head h reads key/value head h // (Hq // Hkv); scale 1 / sqrt(D). For float16 and
bfloat16 inputs the scores, the softmax and the weighted sum are computed in float32 and
the output is returned in the input's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

HALF = (torch.float16, torch.bfloat16)


def attend(q: Tensor, k: Tensor, v: Tensor, offset: int | None = None) -> Tensor:
    """Attention of q [B, Hq, T, D] over k, v [B, Hkv, L, D]. `offset`: None lets every
    query see every key; an integer makes it causal with query i seeing keys 0..offset + i."""
    B, Hq, T, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    group = Hq // Hkv
    work = torch.float32 if q.dtype in HALF else q.dtype
    # Heads j*group .. j*group + group - 1 read kv head j: side by side as [B, Hkv, group*T, D].
    qg = q.to(work).reshape(B, Hkv, group * T, D)
    scores = (qg @ k.to(work).mT) * (1.0 / math.sqrt(D))
    if offset is not None:
        i = torch.arange(T, device=q.device)[:, None]
        j = torch.arange(L, device=q.device)[None, :]
        scores = scores.view(B, Hkv, group, T, L).masked_fill(j > offset + i, float("-inf")).view(B, Hkv, group * T, L)
    out = torch.softmax(scores, dim=-1) @ v.to(work)
    return out.reshape(B, Hq, T, D).to(q.dtype)


class KVCache:
    """Keys and values of one layer, [B, Hkv, max_len, D] each, allocated once."""

    def __init__(self, batch, kv_heads, head_dim, max_len, dtype, device=None):
        self.max_len = max_len
        self.k = torch.empty(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self._len = 0

    def append(self, k: Tensor, v: Tensor) -> None:
        T = k.shape[2]
        if self._len + T > self.max_len:
            raise ValueError(f"the cache holds {self._len} of {self.max_len} positions: {T} more do not fit")
        self.k[:, :, self._len:self._len + T] = k
        self.v[:, :, self._len:self._len + T] = v
        self._len += T

    def __len__(self) -> int:
        return self._len

    def keys(self) -> Tensor:
        return self.k[:, :, :self._len]

    def values(self) -> Tensor:
        return self.v[:, :, :self._len]


class SinkCache:
    """The first `num_sinks` positions ever appended and the most recent `window`, in one
    buffer of num_sinks + window positions: sinks at the front, the window after them
    (the window shifts left as it slides, so keys() stays a view)."""

    def __init__(self, batch, kv_heads, head_dim, num_sinks, window, dtype, device=None):
        self.num_sinks, self.window = num_sinks, window
        self.k = torch.empty(batch, kv_heads, num_sinks + window, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self._sinks = 0   # sink slots filled
        self._recent = 0  # window slots filled

    def _write(self, buf: Tensor, new: Tensor) -> None:
        S, W = self.num_sinks, self.window
        take = min(S - self._sinks, new.shape[2])
        buf[:, :, self._sinks:self._sinks + take] = new[:, :, :take]
        rest = new[:, :, take:]
        T = rest.shape[2]
        if T >= W:
            buf[:, :, S:S + W] = rest[:, :, T - W:]
        elif T > 0:
            keep = min(self._recent, W - T)
            if keep:
                buf[:, :, S:S + keep] = buf[:, :, S + self._recent - keep:S + self._recent].clone()
            buf[:, :, S + keep:S + keep + T] = rest

    def append(self, k: Tensor, v: Tensor) -> None:
        self._write(self.k, k)
        self._write(self.v, v)
        take = min(self.num_sinks - self._sinks, k.shape[2])
        self._sinks += take
        self._recent = min(self.window, self._recent + k.shape[2] - take)

    def __len__(self) -> int:
        return self._sinks + self._recent

    def keys(self) -> Tensor:
        return self.k[:, :, :len(self)]

    def values(self) -> Tensor:
        return self.v[:, :, :len(self)]


def prefill(q: Tensor, k: Tensor, v: Tensor, cache) -> Tensor:
    before = len(cache)
    cache.append(k, v)
    return attend(q, cache.keys(), cache.values(), offset=before)


def decode_step(q: Tensor, k: Tensor, v: Tensor, cache) -> Tensor:
    cache.append(k, v)
    return attend(q, cache.keys(), cache.values())


def kept_positions(total: int, num_sinks: int, window: int) -> list[int]:
    """Which of `total` streamed positions a SinkCache keeps, in order."""
    sinks = list(range(min(num_sinks, total)))
    return sinks + list(range(max(len(sinks), total - window), total))
