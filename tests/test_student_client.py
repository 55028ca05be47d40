"""The student client (client/: `dlopt-submit`, the `dlopt_submit` package) on its own: its
wheel holds the package and its dist-info and nothing of the course (no hidden test,
reference, master, engine or server), is a valid PEP 427 wheel (RECORD's hashes right),
comes out the same byte for byte each time, installs into a fresh venv with no index and
runs; `pip install ./client` works offline (the package is its own build backend);
`dlopt release` puts the install steps in the handout. Against a server: tests/server/test_client.py."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dlopt_submit import __version__, build
from dlopt_submit.api import Config
from dlopt_submit.cli import find_handout, read_handout

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "client" / "dlopt_submit"
DIST_INFO = f"dlopt_submit-{__version__}.dist-info"


@pytest.fixture(scope="module")
def wheel() -> bytes:
    return build.wheel_bytes()


def names_of(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_the_wheel_holds_the_client_and_nothing_of_the_course(wheel):
    names = names_of(wheel)
    sources = {f"dlopt_submit/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts}
    meta = {f"{DIST_INFO}/{n}" for n in ("METADATA", "WHEEL", "entry_points.txt", "RECORD")}
    assert set(names) == sources | meta and len(names) == len(set(names))
    assert {"dlopt_submit/cli.py", "dlopt_submit/api.py", "dlopt_submit/text.py"} <= sources
    for name in names:
        assert name.startswith(("dlopt_submit/", f"{DIST_INFO}/")), name
        assert not name.startswith(("autograder/", "reference/", "assignments/", "server/", "tests/")), name
    assert_no_course_material(wheel)


def assert_no_course_material(wheel: bytes, engine: bool = False) -> None:
    """Nothing of any file of the course's material, whatever its name: no hidden suite, no
    reference, no master notebook, no released test (their distinctive lines absent; for the
    engine's wheel, a line the engine's own code also has, a helper's call, is the engine's)."""
    own = {ln.strip() for p in (REPO / "autograder").rglob("*.py") for ln in p.read_bytes().splitlines()} if engine else set()
    zf = zipfile.ZipFile(io.BytesIO(wheel))
    body = b"\n".join(zf.read(n) for n in zf.namelist())
    course = [p for p in (REPO / "assignments").rglob("*") if p.is_file() and p.suffix in (".py", ".ipynb")]
    course += list((REPO / "reference").rglob("*.py"))
    assert any("test_hidden" in p.name for p in course) and any(p.suffix == ".ipynb" for p in course)
    for path in course:
        for line in path.read_bytes().splitlines():
            line = line.strip()
            if len(line) >= 40 and b"import" not in line and line not in own:
                assert line not in body, (path, line)
    assert engine or b"BEGIN SOLUTION" not in body  # (the engine reads such markers: its code names them)


def test_the_wheel_is_valid_and_its_record_is_right(wheel):
    zf = zipfile.ZipFile(io.BytesIO(wheel))
    assert zf.testzip() is None
    record = zf.read(f"{DIST_INFO}/RECORD").decode().splitlines()
    listed = {}
    for row in record:
        path, digest, size = row.split(",")
        listed[path] = (digest, size)
    assert set(listed) == set(zf.namelist())
    assert listed[f"{DIST_INFO}/RECORD"] == ("", "")
    for path, (digest, size) in listed.items():
        if path.endswith("/RECORD"):
            continue
        data = zf.read(path)
        algo, _, value = digest.partition("=")
        assert algo == "sha256" and int(size) == len(data), path
        assert value == base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode(), path
    meta = zf.read(f"{DIST_INFO}/METADATA").decode()
    assert "Name: dlopt-submit\n" in meta and f"Version: {__version__}\n" in meta and "Requires-Dist" not in meta
    wheel_file = zf.read(f"{DIST_INFO}/WHEEL").decode()
    assert "Wheel-Version: 1.0" in wheel_file and "Root-Is-Purelib: true" in wheel_file
    assert "Tag: py3-none-any" in wheel_file
    assert zf.read(f"{DIST_INFO}/entry_points.txt").decode() == \
        "[console_scripts]\ndlopt-submit = dlopt_submit.cli:main\n"
    assert build.wheel_name() == f"dlopt_submit-{__version__}-py3-none-any.whl"
    for info in zf.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0) and info.external_attr >> 16 == 0o100644


def test_the_wheel_is_the_same_bytes_every_time(wheel, tmp_path):
    assert build.wheel_bytes() == wheel
    path = build.write_wheel(tmp_path)
    assert path.name == build.wheel_name() and path.read_bytes() == wheel


def test_the_client_imports_only_the_standard_library():
    """Every import of the package is of the standard library or of itself."""
    import ast

    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top == "dlopt_submit" or top in sys.stdlib_module_names, (path.name, mod)


def test_the_pyproject_agrees_with_the_builder():
    import tomllib

    project = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())
    assert project["build-system"] == {"requires": [], "build-backend": "dlopt_submit.build", "backend-path": ["."]}
    meta = project["project"]
    assert meta["name"] == build.NAME and meta["requires-python"] == build.REQUIRES_PYTHON
    assert meta["dependencies"] == [] and meta["scripts"] == build.SCRIPTS


def fresh_venv(where: Path) -> Path:
    """A venv with nothing in it (pip comes from this one, `pip --python`)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    return where / "bin" / "python"


def pip_install(python: Path, *what: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                        "--disable-pip-version-check", *what], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_the_wheel_installs_in_a_fresh_venv_with_no_index_and_runs(wheel, tmp_path):
    path = build.write_wheel(tmp_path / "dist")
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, str(path))
    exe = python.parent / "dlopt-submit"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and "login" in r.stdout and "submit" in r.stdout and "test" in r.stdout, r.stderr
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.stdout.strip() == f"dlopt-submit {__version__}"
    # Nothing of the engine came with it.
    r = subprocess.run([str(python), "-c", "import autograder"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "No module named 'autograder'" in r.stderr
    # `test` in a handout says what it needs, and that the hidden tests run only on the server.
    handout = probe_handout(tmp_path / "handout")
    r = subprocess.run([str(exe), "test", str(handout / "mine.py")], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "tests/test_probe.py" in r.stdout
    assert "the grading engine (autograder)" in r.stderr and "hidden tests run only on the server" in r.stderr
    assert "dlopt-submit submit probe" in r.stderr


@pytest.mark.slow
def test_pip_installs_the_source_folder_offline(tmp_path):
    """client/pyproject.toml's backend is the package's own builder: no setuptools, no network."""
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, str(REPO / "client"))
    r = subprocess.run([str(python.parent / "dlopt-submit"), "--version"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and __version__ in r.stdout, r.stderr


def probe_handout(folder: Path) -> Path:
    """A released folder as `dlopt release` writes one: the probe's suite as its public tests."""
    (folder / "tests").mkdir(parents=True)
    (folder / "tests" / "test_probe.py").write_bytes((REPO / "tests/fixtures/probe/tests/test_probe.py").read_bytes())
    (folder / "assignment.toml").write_text('slug = "probe"\ntitle = "Engine probe"\npoints = 0\ngpu = "none"\n'
                                            'public_tests = ["tests/test_probe.py"]\nhidden_tests = []\n\n'
                                            '[limits]\ncall_seconds = 5\nsubmission_seconds = 60\n')
    (folder / "mine.py").write_text("def double(x):\n    return 2 * x\n\ndef square(v):\n    return v * v\n")
    return folder


def test_the_handout_is_found_and_read_without_tomllib(tmp_path, monkeypatch):
    handout = probe_handout(tmp_path / "h")
    (handout / "sub").mkdir()
    (handout / "sub" / "x.py").write_text("")
    assert find_handout(handout / "mine.py") == handout.resolve()
    assert find_handout(handout / "sub" / "x.py") == handout.resolve()
    assert find_handout(tmp_path / "elsewhere.py") is None
    want = {"slug": "probe", "public_tests": ["tests/test_probe.py"]}
    assert {k: read_handout(handout / "assignment.toml")[k] for k in want} == want
    monkeypatch.setitem(sys.modules, "tomllib", None)  # Python 3.9 and 3.10 have none
    assert {k: read_handout(handout / "assignment.toml")[k] for k in want} == want


@pytest.mark.slow
def test_test_runs_the_public_tests_on_the_engine_where_it_is_installed(tmp_path):
    handout = probe_handout(tmp_path / "h")
    r = subprocess.run([sys.executable, "-m", "dlopt_submit", "test", str(handout / "mine.py")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_double" in r.stdout and "public tests: 10 / 10" in r.stdout
    assert "hidden tests run only on the server" in r.stdout


def _env(tmp_path) -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DLOPT_")} | {"COLUMNS": "200"}


def test_config_follows_xdg_and_the_overrides(tmp_path):
    assert Config.from_env({"XDG_CONFIG_HOME": str(tmp_path)}).credentials == tmp_path / "dlopt" / "credentials.json"
    c = Config.from_env({"DLOPT_CONFIG_DIR": str(tmp_path / "c"), "DLOPT_SERVER": "https://s", "DLOPT_TOKEN": "t"})
    assert (c.config_dir, c.server, c.token) == (tmp_path / "c", "https://s", "t")
    assert Config.from_env({}).config_dir == Path.home() / ".config" / "dlopt"


def test_the_engine_shows_text_with_the_clients_function():
    from autograder import text
    from dlopt_submit.text import visible

    assert text.visible is visible


def test_release_writes_the_install_steps(tmp_path):
    from autograder import assignment
    from autograder.authoring.release import PLACEHOLDER_SERVER, release

    a = assignment.load("adam")
    written = release(a, tmp_path / "given", server="https://dlopt.example.edu/")
    steps = (tmp_path / "given" / "SUBMIT.md").read_text()
    assert tmp_path / "given" / "SUBMIT.md" in written
    for cmd in (f"python -m pip install https://dlopt.example.edu/client/{build.wheel_name()}",
                "dlopt-submit login https://dlopt.example.edu\n", "dlopt-submit test adam.ipynb\n",
                "dlopt-submit submit adam adam.ipynb --wait\n", "dlopt-submit status adam\n"):
        assert cmd in steps, cmd
    assert "hidden tests run only on the server" in steps and PLACEHOLDER_SERVER not in steps
    release(a, tmp_path / "placeholder")
    steps = (tmp_path / "placeholder" / "SUBMIT.md").read_text()
    assert f"dlopt-submit login {PLACEHOLDER_SERVER}\n" in steps and "stands for your course server" in steps
    # The command line passes --server through.
    r = subprocess.run([sys.executable, "-m", "autograder.cli", "release", "adam", str(tmp_path / "cli"),
                        "--server", "https://x.example"], capture_output=True, text=True, timeout=300,
                       env=_env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dlopt-submit login https://x.example\n" in (tmp_path / "cli" / "SUBMIT.md").read_text()


def test_the_readme_student_commands_are_the_clients():
    """The README's students' part installs the wheel the server serves, and every
    `dlopt-submit` line in it is a command the client accepts as written."""
    import shlex

    from dlopt_submit.cli import parser

    text = (REPO / "README.md").read_text()
    part = text[text.index("## For students"):text.index("## For TAs")]
    block = part[part.index("```sh\n") + 6:]
    lines = [ln.split("  #")[0].strip() for ln in block[:block.index("```")].splitlines() if ln.strip()]
    assert lines[0] == f"python -m pip install https://dlopt.example.edu/client/{build.wheel_name()}"
    commands = [shlex.split(ln)[1:] for ln in lines if ln.startswith("dlopt-submit ")]
    assert {c[0] for c in commands} == {"login", "test", "submit", "status"}
    for argv in commands:
        args = parser().parse_args(argv)
        assert callable(args.fn), argv
    assert "pip install` of this repository" not in part


# -- the engine's wheel: autograder/ only, for `dlopt-submit test` ---------------------------------
def test_the_engine_wheel_holds_the_engine_and_nothing_of_the_course():
    from autograder.distribution import REQUIRES, engine_wheel, engine_wheel_name

    name, data = engine_wheel()
    assert name == engine_wheel_name() and engine_wheel()[1] == data  # deterministic
    names = names_of(data)
    info = name.split("-py3")[0] + ".dist-info/"
    assert all(n.startswith(("autograder/", info)) for n in names), [n for n in names if not n.startswith("autograder/")][:5]
    assert "autograder/judge/plugin.py" in names and "autograder/cli/__init__.py" in names
    assert_no_course_material(data, engine=True)
    meta = zipfile.ZipFile(io.BytesIO(data)).read(info + "METADATA").decode()
    assert all(f"Requires-Dist: {r}" in meta for r in REQUIRES)
    # the engine's requirements are the project's own
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(REQUIRES) - {f"dlopt-submit=={__version__}"} == set(project)


@pytest.mark.slow
def test_the_engine_wheel_runs_the_public_tests_outside_the_repository(tmp_path):
    """Installed (beside the client's wheel, no repository on the path), `dlopt-submit test`
    runs a handout's public tests on it."""
    from autograder.distribution import engine_wheel

    name, data = engine_wheel()
    (tmp_path / name).write_bytes(data)
    client = build.write_wheel(tmp_path)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(tmp_path / name), str(client)], check=True, timeout=300)
    handout = probe_handout(tmp_path / "h")
    env = _env(tmp_path) | {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import autograder; print(autograder.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(site)), where  # the wheel's engine, not the repository's
    r = subprocess.run([sys.executable, "-m", "dlopt_submit", "test", str(handout / "mine.py")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "public tests: 10 / 10" in r.stdout
