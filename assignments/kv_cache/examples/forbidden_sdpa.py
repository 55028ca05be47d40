"""torch's fused attention (forbidden)."""
import math

import torch


class KVCache:
    def __init__(self, batch, kv_heads, head_dim, max_len, dtype, device=None):
        self.max_len = max_len
        self.k = torch.empty(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.n = 0

    def append(self, k, v):
        T = k.shape[2]
        if self.n + T > self.max_len:
            raise ValueError("cache full")
        self.k[:, :, self.n:self.n + T] = k
        self.v[:, :, self.n:self.n + T] = v
        self.n += T

    def __len__(self):
        return self.n

    def keys(self):
        return self.k[:, :, :self.n]

    def values(self):
        return self.v[:, :, :self.n]


def attend(q, k, v, offset=None):
    B, Hq, T, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    g = Hq // Hkv
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    mask = None
    if offset is not None:
        mask = ~torch.ones(T, L, dtype=torch.bool, device=q.device).triu(offset + 1)
    o = torch.nn.functional.scaled_dot_product_attention(q.to(work), k.to(work), v.to(work), attn_mask=mask,
                                                         enable_gqa=True)
    return o.to(q.dtype)


def prefill(q, k, v, cache):
    n = len(cache)
    cache.append(k, v)
    return attend(q, cache.keys(), cache.values(), offset=n)


def decode_step(q, k, v, cache):
    cache.append(k, v)
    return attend(q, cache.keys(), cache.values())


class SinkCache:
    def __init__(self, batch, kv_heads, head_dim, num_sinks, window, dtype, device=None):
        self.S, self.W = num_sinks, window
        shape = (batch, kv_heads, num_sinks + window, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.n = 0

    def append(self, k, v):
        for buf, new in ((self.k, k), (self.v, v)):
            both = torch.cat([buf[:, :, :self.n], new], dim=2)
            if both.shape[2] > self.S + self.W:
                both = torch.cat([both[:, :, :self.S], both[:, :, both.shape[2] - self.W:]], dim=2)
            buf[:, :, :both.shape[2]] = both
        self.n = min(self.n + k.shape[2], self.S + self.W)

    def __len__(self):
        return self.n

    def keys(self):
        return self.k[:, :, :self.n]

    def values(self):
        return self.v[:, :, :self.n]
