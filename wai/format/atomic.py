"""Atomic file writes: a temporary name in the same directory, fsync-free rename onto the final name.

A process killed mid-write leaves only a ``.tmp-*`` file, never a truncated file under a final name;
``clean_temporaries`` removes such leftovers.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TMP_PREFIX = ".tmp-"
# mkstemp creates 0600 files; final files get the usual 0666 & ~umask like any open(..., "w") would.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent directories are created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + p.name + ".", dir=p.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


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


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy a file atomically (read fully, then ``write_bytes``)."""
    return write_bytes(dst, Path(src).read_bytes())


def clean_temporaries(root: str | Path) -> int:
    """Remove leftover temporary files under ``root``; returns how many were removed."""
    n = 0
    for p in Path(root).rglob(TMP_PREFIX + "*"):
        if p.is_file():
            p.unlink()
            n += 1
    return n
