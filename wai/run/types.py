"""The run's options and results (shared by the orchestrator, the pools and the CLI)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wai.format.scene import EMPTY, FAILED

#: Result status of a scene not converted in this run (complete, or known empty from the manifest).
SKIPPED = "skipped"


@dataclass
class RunOptions:
    """Options shared by every source (``wai-convert SOURCE --help`` lists them)."""

    scenes: str | None = None
    limit: int | None = None
    workers: int = 1
    overwrite: bool = False
    resume: bool = True
    dry_run: bool = False
    check_raw: bool = False
    depth_precision: str = "float16"
    shard: str | None = None
    executor: str = "process"
    ray_address: str | None = None
    progress: bool = True
    #: Keep freed frame-sized buffers in each converting process for reuse (glibc; ``allocator.py``).
    malloc_tuning: bool = True


@dataclass
class SceneResult:
    """What happened to one scene.

    ``status``: ``finished``; ``empty`` (converted, every frame dropped, no directory kept);
    ``failed`` (``error`` has the traceback); ``skipped`` (not converted in this run: complete already, or
    known empty from the manifest, in which case ``n_dropped`` / ``drop_reasons`` are the recorded ones).
    ``drop_reasons`` counts the dropped frames by ``drop_reason``.
    """

    name: str
    split: str
    status: str
    n_frames: int = 0
    n_dropped: int = 0
    seconds: float = 0.0
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    drop_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Every frame of the scene is dropped: found in this run, or known from an earlier one."""
        return self.status == EMPTY or (self.status == SKIPPED and self.n_dropped > 0 and self.n_frames == 0)


@dataclass
class RunResult:
    """The outcome of ``run_conversion``. With ``dry_run``, ``planned`` lists what a real run would convert
    (resume applied) and ``results`` holds the scenes it would skip."""

    output: Path
    results: list[SceneResult]
    planned: list[str]
    manifest: dict[str, Any] | None = None

    @property
    def failed(self) -> list[SceneResult]:
        """Scenes that failed in this run."""
        return [r for r in self.results if r.status == FAILED]

    @property
    def empty(self) -> list[SceneResult]:
        """Scenes whose every frame is dropped (this run's and those known from the manifest)."""
        return [r for r in self.results if r.empty]

    @property
    def skipped(self) -> list[SceneResult]:
        """Scenes not converted in this run because they are complete (or known empty) already."""
        return [r for r in self.results if r.status == SKIPPED]

    @property
    def ok(self) -> bool:
        """True when no scene failed (empty scenes are not failures)."""
        return not self.failed


@dataclass(frozen=True)
class Job:
    """One scene to convert in a worker: everything a fresh process needs (picklable)."""

    cls_path: str
    root: Path
    options: Any
    scene: Any
    output: Path
    depth_precision: str
    overwrite: bool
    malloc_tuning: bool


def default_workers() -> int:
    """Default ``--workers``: the number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
