"""Atomic file writes: a temporary name in the same directory, fsync-free rename onto the final name.

A process killed mid-write leaves only a ``.tmp-wai-*`` file, never a truncated file under a final name.
Temporary files are created with ``O_EXCL`` (``mkstemp``), so a planted symlink is never followed; a
leftover is removed only where the library owns the folder (a scene folder being redone, ``_meta``).
``locked`` serialises a read-modify-write of one file between processes (an advisory lock on a sibling
``<name>.lock`` file).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX (Windows): `locked` degrades to no lock
    fcntl = None  # type: ignore[assignment]

#: Prefix of every temporary file this library writes (unique per write: mkstemp adds random characters).
TMP_PREFIX = ".tmp-wai-"
LOCK_SUFFIX = ".lock"
# mkstemp creates 0600 files; final files get the usual 0666 & ~umask like any open(..., "w") would.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent directories are created)."""
    p = Path(path)
    try:
        if not os.path.isdir(p.parent):  # a stat: cheaper than mkdir's EEXIST on every file of a scene
            p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + p.name + ".", dir=p.parent)
    except OSError as e:
        raise _write_error(p, e) from e
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)  # our own temporary (unique name from mkstemp)
        if isinstance(e, OSError):
            raise _write_error(p, e) from e
        raise
    return p


def _write_error(path: Path, e: OSError) -> OSError:
    """An ``OutputWriteError`` naming the file, with the usual fix for a full disk."""
    from wai.errors import OutputWriteError

    hint = "; free space on that filesystem (or choose another --output) and rerun: finished scenes are kept" \
        if e.errno == errno.ENOSPC else ""
    return OutputWriteError(e.errno, f"cannot write {path}: {e.strerror or e}{hint}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text (2-space indent, numpy values converted, NaN rejected)."""
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically."""
    return write_bytes(path, dumps_json(obj).encode())


def write_npy(path: str | Path, arr: np.ndarray) -> Path:
    """Write a numpy array as ``.npy`` atomically."""
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object file as a dict; {} when it is missing, unreadable or not a JSON object (state files that
    a later write replaces whole, so a bad one is treated as absent)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lock_path(path: str | Path) -> Path:
    """The lock file that ``locked(path)`` uses: ``<path>.lock`` next to ``path``."""
    p = Path(path)
    return p.with_name(p.name + LOCK_SUFFIX)


@contextmanager
def locked(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive advisory lock for ``path`` during the ``with`` block (yields the lock file's path).

    The lock is ``fcntl.flock`` on ``<path>.lock``, created on first use and left in place (deleting it
    would let a waiting process lock a file that a newcomer no longer sees). It only excludes other
    holders of ``locked(path)``: readers need none, since writes are atomic renames. Closing the
    descriptor releases the lock, also when the process dies. Without ``fcntl`` (not POSIX) no lock is
    taken and concurrent read-modify-writes may lose an update.
    """
    lp = lock_path(path)
    if fcntl is None:
        yield lp
        return
    # O_NOFOLLOW: a symlink planted as the lock file is refused (ELOOP), never followed to create its target.
    try:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except OSError as e:
        if lp.is_symlink():
            from wai.errors import PathEscapeError

            raise PathEscapeError(f"{lp} is a symlink; wai never writes through one (remove the link)") from e
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lp
    finally:
        os.close(fd)
