"""A grade function for the server's tests (the `DLOPT_GRADE_FUNCTION` seam): fast and
scripted by comments in the submitted file, so queue and API tests need not wait for the
engine. The real engine is exercised by test_queue's end-to-end test and the browser test.

    # fake-score: 7      the score (out of 10)
    # fake-sleep: 2.5    seconds to take
    # fake-raise         the grade function raises (an engine bug)
    # fake-escapes       terminal escape sequences in the feedback, error, notes and flags
    # fake-flag          a flag on `double`, line 2 of the file (as the engine locates it)
    # fake-board: flash=0.0012@NVIDIA H100   a board time (seconds) on a device; "none": no time;
                                             several lines for several boards or devices
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from autograder.judge.results import SubmissionResult, TestResult

CALLS_FILE = os.environ.get("DLOPT_FAKE_CALLS")  # each call appends a line: proof of how often we graded
# Clear the screen and a fake score, a window title (OSC 0), a clipboard write (OSC 52), a
# carriage return, a C1 CSI and a right-to-left override: what a hostile exception says.
ESCAPES = ("\x1b[2J\x1b[H SCORE 100 / 100 \x1b]0;pwned\x07 \x1b]52;c;ZWNobyBoaQ==\x07"
           "\rall tests passed \x9b31m \u202edesrever")


def grade(a, path, *, label=None, flags_cleared=False, **_kw) -> SubmissionResult:
    text = Path(path).read_text()
    if CALLS_FILE:
        with open(CALLS_FILE, "a") as f:
            f.write(f"{label}\n")
    m = re.search(r"# fake-sleep: ([0-9.]+)", text)
    if m:
        time.sleep(float(m.group(1)))
    if "# fake-raise" in text:
        raise RuntimeError("the engine broke")
    m = re.search(r"# fake-score: ([0-9.]+)", text)
    score = float(m.group(1)) if m else 10.0
    r = SubmissionResult(assignment=a.slug, submission=label or str(path), engine_version="fake")
    r.tests = [
        TestResult(name="test_public", points=min(score, 2.0), max_points=2.0, visibility="public",
                   status="passed" if score >= 2 else "failed", feedback="public feedback"),
        TestResult(name="test_hidden", points=max(0.0, min(score - 2.0, 4.0)), max_points=4.0, visibility="hidden",
                   status="passed" if score >= 6 else "failed", feedback="hidden feedback: expected 3, got 4",
                   function=["double"], title="double of a hidden vector"),
        TestResult(name="test_after", points=max(0.0, score - 6.0), max_points=4.0, visibility="after_deadline",
                   status="passed" if score >= 10 else "failed", feedback="after-deadline feedback"),
    ]
    if "# fake-escapes" in text:
        r.tests[0].feedback = r.tests[1].feedback = f"raised RuntimeError: {ESCAPES}\nsecond line"
        r.tests[0].status, r.tests[0].points = "failed", 0.0
        r.error = f"error: {ESCAPES}"
        r.notes = [f"note: {ESCAPES}"]
        r.flags = [{"construct": f"flag {ESCAPES}", "function": f"fn {ESCAPES}", "line": 1, "where": "cell 1"}]
    if "# fake-flag" in text:
        r.flags = [{"construct": "getattr with a computed name", "function": "double", "statement": "code",
                    "cell": None, "line": 2, "source_line": 1, "where": "line 2"}]
    for board, seconds, device in re.findall(r"# fake-board: ([\w-]+)=([0-9.e-]+|none)@(.+)", text):
        r.boards.append({"board": board, "device": device.strip(), "seconds": None if seconds == "none" else
                         float(seconds), "spread": 0.02, "reason": "a check failed" if seconds == "none" else None,
                         "checked": 6, "baselines": {"reference": 0.0011, "sdpa": 0.0009}, "shapes": []})
    if flags_cleared:
        r.notes.append("graded with its flags cleared by a TA")
    r.total()
    r.sandbox = {"strong": False, "runner": "fake"}
    return r
