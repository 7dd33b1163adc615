#!/usr/bin/env python
"""wai-validate throughput (frames/s), against the decode floor of the same files, in one run.

Default run: a converted dataset of two scenes written with ``SceneWriter`` at the converters' defaults
(JPEG q95 RGB, float16 EXR depth in metres):

* ``dense``: 40 frames at 640x480 driving down the procedural street, dense z-depth and a semantic label map;
* ``lidar``: 40 frames at 1408x376 (KITTI-360's size) with sparse depth: the dense render kept on every 6th
  row and a random half of the columns (~8 % of the pixels, LiDAR-like scan lines).

Printed as one JSON object:

* ``validator_frames_per_s``: ``validate(root)`` (every check, geometry on) over all frames;
* ``no_geometry_frames_per_s``: ``validate(root, geometry=False)``;
* ``decode_floor_frames_per_s``: in the same process, read and fully decode every file every frame names
  (``cv2.imdecode`` of images and label maps, ``cv2.imread`` of EXR depth), nothing else;
* ``ratio_validator_to_floor`` / ``ratio_no_geometry_to_floor``: the validator's time over the floor's;
* ``one_bad_frame``: the ``lidar`` scene again with one frame's rotation transposed (the validator reads the
  suspicious frame's pose several ways to name the cause): frames/s and whether it was caught.

Timings are the best of ``--repeat`` (default 3) interleaved repetitions, single process, OpenCV's default
threads. ``--quick`` uses 12 frames per scene. ``run(quick)`` returns the dict.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _write_scene(root: Path, name: str, size: tuple[int, int], n: int, sparse: bool, seed: int) -> Path:
    """One scene of ``n`` frames of ``size`` (w, h) along the street; sparse depth keeps LiDAR-like lines."""
    from wai.format.conventions import PINHOLE
    from wai.format.scene import Modality, SceneWriter
    from wai.synthetic.scenes import LABEL_TABLE, make_camera
    from wai.synthetic.trajectories import street_drive
    from wai.synthetic.world import CLASS_NAMES, World

    cam = make_camera(PINHOLE, size, hfov_deg=90.0)
    world = World.street(seed)
    rng = np.random.default_rng(seed)
    poses = street_drive(n, start_x=-20.0, step=0.9, lateral=-1.5, yaw_wiggle_deg=3.0, seed=seed)
    with SceneWriter(root, name, "bench", camera_model=PINHOLE, depth_precision="float16") as w:
        w.add_label_table(LABEL_TABLE, CLASS_NAMES)
        for i, T in enumerate(poses):
            r = world.render(cam, T)
            depth = r["depth"]
            mods = {}
            if sparse:
                keep = np.zeros_like(depth, dtype=bool)
                keep[::6, :] = rng.random((len(range(0, cam.h, 6)), cam.w)) < 0.5
                depth = np.where(keep, depth, 0.0).astype(np.float32)
            else:
                mods["semantic"] = Modality("labels", r["semantic"], labels=LABEL_TABLE)
            w.add_frame(f"{i:06d}", cam, T, image=r["rgb"], depth=depth, modalities=mods)
    return root / name


def _files(root: Path) -> list[tuple[Path, str]]:
    """Every (file, format) named by every frame of every scene under ``root``."""
    out = []
    for meta_path in sorted(root.glob("*/scene_meta.json")):
        meta = json.loads(meta_path.read_text())
        mods = meta["frame_modalities"]
        for fr in meta["frames"]:
            for spec in mods.values():
                out.append((meta_path.parent / fr[spec["frame_key"]], spec["format"]))
    return out


def decode_floor(files: list[tuple[Path, str]]) -> float:
    """Seconds to read and fully decode every file (the least any validator must do)."""
    from wai.format.codecs import cv2

    t0 = time.perf_counter()
    for p, fmt in files:
        if fmt == "depth":
            arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        else:
            flags = cv2.IMREAD_COLOR_RGB if fmt == "image" else cv2.IMREAD_UNCHANGED
            arr = cv2.imdecode(np.frombuffer(p.read_bytes(), dtype=np.uint8), flags)
        assert arr is not None, p
    return time.perf_counter() - t0


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(quick: bool = False, repeat: int = 3, workdir: str | None = None) -> dict[str, Any]:
    """Build the dataset, time the floor and the validator (best of ``repeat``), return the results."""
    from wai.format.codecs import cv2
    from wai.validation import validate

    n = 12 if quick else 40
    tmp = Path(tempfile.mkdtemp(prefix="wai-bench-validator-", dir=workdir))
    try:
        root = tmp / "out"
        t0 = time.perf_counter()
        _write_scene(root, "dense", (640, 480), n, sparse=False, seed=0)
        _write_scene(root, "lidar", (1408, 376), n, sparse=True, seed=1)
        build_s = time.perf_counter() - t0
        files = _files(root)
        frames = 2 * n
        best = {"floor": np.inf, "full": np.inf, "nogeo": np.inf}
        report = None
        for _ in range(repeat):
            best["floor"] = min(best["floor"], decode_floor(files))
            dt, report = _timed(lambda: validate(root, progress=False))
            best["full"] = min(best["full"], dt)
            dt, _ = _timed(lambda: validate(root, geometry=False, progress=False))
            best["nogeo"] = min(best["nogeo"], dt)
        assert report is not None
        # the lidar scene with one frame's rotation transposed (the isolated-frame path and its readings)
        bad = tmp / "bad"
        shutil.copytree(root / "lidar", bad / "lidar")
        meta_path = bad / "lidar" / "scene_meta.json"
        meta = json.loads(meta_path.read_text())
        T = np.array(meta["frames"][n // 2]["transform_matrix"])
        T[:3, :3] = T[:3, :3].T
        meta["frames"][n // 2]["transform_matrix"] = T.tolist()
        meta_path.write_text(json.dumps(meta))
        bad_s = np.inf
        bad_report = None
        for _ in range(repeat):
            dt, bad_report = _timed(lambda: validate(bad / "lidar", progress=False))
            bad_s = min(bad_s, dt)
        assert bad_report is not None
        geo = report.geometry
        return {
            "bench": "validator",
            "quick": quick,
            "scenes": {"dense": {"frames": n, "size": [640, 480], "depth": "dense float16 + labels"},
                       "lidar": {"frames": n, "size": [1408, 376], "depth": "sparse float16 (~8 %)"}},
            "frames": frames,
            "files": len(files),
            "build_s": round(build_s, 2),
            "validator_s": round(best["full"], 3),
            "validator_frames_per_s": round(frames / best["full"], 1),
            "no_geometry_s": round(best["nogeo"], 3),
            "no_geometry_frames_per_s": round(frames / best["nogeo"], 1),
            "decode_floor_s": round(best["floor"], 3),
            "decode_floor_frames_per_s": round(frames / best["floor"], 1),
            "ratio_validator_to_floor": round(best["full"] / best["floor"], 2),
            "ratio_no_geometry_to_floor": round(best["nogeo"] / best["floor"], 2),
            "geometry_pairs": {k: v["pairs"] for k, v in geo.items()},
            "agreement": {k: v["agreement"] for k, v in geo.items()},
            "clean_ok": report.ok and not report.issues,
            "one_bad_frame": {"frames": n, "validator_s": round(bad_s, 3),
                              "frames_per_s": round(n / bad_s, 1),
                              "caught": [i.code for i in bad_report.errors]},
            "repeat": repeat,
            "opencv_threads": cv2.getNumThreads(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 frames per scene instead of 40")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; the best is kept")
    ap.add_argument("--workdir", default=None, help="where to build the temporary dataset")
    args = ap.parse_args()
    print(json.dumps(run(args.quick, args.repeat, args.workdir), indent=2))


if __name__ == "__main__":
    main()
