"""The run machinery: orchestration, worker pools, locks, guards and the dataset-level outputs.

Imports flow one way: ``wai.run`` uses ``wai.converters`` (the per-source readers) and ``wai.format``;
neither imports ``wai.run``.
"""

from wai.run.guards import OutputLock, check_no_overlap
from wai.run.manifest import COVERAGE_PARQUET, MANIFEST, META_DIR, read_manifest
from wai.run.orchestrate import check_raw, run_conversion, select_scenes
from wai.run.pool import WorkerPool
from wai.run.types import SKIPPED, RunOptions, RunResult, SceneResult, default_workers

__all__ = [
    "COVERAGE_PARQUET", "MANIFEST", "META_DIR", "SKIPPED", "OutputLock", "RunOptions", "RunResult", "SceneResult",
    "WorkerPool", "check_no_overlap", "check_raw", "default_workers", "read_manifest", "run_conversion",
    "select_scenes",
]
