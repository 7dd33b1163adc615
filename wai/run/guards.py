"""Guards that keep a run from losing data: input/output overlap, and one writer per output root.

* ``check_no_overlap``: the output must not equal, lie inside, or contain the raw input (symlinks
  resolved): a converter writing into its own raw tree could replace raw files.
* ``OutputLock``: an exclusive lock on the output root (``<output>/_meta/.wai.lock``), taken by ``wai-convert``
  (every source) and ``wai-convert covisibility``. A second run fails at once, naming the holder (pid, host,
  start time). The lock is ``flock`` on the file, so the kernel releases it when the holder dies, however it
  dies: a stale lock file is taken over by the next run with no clean-up. The lock file is opened with
  ``O_NOFOLLOW``, so a symlink planted in its place is refused, never followed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wai.errors import OutputLockedError, OutputOverlapError, PathEscapeError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented in docs/format.md, "Data safety")
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".wai.lock"
#: The dataset-level folder (holds the lock, the manifest, the coverage table and the scene lists).
META_DIR = "_meta"


def check_no_overlap(input_root: str | Path, output: str | Path) -> None:
    """Raise ``OutputOverlapError`` when ``output`` equals, is inside, or contains ``input_root``."""
    src, dst = Path(input_root).resolve(), Path(output).resolve()
    if dst == src:
        how = "is the input folder"
    elif src in dst.parents:
        how = "is inside the input folder"
    elif dst in src.parents:
        how = "contains the input folder"
    else:
        return
    raise OutputOverlapError(
        f"--output {output} (resolved: {dst}) {how} --input {input_root} (resolved: {src}); wai never writes into "
        f"raw data. Choose an output outside the raw tree, e.g. --output {src.parent / (src.name + '_wai')}")


class OutputLock:
    """Exclusive writer lock on an output root; use as a context manager (``with OutputLock(out):``)."""

    def __init__(self, root: str | Path, purpose: str = "wai-convert") -> None:
        self.root = Path(root)
        self.path = self.root / META_DIR / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its current (or last) holder ({} when unreadable)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return {}
        try:
            data = json.loads(os.read(fd, 1 << 16) or b"{}")
        except ValueError:
            return {}
        finally:
            os.close(fd)
        return data if isinstance(data, dict) else {}

    def acquire(self) -> OutputLock:
        """Take the lock or raise ``OutputLockedError`` at once (no waiting)."""
        meta = self.path.parent
        if meta.is_symlink():
            raise PathEscapeError(f"{meta} is a symlink; wai writes its dataset files only into a real _meta folder "
                                  "(remove the link)")
        meta.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            if self.path.is_symlink():
                raise PathEscapeError(f"{self.path} is a symlink; wai never writes through one. Remove the "
                                      "link (it is not a file wai created)") from e
            raise
        if fcntl is None:
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            h = self.holder()
            who = (f"pid {h.get('pid')} on host {h.get('host')} ({h.get('purpose', 'a wai run')}, started "
                   f"{h.get('started')})") if h else "another process"
            raise OutputLockedError(
                f"{self.root} is being written by {who}; one run per output root. Wait for it to finish, or "
                f"convert into another --output. (Lock: {self.path}; it is released when its holder exits.)") from e
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv[:8]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (the file stays: deleting it could let two runs lock different files)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_NAME", "OutputLock", "check_no_overlap"]
