"""Fake raw Virtual KITTI 2 (v2.0.3) rendered from ``wai.synthetic.world`` in the real layout (source_formats.md §5).

Layout written (one ``<SceneXX>/<variation>`` per entry of ``scenes``)::

    <root>/Scene01/clone/
        extrinsic.txt   intrinsic.txt   colors.txt                  # textgt: one header line, single spaces
        frames/rgb/Camera_{0,1}/rgb_00000.jpg                       # 8-bit RGB JPEG
        frames/depth/Camera_{0,1}/depth_00000.png                   # uint16 PNG, centimetres, 65535 = sky
        frames/classSegmentation/Camera_{0,1}/classgt_00000.png     # RGB colours of colors.txt
        frames/instanceSegmentation/Camera_{0,1}/instancegt_00000.png  # 8-bit ids (not read by the converter)

Geometry: a stereo rig (Camera_1 is ``BASELINE`` metres to the right of Camera_0) drives down the street.
The VKITTI2 world is expressed with ``VKITTI_FROM_STREET`` (y down, z along the street's +y, an offset),
a proper rigid transform, so a converter that mixes up world frames or pose directions fails the tests.
``extrinsic.txt`` holds world->camera matrices (OpenCV camera axes), as the real files do.
Images are 310x94: the real 1242x375 scaled by 1/4 with intrinsics scaled consistently
(``fx = 725.0087 / 4``, principal point at the image centre with pixel centres at integer coordinates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import cv2, imwrite_bytes_safe
from wai.format.conventions import invert_pose, make_pose
from wai.synthetic.raw_synthetic import FakeInfo
from wai.synthetic.trajectories import street_drive
from wai.synthetic.world import CLASSES, World

INTRINSIC_HEADER = "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"
EXTRINSIC_HEADER = "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"
#: The real VKITTI2 colors.txt (class colour table of classSegmentation): 15 rows after the header, the last
#: ``Undefined 0 0 0``.
COLORS_TXT = """Category r g b
Terrain 210 0 200
Sky 90 200 255
Tree 0 199 0
Vegetation 90 240 0
Building 140 140 140
Road 100 60 100
GuardRail 250 100 255
TrafficSign 255 255 0
TrafficLight 200 200 0
Pole 255 130 0
Misc 80 80 80
Truck 160 60 60
Car 255 127 80
Van 0 139 139
Undefined 0 0 0
"""
#: World class -> VKITTI2 category used to paint classgt (the street world has no sidewalk class in VKITTI2).
VKITTI_CATEGORY = {"sky": "Sky", "road": "Road", "sidewalk": "Misc", "terrain": "Terrain", "building": "Building",
                   "vegetation": "Tree", "car": "Car", "pole": "Pole"}
#: Stereo baseline (metres), Camera_1 to the right of Camera_0.
BASELINE = 0.532725
#: The fake VKITTI2 world from the street world (z up): x_v = x, y_v = -z (down), z_v = y, then an offset.
VKITTI_FROM_STREET = make_pose(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
                               np.array([40.0, 1.5, -12.0]))
SCENES: tuple[tuple[str, str], ...] = (("Scene01", "clone"), ("Scene02", "15-deg-left"))


def fake_camera(w: int = 310, h: int = 94) -> Camera:
    """Intrinsics of the fake: VKITTI2's 1242x375 camera (f 725.0087, centred) scaled to ``w x h``."""
    return Camera.pinhole(1242, 375, 725.0087, 725.0087, 620.5, 187.0).resized(w, h)


def rig_poses(scene_index: int, n_frames: int, seed: int = 0) -> dict[tuple[int, int], np.ndarray]:
    """Ground-truth OpenCV camera-to-world poses in the fake VKITTI2 world, keyed by (frame, camera id)."""
    out = {}
    right = make_pose(np.eye(3), np.array([BASELINE, 0.0, 0.0]))
    for i, c2w_street in enumerate(street_drive(n_frames, start_x=-6.0 + 4.0 * scene_index, seed=seed + scene_index)):
        out[(i, 0)] = VKITTI_FROM_STREET @ c2w_street
        out[(i, 1)] = VKITTI_FROM_STREET @ c2w_street @ right
    return out


def _fmt(v: float) -> str:
    s = f"{v:.7g}"
    return "0" if s == "-0" else s


def _colors() -> dict[str, tuple[int, int, int]]:
    rows = [line.split() for line in COLORS_TXT.splitlines()[1:]]
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def make_fake(root: str | Path, n_frames: int = 3, w: int = 310, h: int = 94, seed: int = 0,
              scenes: tuple[tuple[str, str], ...] = SCENES) -> FakeInfo:
    """Write ``len(scenes)`` scene/variation folders of ``n_frames`` stereo frames each."""
    root = Path(root)
    world = World.street(seed)
    cam = fake_camera(w, h)
    colors = _colors()
    # class id -> RGB colour of its VKITTI2 category
    lut = np.zeros((max(CLASSES.values()) + 1, 3), dtype=np.uint8)
    for cls, cid in CLASSES.items():
        lut[cid] = colors[VKITTI_CATEGORY[cls]]
    street_from_vkitti = invert_pose(VKITTI_FROM_STREET)
    for s, (scene, variation) in enumerate(scenes):
        vd = root / scene / variation
        vd.mkdir(parents=True, exist_ok=True)
        intr = [INTRINSIC_HEADER]
        extr = [EXTRINSIC_HEADER]
        poses = rig_poses(s, n_frames, seed)
        for (frame, cid), c2w in sorted(poses.items()):
            r = world.render(cam, street_from_vkitti @ c2w)
            sub = f"Camera_{cid}"
            paths = {k: vd / "frames" / k / sub for k in ("rgb", "depth", "classSegmentation", "instanceSegmentation")}
            for p in paths.values():
                p.mkdir(parents=True, exist_ok=True)
            imwrite_bytes_safe(paths["rgb"] / f"rgb_{frame:05d}.jpg", r["rgb"][..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cm = np.clip(np.round(r["depth"].astype(np.float64) * 100.0), 1, 65534).astype(np.uint16)
            cm[~r["valid"]] = 65535  # sky is saturated
            imwrite_bytes_safe(paths["depth"] / f"depth_{frame:05d}.png", cm)
            imwrite_bytes_safe(paths["classSegmentation"] / f"classgt_{frame:05d}.png", lut[r["semantic"]][..., ::-1])
            imwrite_bytes_safe(paths["instanceSegmentation"] / f"instancegt_{frame:05d}.png",
                        np.where(r["semantic"] == CLASSES["car"], r["instance"] % 255, 0).astype(np.uint8))
            intr.append(" ".join([str(frame), str(cid)] + [_fmt(v) for v in (cam.fl_x, cam.fl_y, cam.cx, cam.cy)]))
            w2c = invert_pose(c2w)
            extr.append(" ".join([str(frame), str(cid)] + [_fmt(v) for v in w2c.ravel()]))
        (vd / "intrinsic.txt").write_text("\n".join(intr) + "\n")
        (vd / "extrinsic.txt").write_text("\n".join(extr) + "\n")
        (vd / "colors.txt").write_text(COLORS_TXT)
    return FakeInfo(root, len(scenes), len(scenes) * n_frames * 2)
