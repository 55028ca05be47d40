"""The reference of `kv_cache` against PyTorch's own attention: every prefill/decode output
of a run through the cache equals torch.nn.functional.scaled_dot_product_attention (with
enable_gqa, causal) over the whole sequence, in float64. Run by `dlopt check kv_cache`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autograder.judge.suite import generator, randn
from reference import kv_cache as ref


def _sdpa_causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def test_cached_runs_are_causal_attention():
    # float64 throughout: the two formulations differ by a few ulps (measured 7e-16).
    for Hq, Hkv in ((4, 4), (8, 2), (6, 1)):
        g = generator(f"ref/{Hq}/{Hkv}")
        N = 40
        q, k, v = (randn(g, 2, h, N, 16, dtype=torch.float64) for h in (Hq, Hkv, Hkv))
        cache = ref.KVCache(2, Hkv, 16, 64, torch.float64)
        outs, t = [], 0
        for T in (9, 1, 1, 1, 12, 1, 15):
            fn = ref.decode_step if T == 1 else ref.prefill
            outs.append(fn(q[:, :, t:t + T], k[:, :, t:t + T], v[:, :, t:t + T], cache))
            t += T
        torch.testing.assert_close(torch.cat(outs, 2), _sdpa_causal(q, k, v), rtol=1e-12, atol=1e-12)


def test_sink_cache_decode_is_attention_over_the_kept_positions():
    g = generator("ref/sink")
    S, W, N = 3, 7, 60
    q, k, v = (randn(g, 1, h, N, 8, dtype=torch.float64) for h in (4, 2, 2))
    cache = ref.SinkCache(1, 2, 8, S, W, torch.float64)
    for t in range(N):
        o = ref.decode_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache)
        kept = ref.kept_positions(t + 1, S, W)
        want = F.scaled_dot_product_attention(q[:, :, t:t + 1], k[:, :, kept], v[:, :, kept], enable_gqa=True)
        torch.testing.assert_close(o, want, rtol=1e-12, atol=1e-12)
        assert torch.equal(cache.keys(), k[:, :, kept]) and torch.equal(cache.values(), v[:, :, kept])


def test_sink_cache_appends_of_any_size_keep_the_sinks_and_the_window():
    g = generator("ref/sink-chunks")
    for S, W in ((4, 10), (0, 6), (2, 1)):
        k = randn(g, 1, 1, 200, 2, dtype=torch.float64)
        cache, t = ref.SinkCache(1, 1, 2, S, W, torch.float64), 0
        for T in (1, 3, 50, 1, 1, 12, 7, 2, 1, 40):
            cache.append(k[:, :, t:t + T], -k[:, :, t:t + T])
            t += T
            kept = ref.kept_positions(t, S, W)
            assert len(cache) == len(kept) and torch.equal(cache.keys(), k[:, :, kept])
            assert torch.equal(cache.values(), -k[:, :, kept])


def test_kv_cache_raises_past_max_len_and_gives_views():
    cache = ref.KVCache(1, 2, 4, 8, torch.float32)
    cache.append(torch.ones(1, 2, 8, 4), torch.ones(1, 2, 8, 4))
    assert cache.keys().untyped_storage().data_ptr() == cache.k.untyped_storage().data_ptr()
    try:
        cache.append(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    except ValueError:
        return
    raise AssertionError("no ValueError past max_len")


def test_half_inputs_are_computed_in_float32():
    g = generator("ref/half")
    q, k, v = (randn(g, 1, 2, 5, 8) for _ in range(3))
    for dtype in (torch.float16, torch.bfloat16):
        o = ref.attend(q.to(dtype), k.to(dtype), v.to(dtype), offset=0)
        want = ref.attend(q.to(dtype).float(), k.to(dtype).float(), v.to(dtype).float(), offset=0).to(dtype)
        assert o.dtype == dtype and torch.equal(o, want)
