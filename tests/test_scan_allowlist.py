"""The static scan is an allow-list (issue 25, point 3; judge/forbidden.py: scan_flags).

What a submission may import and reach is listed; everything else is flagged with its
line. Each construct the red team used unflagged is here, and so is every honest way of
writing the assignments we know of: no correct example or master gets a single flag.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from autograder.authoring.notebook import extract
from autograder.judge.forbidden import scan_flags

REPO = Path(__file__).resolve().parents[1]

FLAGGED = {
    "code module": "import code\ncode.InteractiveInterpreter({}).runsource('x = 1')\n",
    "codeop": "import codeop\n",
    "timeit": "import timeit\n",
    "pdb": "import pdb\n",
    "doctest": "import doctest\n",
    "operator": "import operator\nf = operator.attrgetter('optim')\n",
    "runpy": "from runpy import run_path\n",
    "subprocess": "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'pass'])\n",
    "os": "import os\nos.posix_spawn\n",
    "torch.ctypes": "import torch\napi = torch.ctypes.pythonapi\n",
    "torch.ctypes by from": "from torch import ctypes\n",
    "torch._C": "import torch\ntorch._C._nn\n",
    "torch.ops": "import torch\ntorch.ops.aten.mm\n",
    "torch.utils.cpp_extension": "import torch.utils.cpp_extension\n",
    "torch.multiprocessing": "import torch.multiprocessing as mp\n",
    "concatenated name": "x = 'auto' + 'grader'\n",
    "joined name": "x = ''.join(['auto', 'grader'])\n",
    "f-string name": "x = f\"{'sub'}process\"\n",
    "percent name": "x = '%s%s' % ('sub', 'process')\n",
    "chr name": "x = chr(111) + chr(115)\n",
    "getattr computed": "import torch\ndef f(n):\n    return getattr(torch, n)\n",
    "setattr computed": "def f(o, n):\n    setattr(o, n, 1)\n",
    "getattr folded dunder": "def f(o):\n    return getattr(o, '__glo' + 'bals__')\n",
    "vars": "def f(o):\n    return vars(o)\n",
    "__dict__": "def f(o):\n    return o.__dict__\n",
    "__builtins__": "def f():\n    return __builtins__\n",
    "__import__": "def f():\n    return __import__('o' + 's')\n",
    "eval": "def f(s):\n    return eval(s)\n",
    "exec": "def f(s):\n    exec(s)\n",
    "compile": "def f(s):\n    return compile(s, 'x', 'exec')\n",
    "globals": "def f():\n    return globals()\n",
    "open": "def f():\n    return open('/tmp/x').read()\n",
    "frames": "def f(e):\n    return e.__traceback__.tb_frame.f_back\n",
    "relative import": "from . import child\n",
    "star import": "from torch import *\n",
    "torch.load": "import torch\ndef f(p):\n    return torch.load(p)\n",
    "share through a file": "import torch\ndef f():\n    return torch.from_file('/tmp/x', True, 10)\n",
}

HONEST = {
    "typical imports": ("import math\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
                        "import numpy as np\nfrom typing import Optional\nfrom dataclasses import dataclass\n"
                        "import matplotlib.pyplot as plt\nfrom collections import defaultdict\n"
                        "import triton\nimport triton.language as tl\nfrom torch import Tensor\n"),
    "an optimizer": ("import torch\nclass AdamW(torch.optim.Optimizer):\n"
                     "    def __init__(self, params, lr=1e-3):\n        super().__init__(params, dict(lr=lr))\n"
                     "    def __setstate__(self, state):\n        super().__setstate__(state)\n"
                     "    @torch.no_grad()\n    def step(self, closure=None):\n"
                     "        for g in self.param_groups:\n            for p in g['params']:\n"
                     "                self.state[p]['step'] = torch.tensor(0.0)\n        return None\n"),
    "a parameter named input": "def f(input, open=None):\n    return input * 2\n",
    "main guard": "if __name__ == '__main__':\n    print(type(1).__name__)\n",
    "getattr with a constant": "import torch\ndef f(x):\n    return getattr(x, 'shape')\n",
    "exceptions": "def f(x):\n    if x is None:\n        raise ValueError('no')\n    raise NotImplementedError\n",
    "scheme strings": "def f(s):\n    return s in ('uniform', 'random_reshuffling', 'cyclic', 'gaussian', 'sphere')\n",
    "docstring naming the autograder": 'def f():\n    """passes the autograder\'s tests"""\n',
    "torch version": "import torch\nv = torch.__version__\n",
}


@pytest.mark.parametrize("name", sorted(FLAGGED))
def test_the_red_teams_constructs_are_flagged(name):
    flags = scan_flags(FLAGGED[name])
    assert flags, f"{name}: not flagged"
    assert all(f.line >= 1 for f in flags)


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_code_is_not_flagged(name):
    assert scan_flags(HONEST[name]) == []


def test_an_assignment_may_allow_more_modules():
    assert scan_flags("import scipy.optimize\n")
    assert scan_flags("import scipy.optimize\n", ["scipy"]) == []
    assert scan_flags("import torch\ntorch.ops.aten.mm\n", ["torch.ops"]) == []


def _honest_files():
    for a in sorted((REPO / "assignments").iterdir()):
        cfg = tomllib.loads((a / "assignment.toml").read_text())
        scores = tomllib.loads((a / "examples" / "scores.toml").read_text())
        full = {name for name, score in scores.items() if score == cfg["points"] and not isinstance(score, dict)}
        for f in [a / cfg["master"], *(a / "examples" / n for n in sorted(full))]:
            yield pytest.param(a, cfg, f, id=f"{a.name}/{f.name}")


@pytest.mark.parametrize("folder,cfg,path", list(_honest_files()))
def test_no_correct_submission_is_flagged(folder, cfg, path):
    """Every master and every example that must get full marks passes the scan clean."""
    src = extract(path, cfg.get("extraction", "definitions")).source
    flags = scan_flags(src, cfg.get("forbidden", {}).get("allow_imports", []))
    assert flags == [], [f.as_dict() for f in flags]


TIMING_CHEATS = {
    "side stream": "import torch\ndef f(q):\n    s = torch.cuda.Stream()\n    with torch.cuda.stream(s):\n"
                   "        return q * 2\n",
    "events": "import torch\ndef f(q):\n    e = torch.cuda.Event(enable_timing=True)\n    return q\n",
    "graphs": "import torch\ng = torch.cuda.CUDAGraph()\ndef f(q):\n    g.replay()\n    return q\n",
    "clock": "import time\ndef f(q):\n    time.sleep(0)\n    return q\n",
    "triton timers": "from triton.testing import do_bench\ndef f(q):\n    return q\n",
    "threads": "import threading\ndef f(q):\n    threading.Thread(target=print).start()\n    return q\n",
    "the harness": "from autograder.child import timed\ndef f(q):\n    return q\n",
    "profiler": "import torch\ndef f(q):\n    with torch.profiler.profile():\n        return q\n",
}


@pytest.mark.parametrize("name", sorted(TIMING_CHEATS))
def test_the_timing_precheck_flags_what_timing_cheats_need(name):
    """In an assignment with leaderboards: streams, events, CUDA graphs, clocks, timers,
    threads, the harness's modules are flagged for review (threads and the harness are
    off the allow-list everywhere); elsewhere streams, events and time stay unflagged."""
    src = TIMING_CHEATS[name]
    assert scan_flags(src, timing=True), name
    if name in ("side stream", "events", "graphs", "clock", "profiler"):
        assert scan_flags(src) == [], name
    assert scan_flags("import torch\ndef f(q):\n    return torch.cuda.synchronize() or q @ q\n", timing=True) == []
