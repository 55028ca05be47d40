"""The client's wheel, built with the standard library only: the course server builds it
when first asked (`/client`), with no network and no build tools, and client/pyproject.toml
names this module as its build backend (PEP 517), so `pip install ./client` needs nothing
either.

The wheel (PEP 427) holds the package's own .py files and its dist-info (METADATA, WHEEL,
entry_points.txt with the `dlopt-submit` console script, RECORD with each file's sha256):
nothing of the course. It is deterministic: files in sorted order, every timestamp
1980-01-01, modes fixed, so the same sources give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

from dlopt_submit import __version__

NAME = "dlopt-submit"
DIST = "dlopt_submit"  # the name in file names (PEP 427: - becomes _)
SUMMARY = "The student's command line for a dlopt course server: login, submit, status, test."
REQUIRES_PYTHON = ">=3.9"
SCRIPTS = {"dlopt-submit": "dlopt_submit.cli:main"}
TAG = "py3-none-any"
PACKAGE = Path(__file__).resolve().parent
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def wheel_name(dist: str = DIST, version: str = __version__) -> str:
    return f"{dist}-{version}-{TAG}.whl"


def dist_info(dist: str = DIST, version: str = __version__) -> str:
    return f"{dist}-{version}.dist-info"


def package_files(package: Path = PACKAGE) -> list[Path]:
    """The package's source files (no caches, no compiled files), sorted."""
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def metadata(name: str = NAME, version: str = __version__, summary: str = SUMMARY,
             requires_python: str = REQUIRES_PYTHON, requires: tuple[str, ...] = ()) -> str:
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
            f"Requires-Python: {requires_python}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))


def _wheel_file() -> str:
    return f"Wheel-Version: 1.0\nGenerator: dlopt_submit.build {__version__}\nRoot-Is-Purelib: true\nTag: {TAG}\n"


def _entry_points(scripts: dict[str, str] = SCRIPTS) -> str:
    return "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _zip(entries: list[tuple[str, bytes]], info_dir: str | None = None) -> bytes:
    """A wheel of these (name, bytes) with its RECORD last."""
    info_dir = info_dir or dist_info()
    record = "".join(f"{name},{record_hash(data)},{len(data)}\n" for name, data in entries)
    entries = [*entries, (f"{info_dir}/RECORD", (record + f"{info_dir}/RECORD,,\n").encode())]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # unix, so the mode above is read
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buf.getvalue()


def _meta_entries() -> list[tuple[str, bytes]]:
    return [(f"{dist_info()}/{name}", text.encode()) for name, text in
            (("METADATA", metadata()), ("WHEEL", _wheel_file()), ("entry_points.txt", _entry_points()))]


def wheel_bytes(package: Path = PACKAGE) -> bytes:
    """The wheel of the package in `package` (default: this one)."""
    files = [(f"{DIST}/{p.relative_to(package).as_posix()}", p.read_bytes()) for p in package_files(package)]
    return _zip(files + _meta_entries())


def pure_wheel(name: str, version: str, packages: dict[str, Path], *, summary: str, requires_python: str,
               requires: tuple[str, ...] = (), scripts: dict[str, str] | None = None) -> tuple[str, bytes]:
    """(file name, bytes) of a pure-Python wheel of other packages (name in the wheel -> its
    folder), built the same way: the course server's engine wheel."""
    dist = name.replace("-", "_")
    info = dist_info(dist, version)
    files = [(f"{pkg}/{p.relative_to(root).as_posix()}", p.read_bytes())
             for pkg, root in sorted(packages.items()) for p in package_files(root)]
    meta = [(f"{info}/METADATA", metadata(name, version, summary, requires_python, requires).encode()),
            (f"{info}/WHEEL", _wheel_file().encode())]
    if scripts:
        meta.append((f"{info}/entry_points.txt", _entry_points(scripts).encode()))
    return wheel_name(dist, version), _zip(files + meta, info)


def write_wheel(folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel_name()
    path.write_bytes(wheel_bytes())
    return path


# -- PEP 517 / PEP 660: client/pyproject.toml's build backend ------------------------------
def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return []


get_requires_for_build_editable = get_requires_for_build_sdist = get_requires_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None) -> str:
    return write_wheel(wheel_directory).name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None) -> str:
    """A wheel whose one file, a .pth, puts client/ on sys.path: the sources, as they are edited."""
    pth = (f"{DIST}.pth", (str(PACKAGE.parent) + "\n").encode())
    path = Path(wheel_directory) / wheel_name()
    path.write_bytes(_zip([pth, *_meta_entries()]))
    return path.name


def build_sdist(sdist_directory, config_settings=None) -> str:
    """client/ as a source archive: pyproject.toml, the package, PKG-INFO."""
    root = f"{DIST}-{__version__}"
    files = [("pyproject.toml", (PACKAGE.parent / "pyproject.toml").read_bytes()), ("PKG-INFO", metadata().encode())]
    files += [(f"{DIST}/{p.relative_to(PACKAGE).as_posix()}", p.read_bytes()) for p in package_files()]
    path = Path(sdist_directory) / f"{root}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(files):
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 315532800
            tar.addfile(info, io.BytesIO(data))
    return path.name


if __name__ == "__main__":
    import sys

    print(write_wheel(sys.argv[1] if len(sys.argv) > 1 else "dist"))
