"""Fake raw KITTI-360 data in the exact real layout, rendered from ``World.street``.

One sequence ``2013_05_28_drive_0000_sync``, frames ``0000000250`` ... (``n_frames``), rectified
perspective cameras 00/01 at the real size 1408x376 with the published calibration numbers::

    <root>/calibration/perspective.txt          P_rect/R_rect/S_rect 00 and 01 (+ S/K/D/R/T, calib_time),
                                                single spaces, 6 decimals
    <root>/calibration/calib_cam_to_pose.txt    image_00..image_03: 12 numbers, 10 decimals
    <root>/calibration/calib_cam_to_velo.txt    one line of 12 numbers, no key
    <root>/data_2d_raw/<seq>/image_0{0,1}/data_rect/<frame:010d>.png  8-bit RGB (+ timestamps.txt)
    <root>/data_2d_semantics/train/<seq>/image_0{0,1}/semantic/<frame:010d>.png  8-bit KITTI-360 ids
    <root>/data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt
    <root>/data_3d_raw/<seq>/velodyne_points/data/<frame:010d>.bin     float32 x 4 (+ timestamps.txt)
    <root>/data_poses/<seq>/poses.txt           frame + 12 (GPS/IMU -> world)
    <root>/data_poses/<seq>/cam0_to_world.txt   frame + 16 (rectified camera 00 -> world)

Quirks reproduced: one frame (``no_pose_index``) has no line in either pose file; the first frame has
no semantic PNG; the last frames are listed in the val split file; ``cam0_to_world.txt`` lines are written
like the real ones (``700 -0.940061 -2.932256e-02 0.339745 -1.402337e+03 ... 0.000000 0 0.000000 1 ``):
fixed and scientific notation mixed, the last row partly as integers, a trailing space. The world
is z-up; the car drives along +x with a level Velodyne at ``VELO_HEIGHT``; camera 00 follows from the real calibration
(about 1.6 m high, pitched ~5 degrees down). Calibration numbers are written rounded and the ground
truth is computed from the rounded values, so it is exactly what the files say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from wai.format.cameras import Camera
from wai.format.codecs import imwrite_bytes_safe
from wai.format.conventions import make_pose, orthonormalize, rot_z
from wai.synthetic.lidar import simulate_lidar
from wai.synthetic.raw_synthetic import FakeInfo
from wai.synthetic.world import CLASSES, World

SEQ = "2013_05_28_drive_0000_sync"
FIRST_FRAME = 250
W, H = 1408, 376
VELO_HEIGHT = 1.80
#: World class -> KITTI-360 label id (labels.py).
KITTI_ID = {"sky": 23, "road": 7, "sidewalk": 8, "terrain": 22, "building": 11, "vegetation": 21, "car": 26,
            "pole": 17}
_LUT = np.zeros(256, dtype=np.uint8)
for _name, _cid in CLASSES.items():
    _LUT[_cid] = KITTI_ID[_name]

# Published calibration numbers (source_formats.md section 2.2).
P_RECT = {
    "00": [552.554261, 0.0, 682.049453, 0.0, 0.0, 552.554261, 238.769549, 0.0, 0.0, 0.0, 1.0, 0.0],
    "01": [552.554261, 0.0, 682.049453, -328.318735, 0.0, 552.554261, 238.769549, 0.0, 0.0, 0.0, 1.0, 0.0],
}
R_RECT = {
    "00": [0.999974, -0.007141, -0.000089, 0.007141, 0.999969, -0.003247, 0.000112, 0.003247, 0.999995],
    "01": [0.999778, -0.012115, 0.017222, 0.012059, 0.999922, 0.003351, -0.017261, -0.003143, 0.999846],
}
CAM_TO_POSE = {
    "image_00": [0.0371783278, -0.0986182135, 0.9944306009, 1.5752681039, 0.9992675562, -0.0053553387,
                 -0.0378902567, 0.0043914093, 0.0090621821, 0.9951109327, 0.0983468786, -0.6500000000],
    "image_02": [0.9995185086, 0.0041276589, -0.0307524527, 0.7264036936, -0.0307926666, 0.0100608424,
                 -0.9994751579, -0.1499658517, -0.0038160970, 0.9999408692, 0.0101830998, -1.0686400091],
    "image_03": [-0.9996821702, 0.0005703407, -0.0252038325, 0.7016842127, -0.0252033830, 0.0007820814,
                 0.9996820384, 0.7463650950, 0.0005898709, 0.9999995315, -0.0007674583, -1.0751978255],
}
CAM_TO_VELO = [0.04307104361, -0.08829286498, 0.995162929, 0.8043914418, -0.999004371, 0.007784614041,
               0.04392796942, 0.2993489574, -0.01162548558, -0.9960641394, -0.08786966659, -0.1770225824]


def _fmt(vals: np.ndarray | list[float], decimals: int) -> str:
    """Single-space fixed-point numbers (no trailing whitespace), as the devkit's ``split(' ')`` needs."""
    return " ".join(f"{float(v):.{decimals}f}" for v in np.asarray(vals, dtype=np.float64).ravel())


def _rounded(vals: np.ndarray | list[float], decimals: int) -> np.ndarray:
    """The values as a reader gets them back from ``_fmt``."""
    return np.array([float(t) for t in _fmt(vals, decimals).split()], dtype=np.float64)


def _real_pose_line(frame: int, T: np.ndarray) -> str:
    """A ``cam0_to_world.txt`` line as the real files write it: ``%.6f`` for values in [0.1, 1000),
    ``%.6e`` otherwise (``-2.932256e-02``, ``-1.402337e+03``), the last row ``0.000000 0 0.000000 1`` and a
    trailing space."""
    def tok(v: float) -> str:
        return f"{v:.6f}" if 0.1 <= abs(v) < 1000.0 else f"{v:.6e}"
    head = " ".join(tok(float(v)) for v in np.asarray(T, dtype=np.float64)[:3, :4].ravel())
    return f"{frame} {head} 0.000000 0 0.000000 1 \n"


def _rounded_real(T: np.ndarray) -> np.ndarray:
    """The 3x4 of ``T`` as a reader gets it back from ``_real_pose_line``."""
    toks = _real_pose_line(0, T).split()[1:13]
    return np.array([float(t) for t in toks], dtype=np.float64)


def _p_rect(cam: str, scale: float) -> list[float]:
    """``P_rect_<cam>`` of the published calibration for images scaled by ``scale`` (K and tx scale)."""
    P = np.reshape(P_RECT[cam], (3, 4)).copy()
    P[:2] *= scale
    return P.ravel().tolist()


def image_size(scale: float = 1.0) -> tuple[int, int]:
    """``(W, H)`` of the fake's rectified images for ``scale`` (1408x376 at 1)."""
    return int(round(W * scale)), int(round(H * scale))


def _h(vals: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :4] = np.asarray(vals, dtype=np.float64).reshape(3, 4)
    return T


@dataclass(frozen=True)
class Kitti360Truth:
    """Ground truth of the fake sequence (world frame z-up, metres, OpenCV camera axes)."""

    world: World
    frames: list[int]
    posed: list[int]  # frames with a pose line
    camera: Camera  # both rectified cameras share K and size
    cam_to_world: dict[str, dict[int, np.ndarray]]  # "00"/"01" -> frame -> rectified camera -> world
    velo_to_world: dict[int, np.ndarray]
    rect0_from_velo: np.ndarray
    imu_to_world: dict[int, np.ndarray]
    baseline: float


@lru_cache(maxsize=4)
def fake_truth(n_frames: int = 8, no_pose_index: int = 3, step: float = 1.0, seed: int = 0,
               scale: float = 1.0) -> Kitti360Truth:
    """The geometry ``make_fake`` writes (deterministic; cached per parameter set)."""
    world = World.street(seed)
    rng = np.random.default_rng(seed + 360)
    # Round R_rect exactly as written, and use the written values everywhere below.
    R0 = np.eye(4)
    R0[:3, :3] = _rounded(orthonormalize(np.reshape(R_RECT["00"], (3, 3))), 6).reshape(3, 3)
    c2v = _h(np.array(CAM_TO_VELO))  # written with repr(): exact
    c2p = _h(_rounded(CAM_TO_POSE["image_00"], 10))
    rect0_from_velo = R0 @ np.linalg.inv(c2v)
    P01 = _rounded(_p_rect("01", scale), 6)
    baseline = -P01[3] / P01[0]
    K = _rounded(_p_rect("00", scale), 6).reshape(3, 4)[:, :3]
    camera = Camera.from_K(K, *image_size(scale))
    frames = [FIRST_FRAME + i for i in range(n_frames)]
    posed = [f for i, f in enumerate(frames) if i != no_pose_index]
    cams: dict[str, dict[int, np.ndarray]] = {"00": {}, "01": {}}
    velo: dict[int, np.ndarray] = {}
    imu: dict[int, np.ndarray] = {}
    shift = np.eye(4)
    shift[0, 3] = baseline
    for i, f in enumerate(frames):
        yaw = np.deg2rad(rng.uniform(-3.0, 3.0))
        v2w = make_pose(rot_z(yaw), [-4.0 + i * step, -1.5 + rng.uniform(-0.2, 0.2), VELO_HEIGHT])
        c2w = v2w @ np.linalg.inv(rect0_from_velo)
        c2w[:3, :3] = orthonormalize(c2w[:3, :3])
        # The truth is what cam0_to_world.txt says (real-style 7 significant digits); the scan is simulated from it.
        c2w = _h(_rounded_real(c2w))
        cams["00"][f] = c2w
        cams["01"][f] = c2w @ shift
        velo[f] = c2w @ rect0_from_velo
        imu[f] = c2w @ R0 @ np.linalg.inv(c2p)
    return Kitti360Truth(world, frames, posed, camera, cams, velo, rect0_from_velo, imu, baseline)


def _write_calibration(root: Path, truth: Kitti360Truth, scale: float = 1.0) -> None:
    d = root / "calibration"
    d.mkdir(parents=True, exist_ok=True)
    R = {c: orthonormalize(np.reshape(R_RECT[c], (3, 3))) for c in R_RECT}
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for c in ("00", "01"):
        K = np.reshape(P_RECT[c], (3, 4))[:, :3]
        lines += [
            f"S_{c}: 1.392000e+03 5.120000e+02",
            f"K_{c}: {_fmt(K, 6)}",
            f"D_{c}: {_fmt([-0.3, 0.1, 0.0, 0.0, 0.0], 6)}",
            f"R_{c}: {_fmt(np.eye(3), 6)}",
            f"T_{c}: {_fmt([0.0, 0.0, 0.0], 6)}",
            f"S_rect_{c}: {float(truth.camera.w):.6e} {float(truth.camera.h):.6e}",
            f"R_rect_{c}: {_fmt(R[c], 6)}",
            f"P_rect_{c}: {_fmt(_p_rect(c, scale), 6)}",
        ]
    (d / "perspective.txt").write_text("\n".join(lines) + "\n")
    # image_01 is made consistent with the rectified baseline: unrect cam1 -> pose.
    c2p0 = _h(_rounded(CAM_TO_POSE["image_00"], 10))
    R0, R1 = np.eye(4), np.eye(4)
    R0[:3, :3] = _rounded(R["00"], 6).reshape(3, 3)
    R1[:3, :3] = _rounded(R["01"], 6).reshape(3, 3)
    shift = np.eye(4)
    shift[0, 3] = truth.baseline
    c2p1 = c2p0 @ np.linalg.inv(R0) @ shift @ R1
    rows = {"image_00": CAM_TO_POSE["image_00"], "image_01": c2p1[:3, :4].ravel(),
            "image_02": CAM_TO_POSE["image_02"], "image_03": CAM_TO_POSE["image_03"]}
    (d / "calib_cam_to_pose.txt").write_text("".join(f"{k}: {_fmt(v, 10)}\n" for k, v in rows.items()))
    # The published line mixes precisions (0.04307104361 0.995162929 ...): written as published.
    (d / "calib_cam_to_velo.txt").write_text(" ".join(repr(v) for v in CAM_TO_VELO) + "\n")


def _timestamps(n: int) -> str:
    return "".join(f"2013-05-28 08:46:{2 + i // 10:02d}.{(i % 10) * 100_000_000 + 901_000:09d}\n" for i in range(n))


def _set_building_ratio(labels: np.ndarray, ratio: float) -> np.ndarray:
    """``labels`` with exactly ``round(ratio * size)`` building pixels: surplus building pixels become
    vegetation, missing ones are taken from the other pixels, both in raster order."""
    out = labels.copy()
    flat = out.reshape(-1)
    target = int(round(ratio * flat.size))
    building = np.flatnonzero(flat == KITTI_ID["building"])
    if len(building) > target:
        flat[building[target:]] = KITTI_ID["vegetation"]
    else:
        flat[np.flatnonzero(flat != KITTI_ID["building"])[: target - len(building)]] = KITTI_ID["building"]
    return out


def make_fake(root: str | Path, n_frames: int = 8, no_pose_index: int = 3, n_val: int = 3, seed: int = 0,
              lidar_channels: int = 64, lidar_h_res_deg: float = 0.2,
              building_ratios: Sequence[float | None] | None = None, scale: float = 1.0) -> FakeInfo:
    """Write the fake sequence; ``FakeInfo.options`` asks for both cameras and 4 frames per scene.

    Expected output: ``n_frames - 1`` posed frames x 2 cameras, in 2 scenes (train frames, then the
    last ``n_val`` frames in split val).

    ``building_ratios`` (one value or None per frame; default: none) edits the semantic maps of both
    cameras so the building pixel fraction of that frame is exactly ``round(ratio * W * H) / (W * H)``,
    e.g. to put frames into every ``--sample`` bucket (the rendered street is building-rich everywhere).
    The edited label maps no longer match the images; None keeps the rendered labels.

    ``scale`` shrinks the images (and ``S_rect``/``P_rect`` with them) for fast tests, e.g. 0.25 -> 352x94.
    """
    root = Path(root)
    if building_ratios is not None and (len(building_ratios) != n_frames or any(
            r is not None and not 0.0 <= r <= 1.0 for r in building_ratios)):
        raise ValueError(f"building_ratios: expected {n_frames} values in [0, 1] or None, got {building_ratios!r}")
    truth = fake_truth(n_frames, no_pose_index, seed=seed, scale=scale)
    _write_calibration(root, truth, scale)
    raw = root / "data_2d_raw" / SEQ
    sem = root / "data_2d_semantics" / "train" / SEQ
    velo_dir = root / "data_3d_raw" / SEQ / "velodyne_points"
    poses_dir = root / "data_poses" / SEQ
    for d in (velo_dir / "data", poses_dir):
        d.mkdir(parents=True, exist_ok=True)
    split_rows: dict[str, list[str]] = {"train": [], "val": []}
    for cam in ("00", "01"):
        (raw / f"image_{cam}" / "data_rect").mkdir(parents=True, exist_ok=True)
        (sem / f"image_{cam}" / "semantic").mkdir(parents=True, exist_ok=True)
        (raw / f"image_{cam}" / "timestamps.txt").write_text(_timestamps(n_frames))
    (velo_dir / "timestamps.txt").write_text(_timestamps(n_frames))
    for i, f in enumerate(truth.frames):
        name = f"{f:010d}"
        for cam in ("00", "01"):
            r = truth.world.render(truth.camera, truth.cam_to_world[cam][f])
            imwrite_bytes_safe(raw / f"image_{cam}" / "data_rect" / f"{name}.png", r["rgb"][..., ::-1])
            if i > 0:  # the first frame has no semantic label map
                labels = _LUT[r["semantic"]]
                if building_ratios is not None and building_ratios[i] is not None:
                    labels = _set_building_ratio(labels, float(building_ratios[i]))
                imwrite_bytes_safe(sem / f"image_{cam}" / "semantic" / f"{name}.png", labels)
        scan = simulate_lidar(truth.world, truth.velo_to_world[f], n_channels=lidar_channels,
                              h_res_deg=lidar_h_res_deg, max_range=120.0)
        scan.astype("<f4").tofile(velo_dir / "data" / f"{name}.bin")
        if i > 0 and f in truth.posed:
            split = "val" if i >= n_frames - n_val else "train"
            split_rows[split].append(f"data_2d_raw/{SEQ}/image_00/data_rect/{name}.png "
                                     f"data_2d_semantics/train/{SEQ}/image_00/semantic/{name}.png")
    for split, rows in split_rows.items():
        (root / "data_2d_semantics" / "train" / f"2013_05_28_drive_{split}_frames.txt").write_text(
            "".join(r + "\n" for r in rows))
    (poses_dir / "cam0_to_world.txt").write_text("".join(
        _real_pose_line(f, truth.cam_to_world["00"][f]) for f in truth.posed))
    (poses_dir / "poses.txt").write_text("".join(
        f"{f} {_fmt(truth.imu_to_world[f][:3, :4], 9)}\n" for f in truth.posed))
    n_out = len(truth.posed) * 2
    return FakeInfo(root, 2, n_out, {"cameras": "00,01", "frames_per_scene": 4})
