#!/usr/bin/env python
"""Loader throughput at training resolution, against the codec floor of the same views.

Default run: a pinhole scene of 2,000 frames at 640x480 (JPEG + float16 EXR depth, the converters' defaults)
with its covisibility, loaded by ``WAIDataset`` at 518x392 with 4 views and covisibility sampling in one
process (one DataLoader worker's worth of work). Printed as one JSON object:

* ``loader_ms_per_view``: wall time per view of fetching the samples batch by batch as a DataLoader worker does
  with a batch sampler (``ds.__getitems__(indices)``, torch's ``_MapDatasetFetcher``), then ``collate_views``;
  ``per_sample_loader_ms_per_view`` / ``per_sample_overhead_ratio``: the same with ``ds[i]`` per sample (what a
  DataLoader does for a dataset, or a wrapper, without ``__getitems__``), best of as many runs, after them;
* ``codec_floor_ms_per_view``: for the same views, in the same process, decode the image and the depth file
  and resize each once to the size the loader resizes to (nothing else);
* ``overhead_ratio`` = loader / floor, and ``stages_ms_per_view``: the loader's own breakdown (metadata,
  sampling, decode, resize, geometry, normalisation, collate; ``ds.profile_stages``);
* ``views_per_s_per_worker_reparse`` / ``speedup_vs_reparse``: the same samples with ``cache_metadata=False``
  (``scene_meta.json`` re-read and re-parsed for every sample, as MapAnything's WAI loaders do);
* ``dataloader_1_worker_ms_per_view`` (and ``..._per_sample``): a real ``DataLoader`` with one worker process and
  ``collate_fn=collate_views``, per view, start-up excluded. Unlike the figures above it includes handing each
  batch to the main process through shared memory, whose fresh pages cost more than the loader itself on a VM.

Building the scene is cheap: eight views are rendered and encoded once, the other frames reuse their bytes
under new names and poses shifted by 500 m per block of eight (so depth and poses stay consistent); the
covisibility of the first eight frames is computed with ``wai.loaders.covisibility.compute_covisibility``
and repeated block-diagonally (exact: blocks 500 m apart never see each other). ``--quick`` times fewer
samples on a 400-frame scene. ``run(quick)`` returns the dict for ``bench/run.py``.
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

import numpy as np

N_UNIQUE = 8
#: Output stages reported in ``stages_ms_per_view`` (the loader's ``profile_stages`` keys).
STAGES = ("metadata", "sampling", "decode", "resize", "geometry", "normalisation", "collate")


def write_bench_scene(root: str | Path, n_frames: int = 2000, size: tuple[int, int] = (640, 480),
                      depth_precision: str = "float16", seed: int = 0) -> Path:
    """A pinhole scene of ``n_frames`` frames of ``size`` (w, h) pixels, with covisibility and scene list.

    Eight street views are rendered and written with ``SceneWriter`` (JPEG q95, EXR depth in metres);
    frame ``k`` reuses the files' bytes of view ``k % 8`` with the pose moved 500 m along x per block.
    """
    from wai.format import atomic
    from wai.format.conventions import PINHOLE
    from wai.format.scene import SCENE_META, SceneWriter, update_scene_modalities
    from wai.loaders.covisibility import COVIS_DIR, MODALITY_NAME, compute_covisibility, covisibility_filename
    from wai.synthetic.scenes import DATASET_NAME, make_camera, write_scene_lists
    from wai.synthetic.world import World, look_at

    root = Path(root)
    cam = make_camera(PINHOLE, size)
    world = World.street(seed)
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(N_UNIQUE):
        x = -6.0 + 12.0 * i / (N_UNIQUE - 1)
        eye = np.array([x, rng.uniform(-1.5, 1.5), 1.7])
        side = 1.0 if i % 2 == 0 else -1.0
        poses.append(look_at(eye, np.array([x + rng.uniform(-3, 3), side * 12.0, 3.0])))
    name = "bench_000"
    with SceneWriter(root, name, DATASET_NAME, camera_model=PINHOLE, depth_precision=depth_precision,
                     overwrite=True, source={"generator": "bench/loader.py"}) as w:
        for i, pose in enumerate(poses):
            r = world.render(cam, pose)
            w.add_frame(f"{i:06d}", cam, pose, image=r["rgb"], depth=r["depth"])
    scene = root / name
    block = compute_covisibility(scene, target_size=64)
    meta = json.loads((scene / SCENE_META).read_text())
    base = meta["frames"]
    blobs = [{k: (scene / f[k]).read_bytes() for k in ("image", "depth")} for f in base]
    frames = list(base)
    for k in range(N_UNIQUE, n_frames):
        src = base[k % N_UNIQUE]
        fname = f"{k:06d}"
        fr = dict(src, frame_name=fname, file_path=f"images/{fname}.jpg", image=f"images/{fname}.jpg",
                  depth=f"depth/{fname}.exr")
        T = np.array(src["transform_matrix"])
        T[0, 3] += 500.0 * (k // N_UNIQUE)
        fr["transform_matrix"] = T.tolist()
        for key in ("image", "depth"):
            (scene / fr[key]).write_bytes(blobs[k % N_UNIQUE][key])
        frames.append(fr)
    meta["frames"] = frames
    atomic.write_json(scene / SCENE_META, meta)
    n_blocks = -(-n_frames // N_UNIQUE)
    full = np.kron(np.eye(n_blocks, dtype=np.float32), block)[:n_frames, :n_frames]
    rel = f"{COVIS_DIR}/{covisibility_filename(n_frames)}"
    (scene / rel).parent.mkdir(parents=True, exist_ok=True)
    np.save(scene / rel, full)
    update_scene_modalities(scene, {MODALITY_NAME: {"scene_key": rel, "format": "mmap"}})
    write_scene_lists(root, {"train": [name]}, DATASET_NAME)
    return scene


def _codec_floor(ds: Any, scene_dir: Path, picks: list[tuple[int, int]], repeats: int) -> tuple[float, str]:
    """Best-of-``repeats`` seconds to decode image + depth of each picked view and resize each once."""
    from wai.format.codecs import cv2
    from wai.format.scene import load_scene
    from wai.loaders.transforms import crop_resize_plan, image_interpolation

    scene = load_scene(scene_dir)
    jobs = []
    for frame_idx, res_idx in picks:
        fr = scene.frames[frame_idx]
        cam = scene.camera(frame_idx)
        nw, nh, _, _ = crop_resize_plan(cam, ds.resolutions[res_idx])
        interp = image_interpolation(cam.w, cam.h, nw, nh)
        jobs.append((str(scene.path / fr["image"]), str(scene.path / fr["depth"]), (nw, nh), interp))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for img_path, depth_path, size, interp in jobs:
            img = cv2.imread(img_path, cv2.IMREAD_COLOR_RGB)
            depth = cv2.imread(depth_path, cv2.IMREAD_UNCHANGED)
            cv2.resize(img, size, interpolation=interp)
            cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST_EXACT)
        best = min(best, time.perf_counter() - t0)
    names = {cv2.INTER_AREA: "area", cv2.INTER_LINEAR: "linear"}
    return best, ",".join(sorted({names.get(j[3], str(j[3])) for j in jobs}))


def _fetch(ds: Any, batch_indices: list[Any]) -> Any:
    """One batch as a DataLoader worker fetches it (torch's ``_MapDatasetFetcher.fetch`` with auto-collation):
    ``ds.__getitems__(indices)`` when the dataset has it, else ``[ds[i] for i in indices]``."""
    getitems = getattr(ds, "__getitems__", None)
    return getitems(batch_indices) if getitems else [ds[i] for i in batch_indices]


def _time_loader(ds: Any, indices: list[Any], batch: int, repeats: int,
                 batched: bool = True) -> tuple[float, dict[str, float]]:
    """Best-of-``repeats`` seconds to fetch ``indices`` and collate them with ``collate_views``, batch by batch
    as a DataLoader worker does (one batch alive at a time); the stage times of the best run. ``batched``:
    fetch through ``__getitems__`` as the DataLoader does (False: ``ds[i]`` per sample, the pre-batch path).
    """
    from wai.loaders import collate_views

    best, best_stages = float("inf"), {}
    for _ in range(repeats):
        ds.profile_stages = {}
        t_collate = 0.0
        t0 = time.perf_counter()
        for b in range(0, len(indices), batch):
            chunk = indices[b : b + batch]
            samples = _fetch(ds, chunk) if batched else [ds[i] for i in chunk]
            t1 = time.perf_counter()
            out = collate_views(samples)
            t_collate += time.perf_counter() - t1
            del samples, out
        elapsed = time.perf_counter() - t0
        stages = dict(ds.profile_stages)
        stages["collate"] = stages.get("collate", 0.0) + t_collate
        if elapsed < best:
            best, best_stages = elapsed, stages
    ds.profile_stages = None
    return best, best_stages


class _PerSample:
    """``ds`` without ``__getitems__``: what a DataLoader fetches from a dataset (or a wrapper) that only has
    ``__getitem__``: one sample at a time, collated afterwards."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: Any) -> Any:
        return self.ds[i]


def _time_dataloader(ds: Any, batches: list[list[Any]], per_sample: bool) -> float:
    """Seconds per batch of a ``DataLoader(num_workers=1, collate_fn=collate_views)`` over ``batches``: the median
    gap between batches received after the first two (start-up excluded), i.e. one worker's throughput with the
    shared-memory hand-over to the main process included (the single-process figures above do not have it)."""
    import torch

    from wai.loaders import collate_views

    # spawn: a forked worker would inherit this process's heap (kept mapped by the malloc tuning above) and pay
    # a copy-on-write fault for every page it reuses; a training process does not load data itself
    loader = torch.utils.data.DataLoader(_PerSample(ds) if per_sample else ds, batch_sampler=batches,
                                         collate_fn=collate_views, num_workers=1, multiprocessing_context="spawn")
    gaps = []
    t0 = None
    for k, _ in enumerate(loader):
        t1 = time.perf_counter()
        if k >= 2:  # the worker's start-up and first batches (fresh heap) excluded
            gaps.append(t1 - t0)
        t0 = t1
    return float(np.median(gaps))


def run(quick: bool = False, n_frames: int | None = None, num_views: int = 4,
        resolution: tuple[int, int] = (518, 392), source_size: tuple[int, int] = (640, 480),
        workdir: str | Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the figures (``--quick``: 400 frames, fewer samples)."""
    import torch

    from wai.format.codecs import cv2
    from wai.loaders import WAIDataset

    # One DataLoader worker's conditions: torch runs workers single-threaded, WAIDataset sets OpenCV to one
    # thread and keeps freed buffers in workers; the codec floor below runs under the same settings.
    try:
        from wai.loaders.dataset import tune_worker_malloc
    except ImportError:  # an older wai (to compare against): its workers only kept freed buffers
        from wai.run.allocator import keep_freed_memory as tune_worker_malloc

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    malloc = tune_worker_malloc()  # what WAIDataset(malloc_tuning=True) does in each DataLoader worker
    n_frames = n_frames or (400 if quick else 2000)
    samples = 12 if quick else 60
    repeats = 3 if quick else 5
    batch = max(1, 24 // num_views)
    with tempfile.TemporaryDirectory(prefix="wai-bench-loader-", dir=workdir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        scene = write_bench_scene(root, n_frames=n_frames, size=source_size)
        t_write = time.perf_counter() - t0
        meta_bytes = (scene / "scene_meta.json").stat().st_size
        kw = dict(num_views=num_views, resolution=resolution, sampling="covisibility", seed=0,
                  samples_per_epoch=samples, covisibility_thres=0.1)
        ds = WAIDataset(root, **kw)
        reparse = WAIDataset(root, cache_metadata=False, **kw)  # MapAnything's re-parse-per-sample pattern
        indices = list(range(samples))
        for i in indices[:2]:  # warm the page cache and the per-process caches
            ds[i]
        picks = [(v["frame_idx"], 0) for i in indices for v in ds[i]]
        t_floor, t_loader, stages = float("inf"), float("inf"), {}
        for _ in range(repeats):  # interleaved, best of each (the VM is shared and noisy)
            f, interp = _codec_floor(ds, scene, picks, 1)
            t, st = _time_loader(ds, indices, batch, 1)
            t_floor = min(t_floor, f)
            if t < t_loader:
                t_loader, stages = t, st
        t_single, _ = _time_loader(ds, indices, batch, repeats, batched=False)
        t_reparse, _ = _time_loader(reparse, indices, batch, 1)
        dl_batches = [indices[b : b + batch] for b in range(0, len(indices), batch)]
        dl_batches = (dl_batches * (12 // len(dl_batches) + 1))[: max(12, len(dl_batches))]
        t_dl = _time_dataloader(ds, dl_batches, per_sample=False)
        t_dl_single = _time_dataloader(ds, dl_batches, per_sample=True)

    views = samples * num_views
    loader_ms = 1000 * t_loader / views
    floor_ms = 1000 * t_floor / views
    return {
        "benchmark": "loader",
        "views_per_s_per_worker": round(views / t_loader, 1),
        "loader_ms_per_view": round(loader_ms, 3),
        "codec_floor_ms_per_view": round(floor_ms, 3),
        "overhead_ratio": round(loader_ms / floor_ms, 3),
        "stages_ms_per_view": {k: round(1000 * stages.get(k, 0.0) / views, 3) for k in STAGES},
        "per_sample_loader_ms_per_view": round(1000 * t_single / views, 3),
        "per_sample_overhead_ratio": round(t_single / t_floor, 3),
        "dataloader_1_worker_ms_per_view": round(1000 * t_dl / (batch * num_views), 3),
        "dataloader_1_worker_ms_per_view_per_sample": round(1000 * t_dl_single / (batch * num_views), 3),
        "views_per_s_per_worker_reparse": round(views / t_reparse, 1),
        "speedup_vs_reparse": round(t_reparse / t_loader, 2),
        "resolution": list(resolution),
        "source_size": list(source_size),
        "num_views": num_views,
        "sampling": "covisibility",
        "image_interpolation": interp,
        "n_frames": n_frames,
        "scene_meta_mb": round(meta_bytes / 1e6, 2),
        "samples_timed": samples,
        "collate_batch": batch,
        "write_scene_s": round(t_write, 2),
        "quick": quick,
        "cpu_count": os.cpu_count(),
        "opencv_threads": cv2.getNumThreads(),
        "malloc_tuning": malloc,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="400-frame scene, fewer samples (CI)")
    p.add_argument("--frames", type=int, default=None, help="frames in the benchmark scene (default 2000)")
    p.add_argument("--views", type=int, default=4, help="views per sample")
    p.add_argument("--resolution", default="518x392", help="output WxH")
    p.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    a = p.parse_args(argv)
    w, h = (int(x) for x in a.resolution.lower().split("x"))
    res = run(quick=a.quick, n_frames=a.frames, num_views=a.views, resolution=(w, h))
    text = json.dumps(res, indent=2)
    print(text)
    if a.json is not None:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
