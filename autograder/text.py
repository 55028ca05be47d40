"""Student-written text made safe to show: on a terminal, in a page, in a CSV cell.

A submission controls the text of its exceptions, its file name, the notes its code gives
rise to and the feedback that quotes its values. Any of it may carry control characters
and escape sequences (clear the screen and print a fake score, set a window title, write
the clipboard through OSC 52, move the cursor back over a line with `\\r` or backspace)
or bidirectional overrides that make text read differently from what it is. `visible`
turns every such character into its escape notation (`\\x1b`, `\\r`, `\\u202e`), so it
is shown, never obeyed; newlines and tabs stay (feedback is multi-line). JSON output keeps
the raw text (JSON escapes it already); everything printed or rendered goes through here.
"""

from __future__ import annotations

# One function for the engine, the server and the student client (client/dlopt_submit,
# which students install without the engine: standard library only).
from dlopt_submit.text import visible

__all__ = ["visible", "visible_all"]


def visible_all(value):
    """`visible` applied to every string in nested dicts, lists and tuples (keys too):
    for JSON that another program shows as text (Gradescope's results.json)."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible_all(k): visible_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [visible_all(v) for v in value]
    return value
