"""Atomic file writes, shared by weight files, checkpoints, benchmark reports and training logs.

A write goes to a temporary file beside the target, is synced, then renamed over the target, and the folder is synced:
a crash midway leaves the old file (or none) in place, never a partial one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["write_atomic", "write_text_atomic", "fsync_dir", "umask"]

PathLike = Union[str, "os.PathLike[str]"]


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: PathLike) -> None:
    """Makes a rename in the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically, with the permissions of a plainly created file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~umask())  # not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(folder)


def write_text_atomic(path: PathLike, text: str) -> None:
    """:func:`write_atomic` of UTF-8 text."""
    write_atomic(path, text.encode("utf-8"))
