#!/usr/bin/env python
"""Loader throughput: views/s of one worker with cached metadata vs. re-parsing ``scene_meta.json`` per sample.

Writes a synthetic pinhole scene of ``n_frames`` (default 2,000) 64x48 frames (8 rendered facade views
re-encoded under new names and poses), computes its covisibility, then times ``WAIDataset`` samples
(4 views, covisibility sampling, 64x48 output) in a single process:

* ``cached``: this library's loader (``load_scene`` cache keyed by path + mtime, covisibility memmap cached);
* ``reparse``: the same loader with ``cache_metadata=False``, which reads and parses ``scene_meta.json`` and
  reopens the covisibility file for every sample, as MapAnything's WAI loaders do.

Both runs draw the same samples. Prints one JSON object; ``run(quick)`` returns it for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _time_samples(ds: Any, indices: list[int], repeats: int) -> float:
    """Best-of-``repeats`` seconds to fetch ``indices``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in indices:
            ds[i]
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool = False, n_frames: int = 2000, num_views: int = 4, resolution: tuple[int, int] = (64, 48),
        workdir: str | Path | None = None) -> dict[str, Any]:
    """Run the benchmark; ``quick`` times fewer samples (the scene keeps ``n_frames`` frames). Returns the figures."""
    from wai.loaders import WAIDataset
    from wai.loaders.covisibility import write_covisibility
    from wai.synthetic.scenes import write_long_scene

    samples = 24 if quick else 150
    repeats = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="wai-bench-loader-", dir=workdir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        scene = write_long_scene(root, n_frames=n_frames, size=resolution)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_covisibility(scene, target_size=32)
        t_covis = time.perf_counter() - t0
        meta_bytes = (scene / "scene_meta.json").stat().st_size

        kw = dict(num_views=num_views, resolution=resolution, sampling="covisibility", seed=0,
                  samples_per_epoch=samples, covisibility_thres=0.25)
        cached = WAIDataset(root, **kw)
        reparse = WAIDataset(root, cache_metadata=False, **kw)
        idx = list(range(samples))
        for ds in (cached, reparse):  # warm the page cache and the per-process caches
            ds[0]
            ds[1]
        t_reparse = _time_samples(reparse, idx, repeats)
        t_cached = _time_samples(cached, idx, repeats)

    views = samples * num_views
    vps_cached = views / t_cached
    vps_reparse = views / t_reparse
    return {
        "benchmark": "loader",
        "views_per_s_per_worker": round(vps_cached, 1),
        "views_per_s_per_worker_reparse": round(vps_reparse, 1),
        "speedup_vs_reparse": round(vps_cached / vps_reparse, 2),
        "ms_per_sample": round(1000 * t_cached / samples, 3),
        "ms_per_sample_reparse": round(1000 * t_reparse / samples, 3),
        "n_frames": n_frames,
        "scene_meta_mb": round(meta_bytes / 1e6, 2),
        "num_views": num_views,
        "resolution": list(resolution),
        "samples_timed": samples,
        "sampling": "covisibility",
        "write_scene_s": round(t_write, 2),
        "covisibility_s": round(t_covis, 2),
        "quick": quick,
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="time fewer samples (the scene still has 2,000 frames)")
    p.add_argument("--frames", type=int, default=2000, help="frames in the benchmark scene")
    p.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    a = p.parse_args(argv)
    res = run(quick=a.quick, n_frames=a.frames)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json is not None:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
