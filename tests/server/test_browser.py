"""End to end in a real headless Chromium (Debian's, driven by Playwright) against
`dlopt serve` on loopback with the real engine: a student signs in, uploads, watches the
status go live to the results; a bad upload is explained; a TA opens the dashboard
(score table, histogram, failed runs) and regrades. Screenshots are kept in
test-artifacts/browser/ (or $DLOPT_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium); "
                                                         "the browser tests need Debian's Chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(tmp_path, course):
    yield from _serve(tmp_path, course)


def _serve(tmp_path, course, **extra_env):
    port = free_port()
    env = dict(os.environ, DLOPT_DATA_DIR=str(tmp_path / "data"), DLOPT_ASSIGNMENTS_DIR=str(course),
               DLOPT_WORKERS="1", DLOPT_POLL_SECONDS="0.2", **extra_env)
    env.pop("DLOPT_BROKER_URL", None)
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "autograder.cli", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    import httpx
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("dlopt serve did not start: " + (tmp_path / "serve.log").read_text()[-2000:])
    admin = (tmp_path / "data" / "admin-token").read_text().strip()
    r = httpx.post(base + "/api/v1/roster", headers={"Authorization": f"Bearer {admin}"},
                   files={"file": ("r.csv", "login,name,role\nta1,Tea,ta\nalice,Alice,student\nbob,Bob,student\n")})
    tokens = dict(r.json()["tokens"], admin=admin)
    yield base, tokens
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def shots(request):
    out = Path(os.environ.get("DLOPT_ARTIFACTS", REPO / "test-artifacts")) / "browser"
    out.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        page.screenshot(path=str(out / f"{request.node.name}-{name}.png"), full_page=True)
    return shot


def sign_in(browser, base, token):
    page = browser.new_context().new_page()
    page.goto(base + "/")
    page.fill("#token", token)
    page.click("#signin")
    page.wait_for_url(base + "/ui")
    return page


def watch_csp(page) -> list[str]:
    """Console messages about the Content-Security-Policy: a page that needs inline script
    or style, or a CDN, shows up here."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text) if "Content Security Policy" in m.text else None)
    return seen


def test_student_uploads_and_watches_the_result_then_a_ta_regrades(live_server, browser, shots, tmp_path):
    base, tokens = live_server
    good = tmp_path / "my_solution.py"
    good.write_text("def double(x):\n    return 2 * x\n\ndef square(v):\n    return v * v\n")
    bad = tmp_path / "notes.txt"
    bad.write_text("not a notebook")

    page = sign_in(browser, base, tokens["alice"])
    csp = watch_csp(page)
    assert page.locator("#assignments #assignment-open").is_visible()
    shots(page, "1-student-assignment-list")
    page.click("#assignment-open a")
    page.wait_for_url("**/ui/assignments/open")
    assert "Your deadline" in page.locator("#deadline").inner_text()
    shots(page, "2-assignment-page")
    page.locator("#upload input[type=file]").set_input_files(str(good))
    page.locator("#upload button[type=submit]").click()
    page.wait_for_url("**/ui/submissions/*")
    assert page.locator("#status").get_attribute("data-status") in ("queued", "running", "done")
    shots(page, "3-submitted")
    page.wait_for_selector("#status[data-status=done]", timeout=90_000)  # live: the page polls, then reloads
    page.wait_for_selector("#score")
    assert page.locator("#score").inner_text() == "10 / 10"
    assert page.locator("#tests tr", has_text="test_double").count() == 1  # the public test, with its feedback
    assert "hidden test(s)" in page.locator("#hidden-tests summary").inner_text()  # the rest folded
    shots(page, "4-graded")

    page.goto(base + "/ui/assignments/open")
    assert page.locator("#history tr[data-id]").count() == 1
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    page.locator("#upload button[type=submit]").click()
    assert ".ipynb" in page.locator("#error").inner_text()
    shots(page, "5-refused")
    assert not csp, csp

    bob = sign_in(browser, base, tokens["bob"])  # gpu_only on a machine without a GPU: a run with an error
    bob.goto(base + "/ui/assignments/gpu_only")
    bob.locator("#upload input[type=file]").set_input_files(str(good))
    bob.locator("#upload button[type=submit]").click()
    bob.wait_for_selector("#status[data-status=done]", timeout=90_000)
    assert "needs a GPU" in bob.locator("#run-error").inner_text()
    assert bob.goto(base + "/ui/ta/open").status == 403  # students have no dashboard
    assert "course staff only" in bob.locator("#error").inner_text()  # an HTML page, not JSON
    shots(bob, "6-forbidden-page")

    ta = sign_in(browser, base, tokens["ta1"])
    csp = watch_csp(ta)
    ta.goto(base + "/ui/ta/open")
    assert ta.locator("#histogram rect").count() == 11  # ten bins and one for full marks
    assert "final score" in ta.locator("#histogram").text_content()  # the axes are labelled
    assert ta.locator("#pass-rates rect").count() >= 2
    assert ta.locator("#timeline rect").count() >= 1
    row = ta.locator("#scores tr", has_text="alice")
    assert "10" in row.inner_text()
    shots(ta, "7-dashboard")
    with ta.expect_download() as dl:
        ta.click("#csv")
    assert "alice" in Path(dl.value.path()).read_text()
    with ta.expect_download() as dl:
        ta.click("#gradescope")
    assert dl.value.suggested_filename == "open-gradescope.zip"
    ta.fill("#search input[name=q]", "ali")
    ta.click("#search button")
    assert ta.locator("#scores tr").count() == 2  # the header and alice
    ta.click("#scores a:text('alice')")
    ta.wait_for_url("**/ui/ta/open/students/alice")
    assert ta.locator("#history tr").count() == 2
    shots(ta, "8-student-history")
    ta.goto(base + "/ui/ta/open")
    row = ta.locator("#scores tr", has_text="alice")
    row.locator("button.regrade").click()
    ta.wait_for_selector("#regraded")
    shots(ta, "9-regrade-queued")
    ta.goto(base + "/ui/ta/gpu_only")
    assert "needs a GPU" in ta.locator("#failed").inner_text()
    shots(ta, "10-failed-runs")

    import zipfile
    batch = tmp_path / "batch.zip"
    with zipfile.ZipFile(batch, "w") as zf:
        zf.writestr("bob.py", good.read_text())
    ta.goto(base + "/ui/ta/open")
    ta.locator("#batch input[type=file]").set_input_files(str(batch))
    ta.locator("#batch button").click()
    ta.wait_for_selector("#batch-done")
    shots(ta, "11-batch-queued")

    roster = tmp_path / "roster.csv"
    roster.write_text("login,name,email\ndave,Dave,d@x.edu\n")
    ta.goto(base + "/ui/roster")
    ta.locator("#roster-import input[type=file]").set_input_files(str(roster))
    ta.locator("#roster-import button").click()
    assert "dave" in ta.locator("#tokens").inner_text()
    shots(ta, "12-roster-imported")
    assert not csp, csp


def test_api_docs_render_offline(live_server, browser, shots):
    base, _ = live_server
    page = browser.new_context().new_page()
    # Nothing outside the server may be fetched: every other host is refused.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    page.goto(base + "/docs")
    page.wait_for_selector(".swagger-ui .info", timeout=30_000)
    assert "dlopt course server" in page.locator(".swagger-ui .info").inner_text()
    shots(page, "api-docs")


def test_bad_tokens_and_forged_forms_are_refused(live_server, browser, shots):
    base, tokens = live_server
    page = browser.new_context().new_page()
    page.goto(base + "/")
    shots(page, "1-sign-in")
    page.fill("#token", "dlopt_wrong")
    page.click("#signin")
    assert "not valid" in page.locator("#error").inner_text()
    shots(page, "2-bad-token")
    assert page.goto(base + "/ui").url.rstrip("/") == base  # sent back to sign in
    # a form posted without the CSRF field (as from another site) is refused
    page = sign_in(browser, base, tokens["ta1"])
    r = page.request.post(base + "/ui/ta/open/regrade", form={"only_failed": ""})
    assert r.status == 403


def _api_submit(base, token, slug, path) -> int:
    import httpx
    r = httpx.post(f"{base}/api/v1/assignments/{slug}/submissions", headers={"Authorization": f"Bearer {token}"},
                   files={"file": (path.name, path.read_bytes())}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["submission"]["id"]


def _api_wait(base, token, sid) -> dict:
    import httpx
    for _ in range(900):
        d = httpx.get(f"{base}/api/v1/submissions/{sid}", headers={"Authorization": f"Bearer {token}"}).json()
        if d["status"] in ("done", "failed"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"submission {sid} not graded: {d}")


def test_a_ta_runs_the_class_from_the_pages(live_server, browser, shots, tmp_path):
    """The tour of issue 27: the flag review with the source shown, the drill-down of a failing
    test, an extension and an override from a student's page, the release of hidden
    feedback, the similarity report, and what the students see of each."""
    base, tokens = live_server
    helper = ("def running_mean(values, beta):\n    out, avg, seen = [], 0.0, 0\n    for value in values:\n"
              "        seen += 1\n        avg = beta * avg + (1 - beta) * value\n"
              "        out.append(avg / (1 - beta ** seen))\n    return out\n\n")
    good = tmp_path / "alice.py"
    good.write_text(helper + "def double(x):\n    return 2 * x\n\ndef square(v):\n    return v * v\n")
    flagged = tmp_path / "bob.py"
    flagged.write_text("def double(x):\n    name = '__m' + 'ul__'\n    return getattr(x, name)(2)\n\n"
                       "def square(v):\n    return v * v\n")
    wrong = tmp_path / "carol.py"
    copied = helper.replace("values", "xs").replace("value", "x_i").replace("avg", "m").replace("seen", "k")
    wrong.write_text("def double(x):\n    return x + x\n\ndef square(v):\n    return v * abs(v)\n\n" + copied)
    import httpx
    r = httpx.post(base + "/api/v1/roster", headers={"Authorization": f"Bearer {tokens['admin']}"},
                   files={"file": ("r.csv", "login,name\ncarol,Carol\n")})
    tokens = {**tokens, **r.json()["tokens"]}
    ids = {who: _api_submit(base, tokens[who], "open", p) for who, p in
           (("alice", good), ("bob", flagged), ("carol", wrong))}
    for sid in ids.values():
        assert _api_wait(base, tokens["ta1"], sid)["status"] == "done"

    ta = sign_in(browser, base, tokens["ta1"])
    csp = watch_csp(ta)
    ta.goto(base + "/ui/ta/open")
    assert "1 flagged submission(s) unreviewed" in ta.locator("#unreviewed").inner_text()
    shots(ta, "1-dashboard")
    # the flag review: the queue, then the submission's flags first and its source, the line marked
    ta.click("#unreviewed")
    ta.wait_for_url("**/ui/ta/open/flags")
    assert ta.locator("#queue tr", has_text="bob").count() == 1
    shots(ta, "2-flag-queue")
    ta.click("#queue a.open-review")
    ta.wait_for_url(f"**/ui/ta/submissions/{ids['bob']}/review")
    assert "getattr with a computed name" in ta.locator("#flags").inner_text()
    assert "line 3" in ta.locator("#flags").inner_text()
    assert ta.locator("#source .hll").count() == 1  # the flagged line, marked
    assert "getattr" in ta.locator("#source .hll").inner_text()
    shots(ta, "3-flag-review-source")
    ta.select_option("#action", "zeroed")
    ta.select_option("#function", "double")
    ta.fill("#reason", "double multiplies through a name built from strings")
    ta.click("#record-review")
    ta.wait_for_selector("#reviewed")
    assert ta.locator("#queue-empty").is_visible()
    shots(ta, "4-flag-reviewed")
    # the drill-down: a failing test's bar leads to who fails it, grouped by message
    ta.goto(base + "/ui/ta/open")
    ta.locator("#pass-rates a[href$='/tests/test_square_partial']").click()
    ta.wait_for_url("**/ui/ta/open/tests/test_square_partial")
    assert "carol" in ta.locator("details.group").first.inner_text()
    shots(ta, "5-test-drill-down")
    # an extension and an override from the student's page, each in the history
    ta.goto(base + "/ui/ta/open/students/alice")
    ta.fill("#ext-days", "2")
    ta.fill("#ext-reason", "accommodation letter")
    ta.click("#ext-save")
    ta.wait_for_selector("#done")
    ta.fill("#ovr-score", "9")
    ta.fill("#ovr-reason", "question 2 regraded by hand")
    ta.click("#ovr-save")
    ta.wait_for_selector("#done")
    assert "set by staff" in ta.locator("#final").inner_text()
    events = ta.locator("#events").inner_text()
    assert "accommodation letter" in events and "question 2 regraded by hand" in events and "ta1" in events
    shots(ta, "6-extension-and-override")
    # the release of hidden feedback
    ta.goto(base + "/ui/ta/open")
    ta.click("#release-button")
    ta.wait_for_selector("#done")
    assert "released to students" in ta.locator("#release-state").inner_text()
    shots(ta, "7-feedback-released")
    # the similarity report, computed from the page
    ta.click("#similarity-link")
    ta.wait_for_url("**/ui/ta/open/similarity")
    ta.locator("#similarity-recompute button").click()
    for _ in range(300):
        ta.goto(base + "/ui/ta/open/similarity")
        if ta.locator("#similarity-pairs").count():
            break
        time.sleep(0.5)
    assert ta.locator("#similarity-pairs tr").count() >= 2
    first = ta.locator("#similarity-pairs tr").nth(1).inner_text()
    assert "alice" in first and "carol" in first  # the renamed copy ranks first
    shots(ta, "8-similarity-report")
    ta.locator("#similarity-pairs a[href*='/similarity/1']").first.click()
    ta.wait_for_url("**/ui/ta/open/similarity/1")
    shots(ta, "9-similarity-pair")
    assert not csp, csp

    # what the students see
    alice = sign_in(browser, base, tokens["alice"])
    csp = watch_csp(alice)
    alice.goto(base + "/ui/assignments/open")
    assert "extended for you" in alice.locator("#extended").inner_text()
    assert "question 2 regraded by hand" in alice.locator("#override-1").inner_text()
    # local time: the script put the reader's own zone on every time, the server's text kept as a title
    assert alice.locator("#deadline time").first.get_attribute("title")
    shots(alice, "10-student-extension-override")
    alice.goto(base + f"/ui/submissions/{ids['alice']}")
    # released, but alice's extension still runs: the hidden tests' feedback waits for her deadline
    assert alice.locator("#tests tr", has_text="grader_bug").count() == 0
    carol = sign_in(browser, base, tokens["carol"])
    carol.goto(base + f"/ui/submissions/{ids['carol']}")
    assert carol.locator("#tests tr", has_text="grader_bug").count() == 1  # a hidden test, released
    shots(carol, "10b-released-feedback")
    bob = sign_in(browser, base, tokens["bob"])
    bob.goto(base + "/ui/assignments/open")
    assert "a name built from strings" in bob.locator("#override-1").inner_text()
    alice.goto(base + "/ui/assignments/past_last")
    assert alice.locator("#late-warning").is_visible() and alice.locator("#accept-late").count() == 1
    shots(alice, "11-late-upload-warning")
    assert not csp, csp


@pytest.fixture
def board_server(tmp_path, course):
    """A course with a kernel board, graded by the scripted grader (its board times are
    written in the submissions: the GPU timing itself is the engine's, tests/test_boards.py)."""
    from datetime import UTC, datetime, timedelta

    from test_board_pages import BOARDS

    from conftest import write_assignment

    write_assignment(course, "kernels", deadline=datetime.now(UTC) + timedelta(days=3), extra=BOARDS)
    yield from _serve(tmp_path, course, DLOPT_GRADE_FUNCTION="server_fakes:grade",
                      PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))


def test_the_kernel_board(board_server, browser, shots, tmp_path):
    """The board page of issue 31: a student's rank among anonymous others and the
    baselines, their chosen name; a TA's view with logins, removal with a reason."""
    base, tokens = board_server
    for who, lines in (("alice", ["flash=0.00091@NVIDIA H100 80GB HBM3"]),
                       ("bob", ["flash=0.00120@NVIDIA H100 80GB HBM3", "flash=0.00070@NVIDIA H200"])):
        path = tmp_path / f"{who}.py"
        path.write_text("".join(f"# fake-board: {x}\n" for x in lines) + "def double(x):\n    return 2 * x\n")
        _api_wait(base, tokens["admin"], _api_submit(base, tokens[who], "kernels", path))
    page = sign_in(browser, base, tokens["alice"])
    csp = watch_csp(page)
    page.goto(base + "/ui/assignments/kernels")
    page.click("#boards-link")
    page.wait_for_selector("#table-flash-1")
    text = page.inner_text("#table-flash-1")
    assert "(you)" in text and "course reference (Triton)" in text and "PyTorch SDPA" in text and "bob" not in text
    page.fill("#board-name input[name=name]", "Tri Dao fan")
    page.click("#board-name button")
    page.wait_for_selector("text=Tri Dao fan")
    shots(page, "student")
    ta = sign_in(browser, base, tokens["ta1"])
    ta.goto(base + "/ui/assignments/kernels/boards")
    assert "bob" in ta.inner_text("#table-flash-1") and "NVIDIA H200" in ta.inner_text("body")
    shots(ta, "ta")
    assert csp == []
