"""Fake raw data of the built-in ``synthetic`` source (the framework's reference source).

Layout (our own, deliberately simple; real sources have their own factories)::

    <root>/splits.txt                      "<scene> <split>" per line
    <root>/<scene>/cameras.txt             "# name w h fx fy cx cy c2w(12 values, row-major 3x4)" header,
                                           then one line per frame
    <root>/<scene>/rgb/<name>.png          8-bit RGB
    <root>/<scene>/depth/<name>.npy        float32 z-depth in metres, 0 = sky
    <root>/<scene>/semantic/<name>.png     8-bit class ids of ``wai.synthetic.world.CLASSES``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import imwrite_bytes_safe
from wai.synthetic.trajectories import street_drive
from wai.synthetic.world import World


@dataclass(frozen=True)
class FakeInfo:
    """What a fake-data factory wrote: the expected conversion result."""

    root: Path
    n_scenes: int
    n_frames: int  # frames expected in the converted output (after documented drops)
    options: dict | None = None  # converter options the conformance test should pass


def make_fake(root: str | Path, n_scenes: int = 2, n_frames: int = 3, w: int = 96, h: int = 72,
              seed: int = 0) -> FakeInfo:
    """Write ``n_scenes`` scenes of ``n_frames`` frames; the last scene is in split ``val``."""
    root = Path(root)
    world = World.street(seed)
    cam = Camera.pinhole(w, h, 0.9 * w, 0.9 * w, (w - 1) / 2, (h - 1) / 2)
    split_lines = []
    for s in range(n_scenes):
        name = f"scene_{s:03d}"
        sd = root / name
        for sub in ("rgb", "depth", "semantic"):
            (sd / sub).mkdir(parents=True, exist_ok=True)
        lines = ["# name w h fx fy cx cy c2w[3x4 row-major]"]
        for i, pose in enumerate(street_drive(n_frames, start_x=-6.0 + 3 * s, seed=seed + s)):
            fname = f"{i:06d}"
            r = world.render(cam, pose)
            imwrite_bytes_safe(sd / "rgb" / f"{fname}.png", r["rgb"][..., ::-1])
            np.save(sd / "depth" / f"{fname}.npy", r["depth"].astype(np.float32))
            imwrite_bytes_safe(sd / "semantic" / f"{fname}.png", r["semantic"])
            vals = " ".join(f"{v:.9g}" for v in pose[:3].ravel())
            lines.append(f"{fname} {w} {h} {cam.fl_x:.9g} {cam.fl_y:.9g} {cam.cx:.9g} {cam.cy:.9g} {vals}")
        (sd / "cameras.txt").write_text("\n".join(lines) + "\n")
        split_lines.append(f"{name} {'val' if s == n_scenes - 1 and n_scenes > 1 else 'train'}")
    (root / "splits.txt").write_text("\n".join(split_lines) + "\n")
    return FakeInfo(root, n_scenes, n_scenes * n_frames)
