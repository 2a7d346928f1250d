"""Small I/O helpers that never leave half-written files behind (a crash leaves the old file or none)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import AntidistillError


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux), else set and restored."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give a file made by `mkstemp` / `mkdtemp` (always 0600 / 0700) the mode a plain `open` would have given it.

    Why: outputs are shared (a team reads a run folder); temporary-file modes made them private whatever the umask.
    """
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~current_umask())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path` in one rename, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        apply_umask(tmp)
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output(path: str | os.PathLike[str], option: str,
                 may_replace: Callable[[Path], bool] | None = None) -> Path:
    """Refuse, before any work, an output path that exists (unless `may_replace` says it is ours to replace) or
    whose folder cannot be written; returns the path. Why first: a model load and hours of compute must not end
    in an unwritable path, and a user's file or folder must never be replaced."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and (may_replace is None or not may_replace(path)):
        raise AntidistillError(f"{option} {path} exists and is not an output this command may replace: "
                               "give a new path (nothing was written)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise AntidistillError(f"{option} {path}: cannot write in {parent} (not a writable folder)")
    return path


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a jsonl file; a malformed line is an error that names the file and line."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise AntidistillError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return records


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> Path:
    """Write records as jsonl atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def sha256_of_records(records: Iterable[Any]) -> str:
    """A content hash of JSON-serialisable records, independent of key order."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
