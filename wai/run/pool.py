"""A process pool that survives its workers: one dead worker fails one scene, never the run.

``concurrent.futures.ProcessPoolExecutor`` marks the whole pool broken when one worker dies (OOM killer,
``kill -9``, a segfault in a native decoder): every pending scene then fails with ``BrokenProcessPool`` and
no manifest is written. ``WorkerPool`` instead gives each worker its own pipe and watches its process
sentinel: a worker that dies makes *its* scene ``failed`` ("worker died: signal 9 (SIGKILL)"), a fresh
worker replaces it, and the other scenes go on.

Workers die with the main process: on Linux each worker asks the kernel for ``SIGKILL`` when its parent
dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread exits the worker once its parent is
gone. Workers also stream frame counts to the main process (progress across workers).

Workers are started with ``spawn``: they never inherit threads or open handles of the parent (tqdm, torch,
open3d). A pool can be reused across runs (``run_conversion(..., pool=pool)``); the caller closes it.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from wai.format.scene import FAILED
from wai.run.types import Job, SceneResult

#: Workers report their frame count at most this often (seconds): progress without flooding the pipe.
PROGRESS_INTERVAL = 0.2
#: How often a worker's watchdog checks that its parent is alive (seconds).
WATCHDOG_INTERVAL = 1.0
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` ends (kernel signal on Linux, watchdog thread everywhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog below still ends the worker
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:  # re-parented: the main process is gone
                os._exit(1)
            time.sleep(WATCHDOG_INTERVAL)

    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="wai-parent-watchdog", daemon=True).start()


def _worker_main(conn: Connection, parent_pid: int) -> None:
    """A worker's loop: receive a ``Job``, convert it, send progress and the ``SceneResult`` back."""
    _die_with_parent(parent_pid)
    from wai.run.scene import run_job

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        done, last = 0, time.monotonic()

        def on_frame() -> None:
            nonlocal done, last
            done += 1
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL:
                conn.send(("frames", done))
                done, last = 0, now

        result = run_job(job, on_frame=on_frame)
        if done:
            conn.send(("frames", done))
        conn.send(("result", result))


def describe_exit(exitcode: int | None) -> str:
    """``worker died: signal 9 (SIGKILL)`` / ``worker exited with code 3``, with the usual cause of a SIGKILL."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = "; killed from outside, often the kernel's out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"worker died: signal {-exitcode} ({name}){hint}"
    return f"worker exited with code {exitcode} while converting"


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    job: Job | None = None


class WorkerPool:
    """``workers`` spawned processes converting one scene each at a time. Use as a context manager."""

    def __init__(self, workers: int) -> None:
        self.size = max(1, int(workers))
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._closed = False

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True,
                                 name="wai-convert-worker")
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def start(self) -> WorkerPool:
        """Start the workers now (otherwise on first use); returns the pool."""
        if self._closed:
            raise RuntimeError("WorkerPool is closed")
        self._workers = [w for w in self._workers if w.proc.is_alive()]
        while len(self._workers) < self.size:
            self._workers.append(self._spawn())
        return self

    def run(self, jobs: Iterable[Job], on_frames: Callable[[int], None] | None = None) -> Iterator[SceneResult]:
        """Convert ``jobs``; yields each scene's result as it completes (a dead worker's scene as ``failed``)."""
        self.start()
        todo = deque(jobs)
        try:
            while todo or any(w.job is not None for w in self._workers):
                for w in self._workers:
                    if w.job is None and todo:
                        w.job = todo.popleft()
                        w.conn.send(w.job)
                busy = [w for w in self._workers if w.job is not None]
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
                for i, w in enumerate(list(self._workers)):
                    if w.job is None:
                        continue
                    if w.conn in ready:
                        msg = self._recv(w)
                        if msg is not None:
                            kind, value = msg
                            if kind == "frames":
                                if on_frames is not None:
                                    on_frames(value)
                            else:
                                w.job = None
                                yield value
                            continue
                    if w.proc.sentinel in ready or msg_is_eof(w):
                        yield self._replace_dead(i, w)
        except BaseException:
            self.close(terminate=True)  # Ctrl-C or a failing caller: no worker keeps converting
            raise

    @staticmethod
    def _recv(w: _Worker) -> tuple[str, Any] | None:
        try:
            return w.conn.recv()
        except (EOFError, OSError):
            return None  # the worker is gone; its sentinel tells how

    def _replace_dead(self, i: int, w: _Worker) -> SceneResult:
        w.proc.join(timeout=5)
        job = w.job
        if job is None:  # only busy workers get here
            raise RuntimeError("internal error: an idle worker was replaced as dead")
        reason = describe_exit(w.proc.exitcode)
        _mark_failed(job, reason)
        w.conn.close()
        self._workers[i] = self._spawn()
        return SceneResult(job.scene.name, job.scene.split, FAILED, error=f"{reason}\n")

    def close(self, terminate: bool = False) -> None:
        """Stop the workers (idle ones exit at once; with ``terminate`` busy ones are killed too)."""
        for w in self._workers:
            try:
                if terminate:
                    w.proc.terminate()
                else:
                    w.conn.send(None)
            except (OSError, ValueError):
                pass  # already gone
        for w in self._workers:
            w.proc.join(timeout=10)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            w.conn.close()
        self._workers = []
        self._closed = True


def msg_is_eof(w: _Worker) -> bool:
    """True when the worker's process has ended (its pipe may still hold nothing more)."""
    return not w.proc.is_alive()


def _mark_failed(job: Job, reason: str) -> None:
    """Record a dead worker's scene as failed in its own ``_process_log.json`` (only in a folder wai made)."""
    from wai.format.scene import is_ours, set_process_state

    scene_dir = job.output / job.scene.name
    if scene_dir.is_dir() and not scene_dir.is_symlink() and is_ours(scene_dir):
        set_process_state(scene_dir, FAILED, reason)


__all__ = ["WorkerPool", "describe_exit"]
