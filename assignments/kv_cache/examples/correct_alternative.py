"""Correct, written differently: one buffer for keys and values together, the group of
query heads folded into the sequence (no copy of the cache), a softmax by hand, a mask
built with arange, and a SinkCache whose window is a ring buffer that keys() puts in
order (a copy of the kept positions: allowed for SinkCache)."""
import math

import torch
import torch.nn.functional as F


class KVCache:
    def __init__(self, batch, kv_heads, head_dim, max_len, dtype, device=None):
        self.buf = torch.zeros(2, batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.length = 0

    def append(self, k, v):
        end = self.length + k.size(-2)
        if end > self.buf.size(3):
            raise ValueError(f"{end} positions > max_len {self.buf.size(3)}")
        self.buf[0, :, :, self.length:end].copy_(k)
        self.buf[1, :, :, self.length:end].copy_(v)
        self.length = end

    def __len__(self):
        return self.length

    def keys(self):
        return self.buf[0].narrow(2, 0, self.length)

    def values(self):
        return self.buf[1].narrow(2, 0, self.length)


def _attention(q, k, v, first_visible=None):
    B, Hq, T, D = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    g = Hq // Hkv
    dt = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    qq = q.to(dt).reshape(B, Hkv, g * T, D) * (D ** -0.5)
    s = torch.einsum("bhtd,bhld->bhtl", qq, k.to(dt)).reshape(B, Hkv, g, T, L)
    if first_visible is not None:
        rows = torch.arange(T, device=q.device).view(T, 1)
        cols = torch.arange(L, device=q.device).view(1, L)
        s = torch.where(cols <= rows + first_visible, s, torch.tensor(-math.inf, dtype=dt, device=q.device))
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    p = e / e.sum(dim=-1, keepdim=True)
    o = torch.einsum("bhtl,bhld->bhtd", p.reshape(B, Hkv, g * T, L), v.to(dt))
    return o.reshape(B, Hq, T, D).to(q.dtype)


def prefill(q, k, v, cache):
    start = len(cache)
    cache.append(k, v)
    return _attention(q, cache.keys(), cache.values(), first_visible=start)


def decode_step(q, k, v, cache):
    cache.append(k, v)
    return _attention(q, cache.keys(), cache.values())


class SinkCache:
    def __init__(self, batch, kv_heads, head_dim, num_sinks, window, dtype, device=None):
        self.num_sinks, self.window = num_sinks, window
        self.sink_k = torch.zeros(batch, kv_heads, num_sinks, head_dim, dtype=dtype, device=device)
        self.sink_v = torch.zeros_like(self.sink_k)
        self.ring_k = torch.zeros(batch, kv_heads, window, head_dim, dtype=dtype, device=device)
        self.ring_v = torch.zeros_like(self.ring_k)
        self.seen = 0  # positions ever appended

    def append(self, k, v):
        for t in range(k.shape[2]):
            if self.seen < self.num_sinks:
                self.sink_k[:, :, self.seen] = k[:, :, t]
                self.sink_v[:, :, self.seen] = v[:, :, t]
            else:
                slot = (self.seen - self.num_sinks) % self.window
                self.ring_k[:, :, slot] = k[:, :, t]
                self.ring_v[:, :, slot] = v[:, :, t]
            self.seen += 1

    def __len__(self):
        return min(self.seen, self.num_sinks + self.window)

    def _ordered(self, sinks, ring):
        n_sinks = min(self.seen, self.num_sinks)
        in_ring = min(max(self.seen - self.num_sinks, 0), self.window)
        if in_ring < self.window:
            order = torch.arange(in_ring)
        else:
            oldest = (self.seen - self.num_sinks) % self.window
            order = (torch.arange(self.window) + oldest) % self.window
        return torch.cat([sinks[:, :, :n_sinks], ring[:, :, order.to(ring.device)]], dim=2)

    def keys(self):
        return self._ordered(self.sink_k, self.ring_k)

    def values(self):
        return self._ordered(self.sink_v, self.ring_v)
