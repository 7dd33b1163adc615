"""Converting one scene: failure isolation, the empty-scene rule, and the worker-side entry point."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wai.converters.base import Converter, SceneRef
from wai.errors import ConversionError
from wai.format.scene import EMPTY, FAILED, FINISHED, SceneWriter
from wai.run.types import Job, SceneResult


def count(values: list[Any]) -> dict[str, int]:
    """Occurrences of each value (as strings), sorted by value."""
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def convert_one(
    converter: Converter, scene: SceneRef, output: Path, depth_precision: str, overwrite: bool,
    on_frame: Callable[[], None] | None = None, malloc_tuning: bool = False,
) -> SceneResult:
    """Convert one scene, isolating failures: the result says ``failed`` with the traceback.

    A scene whose every frame is dropped is ``empty``: its directory is removed and the result carries the
    drop reasons. A scene that neither writes nor drops a frame is a failure (frames vanished silently).
    ``on_frame`` is called after every written or dropped frame (progress); with ``malloc_tuning`` this
    process keeps freed buffers for reuse from then on (``allocator.keep_freed_memory``). The scene's
    summary (``convert_scene``'s return value) is stored in its ``_process_log.json``, so a manifest rebuilt
    later (``--resume`` after a crash) loses nothing.
    """
    if malloc_tuning:
        from wai.run.allocator import keep_freed_memory

        keep_freed_memory()
    t0 = time.perf_counter()
    try:
        with SceneWriter(
            output, scene.name, converter.name, depth_precision=depth_precision, overwrite=overwrite,
            source=converter.source_info(scene), **converter.writer_options(scene),
        ) as writer:
            writer.on_frame = on_frame
            summary = converter.convert_scene(scene, writer) or {}
            writer.summary = summary
            n_frames = writer.n_frames
            reasons = [r.get("drop_reason") for r in writer.coverage_rows if not r.get("selected", True)]
            if n_frames == 0:
                if not reasons:
                    raise ConversionError(f"scene {scene.name}: the converter wrote no frame and dropped none; "
                                          "every frame must be written or dropped with a reason")
                writer.discard()
        status = EMPTY if n_frames == 0 else FINISHED
        return SceneResult(scene.name, scene.split, status, n_frames, len(reasons), time.perf_counter() - t0,
                           summary=summary, drop_reasons=count(reasons))
    except Exception as e:  # noqa: BLE001 - isolate any failure of one scene, record it with its traceback
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return SceneResult(scene.name, scene.split, FAILED, seconds=time.perf_counter() - t0,
                           error=f"{type(e).__name__}: {e}\n{tb}")


def run_job(job: Job, on_frame: Callable[[], None] | None = None) -> SceneResult:
    """Worker-side entry point: build the converter in this process and convert ``job.scene``."""
    from wai.converters import load_class
    from wai.format.codecs import cv2

    # One scene per worker per core: OpenCV's own thread pool (remap, cvtColor, ...) in every worker would
    # oversubscribe the cores the pool already fills.
    cv2.setNumThreads(1)
    conv = load_class(job.cls_path)(job.root, job.options)
    return convert_one(conv, job.scene, job.output, job.depth_precision, job.overwrite, on_frame=on_frame,
                       malloc_tuning=job.malloc_tuning)
