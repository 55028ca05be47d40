"""Text that others wrote made safe to show on a terminal.

What a server sends back (file names, feedback, errors, notes) can quote what a
submission wrote, and any of it may carry control characters and escape sequences (clear
the screen and print a fake score, set a window title, write the clipboard through OSC 52,
move the cursor back over a line with `\\r` or backspace) or bidirectional overrides that
make text read differently from what it is. `visible` turns every such character into its
escape notation (`\\x1b`, `\\r`, `\\u202e`), so it is shown, never obeyed; newlines and
tabs stay (feedback is multi-line). The grading engine uses this same function
(autograder.text) for everything it prints or renders.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, bidi marks, embeddings, overrides and
# isolates (ALM, LRM, RLM, LRE..RLO, LRI..PDI), lone surrogates (cannot be encoded).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\r": "\\r", "\b": "\\b", "\x0b": "\\v", "\x0c": "\\f", "\x00": "\\0"}


def _shown(m: re.Match) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text) -> str:
    """`text` (anything; None is "") with every control character but newline and tab, and
    every bidi control, written as its escape (ESC as `\\x1b`); `\\r\\n` becomes `\\n`."""
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    if "\r\n" in s:
        s = s.replace("\r\n", "\n")
    return _UNSAFE.sub(_shown, s)
