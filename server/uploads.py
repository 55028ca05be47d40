"""Checks on what users upload, before anything is stored: a 4xx with a reason, never a 500.

- A submission is a notebook (`.ipynb`, nbformat 4, valid JSON) or a Python file (`.py`,
  UTF-8 text); its content, not only its name, must be what the name says. A notebook
  whose code does not run is accepted and graded (its syntax errors are feedback).
- A batch is a zip of `<login>.ipynb` / `<login>.py` or `<login>/<anything>.ipynb`.
  Refused whole, before anything is stored, if any entry escapes the archive (absolute
  paths, `..`, links), if it holds too many files, or if it inflates too much in total
  or per entry (zip bombs); sizes are checked while inflating, not only from the headers.
"""

from __future__ import annotations

import io
import json
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import nbformat

SUFFIXES = {".ipynb": "ipynb", ".py": "py"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def clean_filename(name: str | None) -> str:
    """The last path component, with anything but letters, digits, . _ - replaced."""
    base = (name or "").replace("\\", "/").split("/")[-1]
    base = _SAFE.sub("_", base).strip("._") or "submission"
    return base[-120:]


def submission_kind(filename: str, data: bytes, max_bytes: int) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise UploadError(415, f"{filename!r}: submit a notebook (.ipynb) or a Python file (.py)")
    if len(data) > max_bytes:
        raise UploadError(413, f"{filename!r} is {len(data)} bytes; the limit is {max_bytes}")
    if not data.strip():
        raise UploadError(422, f"{filename!r} is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadError(422, f"{filename!r} is not UTF-8 text") from None
    if "\x00" in text:
        raise UploadError(422, f"{filename!r} contains NUL bytes: not a text file")
    if suffix == ".ipynb":
        try:
            nb = nbformat.reads(text, as_version=4)
            nbformat.validate(nb)
        except (json.JSONDecodeError, nbformat.reader.NotJSONError) as e:
            raise UploadError(422, f"{filename!r} is not a notebook: not valid JSON ({str(e)[:200]})") from None
        except Exception as e:  # noqa: BLE001 - nbformat raises many kinds for a bad notebook
            raise UploadError(422, f"{filename!r} is not a valid Jupyter notebook: {str(e).splitlines()[0][:200]}") from None
    return SUFFIXES[suffix]


@dataclass
class BatchEntry:
    login: str
    filename: str
    data: bytes


def read_batch(data: bytes, *, max_files: int, max_total: int, max_ratio: float,
               max_entry: int) -> list[BatchEntry]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise UploadError(422, f"not a zip archive: {e}") from None
    if len(infos) > max_files:
        raise UploadError(413, f"the archive holds {len(infos)} entries; the limit is {max_files}")
    entries, total = [], 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name:
            raise UploadError(400, f"the archive entry {name!r} points outside the archive; nothing was stored")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadError(400, f"the archive entry {name!r} is a symbolic link; nothing was stored")
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if PurePosixPath(name).suffix.lower() not in SUFFIXES:
            continue
        if info.file_size > max_entry:
            raise UploadError(413, f"{name!r} is {info.file_size} bytes; the limit is {max_entry}")
        if info.compress_size and info.file_size / info.compress_size > max_ratio:
            raise UploadError(413, f"{name!r} inflates {info.file_size / info.compress_size:.0f}x: refused as a zip bomb")
        # Inflate with a cap: the header's sizes may lie.
        try:
            with zf.open(info) as f:
                body = f.read(max_entry + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
            # corrupt, truncated, encrypted or an unknown compression method
            raise UploadError(422, f"the archive entry {name!r} cannot be read: {e}") from None
        if len(body) > max_entry:
            raise UploadError(413, f"{name!r} inflates past {max_entry} bytes; refused")
        total += len(body)
        if total > max_total:
            raise UploadError(413, f"the archive inflates past {max_total} bytes; refused")
        login = parts[0] if len(parts) > 1 else PurePosixPath(parts[0]).stem
        entries.append(BatchEntry(login=login, filename=clean_filename(parts[-1]), data=body))
    if not entries:
        raise UploadError(422, "the archive holds no .ipynb or .py files")
    return entries
