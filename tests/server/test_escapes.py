"""Escape sequences a submission writes (in its feedback, error, notes, flags) are shown,
never passed on raw: in the pages (as `\\x1b`), the CSV cells and Gradescope's
results.json; the API's JSON keeps the text as it was (JSON escapes it)."""

from __future__ import annotations

import io
import json
import zipfile

from server.security import csv_cell

RAW = ("\x1b", "\x07", "\x9b", "\r", "\u202e")
SHOWN = ("\\x1b[2J\\x1b[H SCORE 100 / 100", "\\x1b]0;pwned\\x07", "\\x1b]52;c;ZWNobyBoaQ==\\x07", "\\x9b31m",
         "\\u202edesrever")


def shows_escapes(text: str, where: str) -> None:
    for ch in RAW:
        assert ch not in text, (where, ch)
    for seen in SHOWN:
        assert seen in text, (where, seen)


def test_pages_exports_and_api(make_course):
    c = make_course(workers=1)
    sid = c.submit("alice", "late", "# fake-escapes\n# fake-score: 8\n", name="sol\x1b[2J\x07.py").json()
    sid = sid["submission"]["id"]
    d = c.wait_graded(sid)
    assert d["status"] == "done"
    # the API keeps the text as the engine wrote it; JSON escapes it (\u001b)
    api = c.get("alice", f"/api/v1/submissions/{sid}")
    assert "\x1b" not in api.text and "\\u001b[2J" in api.text
    assert api.json()["run"]["error"].startswith("error: \x1b[2J")
    assert "\x1b" not in d["filename"]  # upload names are cleaned when stored
    c.sign_in("alice")
    page = c.client.get(f"/ui/submissions/{sid}")
    assert page.status_code == 200
    shows_escapes(page.text, "student's page")
    assert "error: \\x1b[2J" in page.text and "note: \\x1b[2J" in page.text and "second line" in page.text
    shows_escapes(c.client.get("/ui/assignments/late").text, "assignment page")
    c.sign_in("ta1")
    shows_escapes(c.client.get(f"/ui/submissions/{sid}").text, "staff's page")
    dashboard = c.client.get("/ui/ta/late").text
    shows_escapes(dashboard, "dashboard")
    assert "flag \\x1b[2J" in dashboard and "fn \\x1b[2J" in dashboard
    z = zipfile.ZipFile(io.BytesIO(c.get("ta1", "/api/v1/assignments/late/gradescope.zip").content))
    gs = json.loads(z.read("alice/results.json"))
    assert not any(ch in json.dumps(gs, ensure_ascii=False) for ch in RAW)
    shows_escapes("\n".join([gs["output"]] + [t["output"] for t in gs["tests"]]), "gradescope results.json")
    assert gs["output"].startswith("error: \\x1b[2J")


def test_csv_cells_show_escapes(course_app):
    assert csv_cell("Mallory\x1b]0;pwned\x07") == "Mallory\\x1b]0;pwned\\x07"
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("\tx") == "'\tx"
    c = course_app
    roster = "login,name,email,role\nmallory,Mal\x1b[2J\x1b]52;c;ZWNobyBoaQ==\x07lory,m@x.edu,student\n"
    r = c.post("admin", "/api/v1/roster", files={"file": ("roster.csv", roster, "text/csv")})
    assert r.status_code in (200, 422), r.text
    text = c.get("ta1", "/api/v1/assignments/open/scores.csv").content.decode("utf-8-sig")
    assert "\x1b" not in text and "\x07" not in text
    if r.status_code == 200:
        assert "Mal\\x1b[2J\\x1b]52;c;ZWNobyBoaQ==\\x07lory" in text
