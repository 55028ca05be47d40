"""Hidden suite of `kv_cache`: every requirement the notebook lists, on inputs the student
has not seen. Outputs are compared with attention computed in float64 from the same
inputs (reference.kv_cache, replayed op by op) within the bound of `checks.py`; cache
contents are compared exactly (they are stored, not computed). Memory rules rest on the
kernel's measure of the child (watch_memory), never on what the child reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.judge.compare import CaseTally, GradingFailure, expect_memory_within, first_failure
from autograder.judge.suite import generator, load_module
from reference import kv_cache as ref

HERE = Path(__file__).resolve().parent
C = load_module(HERE / "checks.py", "kv_cache_checks")
H = load_module(HERE.parent / "harness.py", "kv_cache_harness")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [(4, 4), (8, 2), (6, 1)]  # (Hq, Hkv): multi-head, grouped-query, multi-query


def draw(g, B, H_, T, D, dtype):
    return torch.randn(B, H_, T, D, generator=g, dtype=torch.float64).to(dtype)


def qkv(g, B, Hq, Hkv, T, D, dtype, peaked=False):
    q, k, v = draw(g, B, Hq, T, D, torch.float64), draw(g, B, Hkv, T, D, torch.float64), draw(g, B, Hkv, T, D, dtype)
    if peaked:
        q, k = peaked_pair(g, q, k)
    return q.to(dtype), k.to(dtype), v


def peaked_pair(g, q, k, level=500.0, spread=1.0):
    """Every score near `level`, differing by about `spread` (q and k share one direction):
    the measurement of bench/kv_cache_tolerances.py."""
    D = q.shape[-1]
    e = torch.randn(D, generator=g, dtype=torch.float64)
    e = e / e.norm()
    a = (level * D ** 0.5) ** 0.5
    noise = spread * D ** 0.25 / a
    return a * e + noise * (q - (q @ e)[..., None] * e), a * e + noise * (k - (k @ e)[..., None] * e)


def plan(g, B, Hq, Hkv, D, dtype, steps, peaked=False):
    """steps: ("prefill", T) / ("decode",) / ("append", T)."""
    ops = []
    for s in steps:
        T = 1 if s[0] == "decode" else s[1]
        q, k, v = qkv(g, B, Hq, Hkv, T, D, dtype, peaked)
        ops.append(("append", k, v) if s[0] == "append" else (s[0], q, k, v))
    return ops


def run_case(student, device, kind, kwargs, ops, *, check_contents=True, outputs=True):
    kwargs = dict(kwargs, device=device) if device != "cpu" else dict(kwargs)
    what = C.describe_ops(kind, kwargs, ops)
    # The truth first, and the bounds from copies: the child may work in the very memory of
    # the judge's tensors (the shared request file), and an in-place change would move them.
    truth, ops_before = C.truth_of(kind, kwargs, ops, ref), [tuple(C.copied(x) for x in op) for op in ops]
    reply = student.task("run_cache", kind, kwargs, ops, check_contents, what=what).value
    return C.check_run(reply, truth, ops_before, what=what, ref=ref, check_contents=check_contents, outputs=outputs)


def kv_kwargs(B, Hkv, D, max_len, dtype):
    return {"batch": B, "kv_heads": Hkv, "head_dim": D, "max_len": max_len, "dtype": dtype}


def sink_kwargs(B, Hkv, D, num_sinks, window, dtype):
    return {"batch": B, "kv_heads": Hkv, "head_dim": D, "num_sinks": num_sinks, "window": window, "dtype": dtype}


# -- KVCache ----------------------------------------------------------------------------
@pytest.mark.function("KVCache")
@pytest.mark.points(6)
def test_kvcache_appends(student, device):
    """Appends of 1 to 40 positions: keys()/values() equal what was appended, len counts it."""
    score = CaseTally()
    for i, (chunks, dtype) in enumerate((([3, 1, 1, 40, 7], torch.float32), ([1] * 9, torch.bfloat16),
                                        ([16, 16, 16, 16], torch.float16), ([5, 2, 30], torch.float32))):
        g = generator(f"kv-appends/{i}")
        ops = [("append", draw(g, 2, 3, T, 8, dtype), draw(g, 2, 3, T, 8, dtype)) for T in chunks]
        score.add(run_case(student, device, "kv", kv_kwargs(2, 3, 8, 64, dtype), ops, outputs=False))
    score.finish()


@pytest.mark.function("KVCache")
@pytest.mark.points(4)
def test_kvcache_append_past_max_len_raises(student, device):
    """Filling max_len exactly is fine; one position more raises ValueError."""
    score = CaseTally()
    for fill, extra in ((16, 1), (14, 3), (0, 17), (10, 6)):
        kwargs = kv_kwargs(1, 2, 4, 16, torch.float32)
        kwargs = dict(kwargs, device=device) if device != "cpu" else kwargs
        call = f"KVCache(max_len=16): append({fill} positions), then append({extra} positions)"
        r = student.task("append_past_end", kwargs, fill, extra, device, what=call).value
        fits = fill + extra <= 16
        if fits and r["raised"]:
            score.add(f"{call}: raised {r['raised']}, but {fill + extra} positions fit in max_len = 16")
        elif not fits and r["raised"] != "ValueError":
            score.add(f"{call}: {'raised ' + r['raised'] if r['raised'] else 'did not raise'}; expected ValueError "
                      f"({fill + extra} positions do not fit in max_len = 16)")
        else:
            score.add(None)
    score.finish()


@pytest.mark.function("KVCache")
@pytest.mark.points(6)
def test_kvcache_keys_are_views(student, device):
    """keys()/values() are views of one buffer allocated in __init__: the same storage after
    every append, holding all max_len positions from the first append on."""
    score = CaseTally()
    for dtype in (torch.float32, torch.bfloat16):
        kwargs = kv_kwargs(2, 3, 16, 50, dtype)
        kwargs = dict(kwargs, device=device) if device != "cpu" else kwargs
        call = f"KVCache(2, 3, 16, max_len=50, {C.dtype_name(dtype)}), appends of 4, 1, 1, 20, 1 positions"
        seen = student.task("view_probe", kwargs, [4, 1, 1, 20, 1], 11, device, what=call).value
        full = 2 * 3 * 50 * 16 * torch.empty((), dtype=dtype).element_size()
        msg = None
        for name in ("keys", "values"):
            first = seen[0][name][0]
            for i, s in enumerate(seen):
                ptr, nbytes, _ = s[name]
                if ptr != first:
                    msg = (f"{call}: {name}() after append {i + 1} lives in other memory than after the first: a copy "
                           "(torch.cat, clone, a new tensor) instead of a view of the buffer allocated in __init__")
                elif nbytes < full:
                    msg = (f"{call}: {name}() after append {i + 1} is backed by {nbytes:,} bytes; the buffer of "
                           f"max_len = 50 positions is {full:,}: allocate [B, Hkv, max_len, D] once in __init__ "
                           "and return slices of it")
                if msg:
                    break
            if msg:
                break
        score.add(msg)
    score.finish()


KV_MEM = dict(B=1, H=4, D=512, max_len=4096, fill_chunk=256, decodes=32)
MEM_ALLOWANCE = 12 * 2**20


@pytest.mark.function("KVCache")
@pytest.mark.points(8)
def test_kvcache_memory_is_the_preallocated_buffer(student, device):
    """A float32 cache of 4096 positions (64 MiB) filled by appends of 256 positions: the
    fill's peak memory (the kernel's measure) is the cache plus 12 MiB at most; then 32
    decode steps add at most one copy of keys or values (32 MiB) plus 12 MiB."""
    m = KV_MEM
    cache_bytes = 2 * m["B"] * m["H"] * m["max_len"] * m["D"] * 4
    make = f"KVCache({m['B']}, {m['H']}, {m['D']}, max_len={m['max_len']}, float32)"
    fill_call = f"{make} filled by appends of {m['fill_chunk']} positions up to {m['max_len'] - m['decodes']}"
    decode_call = f"{m['decodes']} decode_step calls (Hq = Hkv = {m['H']}) on the {make}"
    student.restart()  # a fresh process: nothing left over from earlier tests
    # torch's lazy set-up (and the allocator's first pages) happen in a small run first.
    student.task("fill_cache", 1, 2, 16, 64, 16, 4, torch.float32, 1, device, watch_memory=True, what="a warm-up")
    student.task("decode_cached", 1, watch_memory=True, what="a warm-up")
    score = CaseTally()
    filled = student.task("fill_cache", m["B"], m["H"], m["D"], m["max_len"], m["fill_chunk"], m["decodes"],
                          torch.float32, 2024, device, watch_memory=True, timeout=60, what=fill_call)
    score.run(expect_memory_within, filled.memory, cache_bytes + MEM_ALLOWANCE, call=fill_call,
              host=device == "cpu", advice=(
                  f"The cache itself is {cache_bytes / 2**20:.0f} MiB: allocate it once in __init__ and write appends "
                  "into it (a cache grown with torch.cat holds the old and the new copy while it grows)."))
    r = student.task("decode_cached", 4, watch_memory=True, timeout=60, what=decode_call)
    ops = list(H.fill_plan(m["B"], m["H"], m["D"], m["max_len"], m["fill_chunk"], m["decodes"], torch.float32, 2024))
    k_all = torch.cat([op[-2] for op in ops], 2).double()  # ("append", k, v) and ("decode", q, k, v)
    v_all = torch.cat([op[-1] for op in ops], 2).double()
    msg = None if r.value["len"] == m["max_len"] else \
        f"{decode_call}: len(cache) is {r.value['len']} at the end, expected {m['max_len']}"
    for j, got in enumerate(r.value["outputs"]):
        n = m["max_len"] - len(r.value["outputs"]) + j + 1
        q = ops[len(ops) - len(r.value["outputs"]) + j][1]
        want = ref.attend(q.double(), k_all[:, :, :n], v_all[:, :, :n])
        msg = msg or C.compare_output(got, want, q, (k_all[:, :, :n], v_all[:, :, :n]),
                                      call=f"{decode_call}: the decode step at position {n}")
    if msg is None:
        msg = first_failure(expect_memory_within, r.memory, cache_bytes // 2 + MEM_ALLOWANCE, call=decode_call,
                            host=device == "cpu", advice=(
                                "keys()/values() are views: a decode step may make one temporary copy of keys or "
                                "of values (32 MiB each here), not of both at once."))
    score.add(msg)
    score.finish()


# -- prefill and decode_step ------------------------------------------------------------
def layout_cases(label, steps, dtypes=DTYPES, layouts=LAYOUTS, peaked=False, B=2, D=32):
    for Hq, Hkv in layouts:
        for dtype in dtypes:
            g = generator(f"{label}/{Hq}/{Hkv}/{dtype}")
            yield kv_kwargs(B, Hkv, D, 64, dtype), plan(g, B, Hq, Hkv, D, dtype, steps, peaked)


def run_cases(student, device, label, steps, **kw):
    score = CaseTally()
    for kwargs, ops in layout_cases(label, steps, **kw):
        score.add(run_case(student, device, "kv", kwargs, ops, check_contents=False))
    score.finish()


@pytest.mark.function("prefill")
@pytest.mark.points(10)
def test_prefill_into_empty_cache(student, device):
    """One prompt of 13 positions: causal attention, multi-head / grouped-query / multi-query,
    float32 / float16 / bfloat16."""
    run_cases(student, device, "prefill-empty", [("prefill", 13)])


@pytest.mark.function("decode_step")
@pytest.mark.points(12)
def test_decode_steps_after_prefill(student, device):
    """A prompt of 9, then 6 decode steps: every output equals causal attention over the
    whole sequence so far, in every layout and dtype."""
    run_cases(student, device, "decode", [("prefill", 9)] + [("decode",)] * 6)


@pytest.mark.function("prefill")
@pytest.mark.points(8)
def test_prefill_after_cached_positions(student, device):
    """A second prompt after cached positions (prompt of 6, 2 decode steps, a prompt of 5,
    a decode step): query i of the second prompt sees keys 0 .. n + i."""
    run_cases(student, device, "prefill-cached", [("prefill", 6), ("decode",), ("decode",), ("prefill", 5),
                                                  ("decode",)])


@pytest.mark.function("decode_step")
@pytest.mark.points(8)
def test_half_types_compute_in_float32(student, device):
    """float16 and bfloat16 inputs whose scores are all near 500 and differ by about 1: scores
    and softmax in float32 keep the differences, in the half type they are lost."""
    run_cases(student, device, "peaked", [("prefill", 12), ("decode",), ("decode",)],
              dtypes=[torch.float16, torch.bfloat16], layouts=[(4, 4), (8, 2)], peaked=True, D=64)


@pytest.mark.function("decode_step")
@pytest.mark.points(3)
def test_inputs_unchanged(student, device):
    """prefill and decode_step leave q, k and v as they were (read back by the judge)."""
    g = generator("unchanged")
    for dtype in (torch.float32, torch.bfloat16):
        ops = plan(g, 1, 8, 2, 16, dtype, [("prefill", 5), ("decode",), ("decode",)])
        before = [[t.clone() for t in op[1:]] for op in ops]
        kwargs = kv_kwargs(1, 2, 16, 32, dtype)
        kwargs = dict(kwargs, device=device) if device != "cpu" else kwargs
        what = C.describe_ops("kv", kwargs, ops)
        truth = C.truth_of("kv", kwargs, ops, ref)
        r = student.task("run_cache", "kv", kwargs, ops, False, what=what, return_args=True)
        # Unchanged inputs earn points only from a run that computes the right outputs.
        wrong = C.check_run(r.value, truth, [(op[0], *was) for op, was in zip(ops, before)], what=what, ref=ref,
                            check_contents=False)
        if wrong:
            raise GradingFailure(wrong)
        after = r.args_after[2] if r.args_after else None
        if after is None:
            raise GradingFailure(f"{what}: the inputs could not be read back")
        for i, (op, was) in enumerate(zip(after, before)):
            for name, t, w in zip(("q", "k", "v"), op[1:], was):
                if not torch.equal(t.detach().cpu(), w):
                    raise GradingFailure(f"{what}: op {i + 1} ({op[0]}) changed its input {name}: functions leave "
                                         "their inputs as they were (an in-place operation on q, k or v?)")


# -- SinkCache ----------------------------------------------------------------------------
def sink_contents(student, device, label, num_sinks, window, chunk_lists, dtypes=(torch.float32, torch.bfloat16)):
    score = CaseTally()
    for i, chunks in enumerate(chunk_lists):
        for dtype in dtypes:
            g = generator(f"{label}/{i}/{dtype}")
            ops = [("append", draw(g, 2, 2, T, 4, dtype), draw(g, 2, 2, T, 4, dtype)) for T in chunks]
            score.add(run_case(student, device, "sink", sink_kwargs(2, 2, 4, num_sinks, window, dtype), ops,
                               outputs=False))
    score.finish()


@pytest.mark.function("SinkCache")
@pytest.mark.points(7)
def test_sink_cache_contents(student, device):
    """Appends of 1 to 50 positions: len, keys() and values() are the first num_sinks positions
    and the last `window`, in order (sinks never evicted, the window exactly `window` long)."""
    sink_contents(student, device, "sink", 4, 10, [[1] * 30, [3, 2, 7, 1, 1, 12, 1, 5], [50, 1, 1], [2, 2, 20, 3]])


@pytest.mark.function("SinkCache")
@pytest.mark.points(3)
def test_sink_cache_without_sinks(student, device):
    """num_sinks = 0: a plain sliding window of the last `window` positions."""
    sink_contents(student, device, "sink-0", 0, 6, [[1] * 15, [4, 9, 1, 2]])


@pytest.mark.function("SinkCache")
@pytest.mark.points(3)
def test_sink_cache_window_of_one(student, device):
    """window = 1: the sinks and the newest position only."""
    sink_contents(student, device, "sink-w1", 2, 1, [[1] * 8, [3, 1, 4, 1]])


@pytest.mark.function("SinkCache")
@pytest.mark.points(6)
def test_sink_decode_stream(student, device):
    """A prompt of 10 (it fits), then 290 decode steps through SinkCache(num_sinks=4,
    window=24): every output against attention over the kept positions."""
    score = CaseTally()
    for Hq, Hkv in ((4, 4), (8, 2)):
        for dtype in (torch.float32, torch.bfloat16):
            g = generator(f"sink-stream/{Hq}/{Hkv}/{dtype}")
            ops = plan(g, 1, Hq, Hkv, 16, dtype, [("prefill", 10)] + [("decode",)] * 290)
            score.add(run_case(student, device, "sink", sink_kwargs(1, Hkv, 16, 4, 24, dtype), ops,
                               check_contents=False))
    score.finish()


SINK_MEM = dict(B=1, Hq=4, Hkv=4, D=512, num_sinks=4, window=60, tokens=4096)


@pytest.mark.function("SinkCache")
@pytest.mark.points(6)
def test_sink_cache_memory_stays_bounded(student, device):
    """4096 decode steps through SinkCache(1, 4, 512, 4, 60) in float32: the call's peak memory
    (the kernel's measure) stays within 12 MiB; the last outputs and the final cache are right."""
    m = SINK_MEM
    call = (f"SinkCache({m['B']}, {m['Hkv']}, {m['D']}, num_sinks={m['num_sinks']}, window={m['window']}, float32) "
            f"through {m['tokens']} decode_step calls")
    student.restart()
    student.task("sink_stream", 1, 2, 2, 16, 2, 4, 16, torch.float32, 1, 1, device, watch_memory=True,
                 what="a small warm-up run")
    r = student.task("sink_stream", m["B"], m["Hq"], m["Hkv"], m["D"], m["num_sinks"], m["window"], m["tokens"],
                     torch.float32, 77, 3, device, watch_memory=True, timeout=60, what=call)
    kept = ref.kept_positions(m["tokens"], m["num_sinks"], m["window"])
    ops = list(H.stream_plan(m["B"], m["Hq"], m["Hkv"], m["D"], m["tokens"], torch.float32, 77))
    k_all = torch.cat([op[2] for op in ops], 2).double()
    v_all = torch.cat([op[3] for op in ops], 2).double()
    if r.value["len"] != len(kept):
        raise GradingFailure(f"{call}: len(cache) is {r.value['len']} at the end, expected {len(kept)}")
    for name, got, want in (("keys", r.value["keys"], k_all[:, :, kept]), ("values", r.value["values"], v_all[:, :, kept])):
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape) \
                or not torch.equal(got.detach().cpu().double(), want):
            raise GradingFailure(f"{call}: {name}() at the end is not the first {m['num_sinks']} positions and the "
                                 f"last {m['window']} (positions {kept[:5]} ... {kept[-2:]})")
    for j, got in enumerate(r.value["outputs"]):
        t = m["tokens"] - len(r.value["outputs"]) + j + 1
        keep = ref.kept_positions(t, m["num_sinks"], m["window"])
        q = ops[t - 1][1]
        want = ref.attend(q.double(), k_all[:, :, keep], v_all[:, :, keep])
        msg = C.compare_output(got, want, q, (k_all[:, :, keep], v_all[:, :, keep]), call=f"{call}: step {t}")
        if msg:
            raise GradingFailure(msg)
    expect_memory_within(r.memory, MEM_ALLOWANCE, call=call, host=device == "cpu", advice=(
        f"A SinkCache holds {m['num_sinks'] + m['window']} positions (1 MiB here) however long the stream; keeping "
        f"every position would take {2 * m['tokens'] * m['Hkv'] * m['D'] * 4 / 2**20:.0f} MiB. Evict the positions "
        "between the sinks and the window as they leave it."))
