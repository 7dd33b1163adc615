"""Executors beyond the local process pool: Ray (``--executor ray``).

Same scene-as-unit semantics as the process pool: each scene is one task running ``convert_one`` (which
isolates failures and records tracebacks); resume, manifest and progress stay in ``run_conversion``.
Progress is per scene here (Ray tasks do not stream frame counts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from wai.errors import import_optional
from wai.format.scene import FAILED

if TYPE_CHECKING:
    from wai.converters.base import Converter, SceneRef
    from wai.run.types import RunOptions, SceneResult

#: Per-task resource hints: one CPU, and memory headroom for one scene's frames (bytes).
TASK_RESOURCES = {"num_cpus": 1, "memory": 1 << 30}


def run_ray(converter: Converter, todo: list[SceneRef], output: Path, opts: RunOptions) -> Iterator[SceneResult]:
    """Run scenes as Ray tasks; connects to ``opts.ray_address`` or starts a local Ray with ``opts.workers`` CPUs."""
    ray = import_optional("ray", "ray")
    from wai.run.orchestrate import make_job
    from wai.run.scene import run_job
    from wai.run.types import SceneResult

    started = False
    if not ray.is_initialized():
        if opts.ray_address:
            ray.init(address=opts.ray_address, log_to_driver=False)
        else:
            # Scene results are small: a 256 MB object store instead of Ray's default 30% of RAM.
            ray.init(num_cpus=max(1, opts.workers), include_dashboard=False, log_to_driver=False,
                     configure_logging=False, object_store_memory=256 << 20)
        started = True
    try:
        task = ray.remote(max_retries=0, **TASK_RESOURCES)(run_job)
        refs = {task.remote(make_job(converter, s, output, opts)): s for s in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                scene = refs[ref]
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as e:  # worker crash or OOM kill: the scene failed, the run goes on
                    yield SceneResult(scene.name, scene.split, FAILED, error=f"{type(e).__name__}: {e}")
    finally:
        if started:
            ray.shutdown()
