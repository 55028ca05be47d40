"""Peak memory of attention's tiled calls by the kernel's measure, per submission and shape.

`python bench/attention_memory.py "[B,H,N,M,D]" FILE...`: for each file (a .py or a
notebook), the MiB beyond what the child held (peak_extra_bytes) for flash forward,
backward and, when N == M, their causal versions, next to the MiB of the call's inputs
and outputs. Used to set the memory budget of assignments/attention/tests/test_hidden.py
(bench/RESULTS.md, "Trust").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograder import assignment  # noqa: E402
from autograder.authoring.notebook import extract  # noqa: E402
from autograder.judge.student import StudentCode  # noqa: E402
from autograder.judge.suite import load_module  # noqa: E402
from autograder.sandbox import Limits  # noqa: E402
from reference import attention as ref  # noqa: E402

C = load_module(REPO / "assignments/attention/tests/checks.py")
BLOCK = 128


def measure(source: str, shape: list[int]) -> list[tuple]:
    b, h, n, m, d = shape
    a = assignment.load("attention")
    st = StudentCode(source, Limits(call_seconds=120, submission_seconds=600, watch_memory=True), guard=a.guard)
    out = []
    try:
        for fn, causal in (("flash_attention_forward", False), ("flash_attention_backward", False),
                           ("flash_attention_forward", True), ("flash_attention_backward", True)):
            if causal and n != m:
                continue
            q, k, v, do = C.make_qkv("m", b, h, n, m, d)
            warm = C.make_qkv("w", 1, 2, 100, 100, d)
            kw = {"causal": causal, "scale": None, "block_size": BLOCK}
            if fn.endswith("forward"):
                args, warm_args, outs = (q, k, v), warm[:3], (q,)
            else:
                o64, l64 = ref.attention_forward(*(t.double() for t in (q, k, v)), causal)
                args = (do, q, k, v, o64.float(), l64.float())
                wo, wl = ref.attention_forward(*warm[:3], causal)
                warm_args, outs = (warm[3], *warm[:3], wo, wl), (q, k, v)
            st.restart()
            st.call(fn, *warm_args, watch_memory=True, **kw)
            r = st.call(fn, *args, watch_memory=True, **kw)
            io = sum(t.numel() * t.element_size() for t in (*args, *outs))
            label = ("fwd" if fn.endswith("forward") else "bwd") + (" causal" if causal else "")
            out.append((label, round(r.memory["peak_extra_bytes"] / 2**20, 2), round(io / 2**20, 2)))
    finally:
        st.close()
    return out


def main() -> None:
    shape = json.loads(sys.argv[1])
    for f in sys.argv[2:]:
        print(Path(f).name, measure(extract(f).source, shape), flush=True)


if __name__ == "__main__":
    main()
