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

from server.security import clean_filename, login_error

SUFFIXES = {".ipynb": "ipynb", ".py": "py"}
MAX_CELLS = 10_000  # as the grader's intake (autograder/authoring/notebook.py): also bounds validation time

# What a file that is not a notebook or a Python file most often is, by its first bytes.
_MAGIC = [(b"PK\x03\x04", "a zip archive (submit the notebook itself, not an archive)"),
          (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
          (b"\x1f\x8b", "a gzip archive"), (b"{\\rtf", "an RTF document"),
          (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document")]


class UploadError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def what_it_is(filename: str, data: bytes) -> str:
    """A short description of an upload that is not what it should be, for the message."""
    for magic, text in _MAGIC:
        if data.startswith(magic):
            return text
    if data.lstrip()[:1] == b"{" and b'"cells"' in data[:1 << 20]:
        return "a notebook saved under another name (rename it to .ipynb)"
    suffix = PurePosixPath(filename).suffix
    return f"a {suffix} file" if suffix else "a file without a suffix"


def submission_type(filename: str, data: bytes) -> str:
    """The kind from the name alone (cheap, before anything is parsed); 415 with what the
    file looks like otherwise."""
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise UploadError(415, f"{filename!r} is {what_it_is(filename, data)}: submit a notebook (.ipynb) or a "
                               "Python file (.py)")
    return SUFFIXES[suffix]


def submission_kind(filename: str, data: bytes, max_bytes: int) -> str:
    """Name, size, encoding, then (for a notebook) its JSON and nbformat's validation,
    with the number of cells bounded first so that validation time is bounded."""
    submission_type(filename, data)
    suffix = PurePosixPath(filename).suffix.lower()
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
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise UploadError(422, f"{filename!r} is not a notebook: not valid JSON ({str(e)[:200]})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("cells", []), list):
            raise UploadError(422, f"{filename!r} is not a valid Jupyter notebook: no list of cells")
        if len(raw.get("cells", [])) > MAX_CELLS:
            raise UploadError(413, f"{filename!r} has {len(raw['cells'])} cells; the limit is {MAX_CELLS}")
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
               max_entry: int, skipped: list[tuple[str, str]] | None = None) -> list[BatchEntry]:
    """The archive's submissions. An archive that is hostile (a path outside it, a link, a
    zip bomb, too large) is refused whole; an entry that is only unreadable or badly named
    is left out and listed in `skipped` as (entry, why)."""
    skipped = [] if skipped is None else skipped
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
            skipped.append((name, f"cannot be read: {e}"))
            continue
        if len(body) > max_entry:
            raise UploadError(413, f"{name!r} inflates past {max_entry} bytes; refused")
        total += len(body)
        if total > max_total:
            raise UploadError(413, f"the archive inflates past {max_total} bytes; refused")
        login = parts[0] if len(parts) > 1 else PurePosixPath(parts[0]).stem
        if login_error(login):
            skipped.append((name, f"no login in its name: {login_error(login)}"))
            continue
        entries.append(BatchEntry(login=login, filename=clean_filename(parts[-1]), data=body))
    if not entries:
        why = "; ".join(f"{n}: {w}" for n, w in skipped[:10])
        raise UploadError(422, "the archive holds no .ipynb or .py files it could place" + (f" ({why})" if why else ""))
    return entries
