"""On a GPU: the child's exec lock lets Triton compile and launch a kernel (ptxas and the
C compiler are on its allow-list) and refuses a second Python. Prints one line per
attempt; exit 1 if Triton failed or a second Python started.
Run on a GPU: `python bench/gpu_exec_probe.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_exec_lock import ATTACKS, PROBE  # noqa: E402

from autograder.judge.student import StudentCode  # noqa: E402
from autograder.sandbox import Limits  # noqa: E402

TRITON = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _add(x, y, out, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(out + i, tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)


def add(x, y):
    out = torch.empty_like(x)
    _add[(triton.cdiv(x.numel(), 256),)](x, y, out, x.numel(), BLOCK=256)
    return out
'''


def main() -> int:
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    code = StudentCode(PROBE + TRITON, Limits(call_seconds=120, submission_seconds=600), device="cuda", gpu=True)
    bad = 0
    try:
        x = torch.randn(1000)
        got = code.call("add", x, x).value
        ok = torch.allclose(got.cpu(), 2 * x)
        print(f"triton kernel compiled and ran in the sandbox: {ok}; sandbox: {code.sandbox}")
        bad += not ok
        # pty.spawn last: its fork carries on as a copy of the child when exec fails.
        for kind in [k for k in ATTACKS if k != "pty_spawn"] + ["pty_spawn"]:
            try:
                out = code.call("attempt", kind).value
            except Exception as e:  # noqa: BLE001
                out = f"failed: {str(e)[:100]}"
            started = out in ("42", "started")
            bad += started
            print(f"{kind}: {out[:120]}{'  <- STARTED' if started else ''}")
    finally:
        code.close()
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
