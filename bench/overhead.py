"""Per-submission overhead of the isolated path, and the protocol's tensor throughput.

Baseline (same run, same machine): the same hidden suite run in ONE process, student
functions called directly (no sandbox, no protocol, no judge process). Measured:
- whole submission: `grade()` (judge process + sandboxed child + intake + protocol)
  against the in-process baseline, on the correct example of adam, backprop and
  attention, both warm (imports done: the zygotes hold them, the baseline ran once);
- sandbox start: starting a child and loading the submission (torch import included);
- extraction: notebook intake of the Colab example;
- one call's round trip through the protocol (a tiny function), against a direct call;
- tensor throughput: an identity function on float32 tensors of 1 MB to 256 MB
  (bytes sent plus bytes received, per second).
Run: `make bench` or `python bench/overhead.py [--quick]`; prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograder import assignment as assignments  # noqa: E402
from autograder.authoring.notebook import extract  # noqa: E402
from autograder.grading import grade  # noqa: E402
from autograder.judge.student import CallResult, StudentCode  # noqa: E402
from autograder.judge.suite import load_module  # noqa: E402

EXAMPLE = REPO / "assignments/adam/examples/correct_alternative.py"
NOTEBOOK = REPO / "assignments/adam/examples/correct_colab.ipynb"


class InProcessStudent:
    """The baseline: student functions called directly in the judge's own process."""

    def __init__(self, source: str, harness: Path | None):
        self.ns: dict = {}
        exec(compile(source, "submission.py", "exec"), self.ns)
        self.harness = load_module(harness) if harness else None

    def call(self, fn, *args, timeout=None, return_args=False, autograd=True, watch_memory=False, **kwargs):
        args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        if autograd:
            value = self.ns[fn](*args, **kwargs)
        else:
            with torch.inference_mode():
                value = self.ns[fn](*args, **kwargs)
        memory = {"intact": True, "peak_extra_bytes": None} if watch_memory else None
        return CallResult(value, 0.0, list(args) if return_args else None, memory)

    def task(self, name, *args, timeout=None, what=None, watch_memory=False, **kwargs):
        from autograder.protocol import decode, encode, specs

        header, payload = encode([list(args), kwargs])  # specs must be built, as the child does
        args, kwargs = decode(header, payload, specs=specs.build)
        return CallResult(getattr(self.harness, name)(self.ns, *args, **kwargs), 0.0)

    def restart(self):
        pass

    def calibrate_memory(self, *args, **kwargs):
        return None

    def close(self):
        pass


class InProcessPlugin:
    def __init__(self, student):
        self._student = student
        self.failed = 0

    @pytest.fixture(scope="session")
    def student(self):
        return self._student

    @pytest.fixture(scope="session")
    def device(self):
        return "cpu"

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.failed:
            self.failed += 1


def in_process_suite(a, example: Path) -> tuple[float, int]:
    """Seconds for the hidden suite with the student's functions called in this process,
    and how many of its tests failed there (memory rules have no measure in-process)."""
    # pytest's importlib mode would find another assignment's tests/test_hidden.py again
    # under the same module name: forget suite modules first (a judge starts without any).
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(REPO / "assignments")):
            del sys.modules[name]
    started = time.perf_counter()
    plugin = InProcessPlugin(InProcessStudent(example.read_text(), a.harness))
    args = [*map(str, a.suite("hidden")), "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
            "--rootdir", str(a.root), "-o", "addopts=", "--no-header", "--tb=no", "-W", "ignore"]
    pytest.main(args, plugins=[plugin])
    return time.perf_counter() - started, plugin.failed


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and sizes up to 64 MB")
    args = ap.parse_args()
    repeat = 2 if args.quick else 3
    rows = []
    for slug, example in (("adam", EXAMPLE), ("backprop", REPO / "assignments/backprop/examples/correct_alternative.py"),
                          ("attention", REPO / "assignments/attention/examples/correct_alternative.py")):
        a = assignments.load(slug)
        in_process_suite(a, example)  # warm: imports and torch's lazy set-up, as a zygote has them
        failed = []
        base = median_time(lambda a=a, example=example, failed=failed: failed.append(in_process_suite(a, example)[1]), repeat)
        grade(a, example)  # warm: the zygotes start
        full = median_time(lambda a=a, example=example: grade(a, example), repeat)
        note = f" ({max(failed)} memory tests fail in-process)" if failed and max(failed) else ""
        rows.append((f"whole submission ({slug}, {len(grade(a, example).tests)} tests)", f"{full:.2f} s",
                     f"{base:.2f} s (in-process suite{note})", f"{full / base:.2f}x"))
    a = assignments.load("adam")

    code = EXAMPLE.read_text()

    def start():
        s = StudentCode(code, a.limits)
        s.call("adam_step", torch.ones(2), torch.ones(2), torch.zeros(2), torch.zeros(2), 1, 0.1)
        s.close()

    t_start = median_time(start, repeat)
    rows.append(("sandbox start + load + first call", f"{t_start:.2f} s", "", ""))
    t_extract = median_time(lambda: extract(NOTEBOOK), 20)
    rows.append(("extraction (Colab notebook)", f"{t_extract * 1e3:.1f} ms", "", ""))

    s = StudentCode("def ok(x):\n    return x\n", a.limits.__class__(**{**a.limits.__dict__, "reply_mb": 1024,
                                                                       "memory_mb": 4096, "call_seconds": 60}))
    s.call("ok", 1)
    n = 300
    t_call = median_time(lambda: [s.call("ok", 1) for _ in range(n)], 3) / n
    ns: dict = {}
    exec("def ok(x):\n    return x\n", ns)
    t_direct = median_time(lambda: [ns["ok"](1) for _ in range(n)], 3) / n
    rows.append(("one call round trip (tiny function)", f"{t_call * 1e6:.0f} µs", f"{t_direct * 1e6:.2f} µs (direct)",
                 f"{t_call / t_direct:.0f}x"))

    sizes = [1, 4, 16, 64] + ([] if args.quick else [128, 256])
    thr = []
    for mb in sizes:
        x = torch.randn(mb * (1 << 20) // 4)
        s.call("ok", x)  # warm
        t = median_time(lambda x=x: s.call("ok", x), 3)
        thr.append((mb, t, 2 * mb / t))
    s.close()

    print("| measure | isolated path | baseline | ratio |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print("| tensor (float32) | round trip | throughput (sent + received) |")
    print("| --- | --- | --- |")
    for mb, t, rate in thr:
        print(f"| {mb} MB | {t * 1e3:.1f} ms | {rate:.0f} MB/s |")


if __name__ == "__main__":
    main()
