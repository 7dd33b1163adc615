"""Loader metadata at scale: start-up, metadata cost per sample and worker memory, 10^5 to 10^7 frames.

Builds one converted dataset root of ``max(sizes) / 2000`` scenes of 2,000 frames each, metadata only (every
frame's files point at one shared image and depth pair), with scene lists per size as splits
``n<frames>`` (so the sizes share scenes). Then, for each (frames, mode), a fresh worker process:

* ``startup_s``: constructing ``WAIDataset`` over the split (``metadata=<mode>``) and taking ``len()``;
* ``worker_rss_growth_mb``: RSS growth of that worker after touching every scene of the split once (what an
  epoch does) and then sampling, and ``worker_private_growth_mb``: the part not backed by shared files
  (RssAnon); ``first_touch_ms_per_scene``: that epoch's cost per scene (files may come from disk);
* ``metadata_ms_per_sample``: then, in steady state, one sample's metadata, i.e. its scene opened the way the
  mode does and 4 frames' camera, pose and file paths read (random scenes, as training draws them);

Modes: ``tables`` (memory-mapped ``frames.arrow``), ``json`` (parsed ``scene_meta.json``, cached per process
within ``WAI_SCENE_CACHE_MB``) and ``reparse`` (parse ``scene_meta.json`` for every sample: MapAnything's
pattern). JSON is skipped at 10^7 (its ``scene_meta.json`` files there are stubs, ~8.5 GB otherwise).

    python bench/loader_scale.py            # 10^5, 10^6, 10^7 frames (about 3 GB of tables on disk)
    python bench/loader_scale.py --quick    # 10^4, 10^5
Prints one JSON object: {"results": [{"frames", "mode", "startup_s", "metadata_ms_per_sample",
"worker_rss_growth_mb", ...}], "targets": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAMES_PER_SCENE = 2000
TARGETS = {"worker_rss_growth_mb_at_1e7": 100, "startup_s": 10, "metadata_ms_per_sample": 1}


def _scene_meta(name: str, n: int, rng: np.random.Generator) -> dict:
    """A realistic scene_meta.json dict (KITTI-360-like keys) of ``n`` frames."""
    from wai.format.conventions import CAMERA_CONVENTION

    t = np.cumsum(rng.normal(0, 0.5, size=(n, 3)), axis=0)
    frames = []
    for i in range(n):
        c, s = np.cos(i * 1e-3), np.sin(i * 1e-3)
        pose = [[c, -s, 0.0, float(t[i, 0])], [s, c, 0.0, float(t[i, 1])], [0.0, 0.0, 1.0, float(t[i, 2])],
                [0.0, 0.0, 0.0, 1.0]]
        fn = f"{i:010d}_00"
        frames.append({"frame_name": fn, "file_path": "images/shared.jpg", "image": "images/shared.jpg",
                       "transform_matrix": pose, "w": 640, "h": 480, "fl_x": 552.554261, "fl_y": 552.554261,
                       "cx": 319.5, "cy": 239.5, "depth": "depth/shared.exr",
                       "extras": {"source_frame": i, "timestamp": i * 0.1}})
    return {"scene_name": name, "dataset_name": "scale", "version": "0.1", "format_version": "1.0",
            "last_modified": "2026-12-02T00:00:00+00:00", "camera_convention": CAMERA_CONVENTION,
            "camera_model": "PINHOLE", "shared_intrinsics": False, "scale_type": "metric", "depth_type": "z",
            "frames": frames,
            "frame_modalities": {"image": {"frame_key": "image", "format": "image"},
                                 "depth": {"frame_key": "depth", "format": "depth"}},
            "scene_modalities": {}, "_applied_transforms": {}, "source": {}, "filters": None, "label_tables": {}}


def build(root: Path, sizes: list[int]) -> None:
    """Scenes for the largest size; JSON for scenes needed by sizes < 10^7, stubs beyond."""
    from wai.format import atomic, codecs
    from wai.format.frametable import write_frame_table
    from wai.format.scene import PROCESS_LOG

    n_scenes = max(sizes) // FRAMES_PER_SCENE
    json_scenes = max([s for s in sizes if s < 10**7], default=0) // FRAMES_PER_SCENE
    rng = np.random.default_rng(0)
    img = codecs.encode_image(np.zeros((480, 640, 3), np.uint8))
    dep = codecs.encode_depth(np.ones((480, 640), np.float32))
    template = _scene_meta("template", FRAMES_PER_SCENE, rng)
    done = root / "_meta" / "built.json"
    if done.is_file() and json.loads(done.read_text()) == {"scenes": n_scenes, "json": json_scenes}:
        return
    for k in range(n_scenes):
        name = f"scene_{k:05d}"
        d = root / name
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "depth").mkdir(exist_ok=True)
        (d / "images" / "shared.jpg").write_bytes(img)
        (d / "depth" / "shared.exr").write_bytes(dep)
        meta = dict(template, scene_name=name)
        if k < json_scenes:
            atomic.write_json(d / "scene_meta.json", meta)
        else:  # 10^7 only: a stub (the table stands for the JSON; ~1.7 MB per scene otherwise)
            atomic.write_json(d / "scene_meta.json", {k2: v for k2, v in meta.items() if k2 != "frames"}
                              | {"frames": [], "note": "bench stub; frames only in frames.arrow"})
        write_frame_table(d, meta)
        atomic.write_json(d / PROCESS_LOG, {"conversion": {"state": "finished", "message": "", "date": ""}})
    for s in sizes:
        split = f"n{s}"
        atomic.write_npy(root / "_meta" / split / f"scale_scene_list_{split}.npy",
                         np.array([f"scene_{k:05d}" for k in range(s // FRAMES_PER_SCENE)]))
    atomic.write_json(done, {"scenes": n_scenes, "json": json_scenes})


CHILD = r"""
import json, os, sys, time
import numpy as np

def mem():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon"):
            out[k] = int(v.split()[0]) / 1024
    return out

root, frames, mode, n_samples = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
split = f"n{frames}"
from wai.format.frametable import open_scene
from wai.loaders import WAIDataset
m0 = mem()
t = time.perf_counter()
ds = WAIDataset([root], split=split, num_views=4, resolution=(518, 392), sampling="sequential", metadata=mode)
n = len(ds)
startup = time.perf_counter() - t
scenes = [ds.locate(i)[1] for i in range(len(ds.scenes[0]))]

def one(scene_dir, rng):
    sc = open_scene(scene_dir, mode)
    nf = len(sc.frames)
    for i in rng.integers(0, nf, size=4):
        cam, pose = sc.camera(int(i)), sc.pose(int(i))
        fr = sc.frame(int(i)) if mode != "tables" else None
        path = sc.file(int(i), "depth") if mode == "tables" else fr["depth"]
    return cam, pose, path

rng = np.random.default_rng(0)
for s in scenes[:4]:  # warm-up: imports and first-call costs
    one(s, rng)
t = time.perf_counter()
for s in scenes:  # an epoch touches every scene (first touch: files may come from disk)
    one(s, rng)
first = (time.perf_counter() - t) / len(scenes) * 1e3
m1 = mem()
t = time.perf_counter()
for _ in range(n_samples):  # steady state: random scenes, as training draws them
    one(scenes[int(rng.integers(len(scenes)))], rng)
per = (time.perf_counter() - t) / n_samples * 1e3
m2 = mem()
print(json.dumps({"frames": frames, "mode": mode, "startup_s": round(startup, 3), "samples": n,
                  "metadata_ms_per_sample": round(per, 4), "first_touch_ms_per_scene": round(first, 3),
                  "worker_rss_growth_mb": round(max(m1["VmRSS"], m2["VmRSS"]) - m0["VmRSS"], 1),
                  "worker_private_growth_mb": round(max(m1["RssAnon"], m2["RssAnon"]) - m0["RssAnon"], 1),
                  "scenes": len(scenes)}))
"""


def run_case(root: Path, frames: int, mode: str) -> dict:
    n_samples = 30 if mode == "reparse" else 2000
    env = dict(os.environ, OPENCV_IO_ENABLE_OPENEXR="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(frames), mode, str(n_samples)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"frames": frames, "mode": mode, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10^4 and 10^5 frames only (CI-sized)")
    ap.add_argument("--root", type=Path, default=None, help="where to build the dataset (kept for reruns)")
    args = ap.parse_args()
    sizes = [10**4, 10**5] if args.quick else [10**5, 10**6, 10**7]
    root = args.root or Path(tempfile.mkdtemp(prefix="wai-scale-"))
    t = time.perf_counter()
    build(root, sizes)
    build_s = time.perf_counter() - t
    results = []
    for frames in sizes:
        for mode in ("tables", "json", "reparse"):
            if mode != "tables" and frames >= 10**7:
                continue
            results.append(run_case(root, frames, mode))
            print(json.dumps(results[-1]), file=sys.stderr)
    out = {"bench": "loader_scale", "frames_per_scene": FRAMES_PER_SCENE, "build_seconds": round(build_s, 1),
           "root": str(root), "results": results, "targets": TARGETS}
    print(json.dumps(out, indent=1))
    if args.root is None:
        shutil.rmtree(root)  # our own temporary dataset (mkdtemp above)


if __name__ == "__main__":
    main()
