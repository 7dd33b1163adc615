"""Fake OPV2V raw data in the real layout, rendered from the procedural ``World`` (see source_formats.md §1).

Layout written (``<root>/<split>/<scenario>/<cav>/``)::

    <root>/train/2021_01_01_00_00_00/data_protocol.yaml
    <root>/train/2021_01_01_00_00_00/1732/000069.yaml          yaml.safe_dump, sorted keys, block style
    <root>/train/2021_01_01_00_00_00/1732/000069.pcd           Open3D ASCII PCD (x y z rgb, %.10g, packed float rgb)
    <root>/train/2021_01_01_00_00_00/1732/000069_camera0.png   800x600 RGB, fov 100 (front, right, left, back)
    ... second CAV 2056 (the first folder, 1732, is the ego); frames 000069, 000071
    <root>/validate/2021_01_01_00_01_00/...                    second scenario

Everything is expressed as CARLA writes it: the synthetic world is right-handed z-up; CARLA's world is its
mirror ``y -> -y`` (left-handed, x forward, y right, z up). Poses are ``[x, y, z, roll, yaw, pitch]`` in
degrees rounded to float32 (``carla.Transform``), sensors are mounted as in OpenCDA (cameras front
(2.5, 0, 1.0), right (0, 0.3, 1.8, yaw 100), left (0, -0.3, 1.8, yaw -100), back (-2.0, 0, 1.5, yaw 180);
LiDAR (-0.5, 0, 1.9)), and the vehicles carry non-zero roll, pitch and yaw. The ground truth (right-handed
world, OpenCV camera-to-world) is derived independently of ``wai.format.conventions``' CARLA helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from wai.format.cameras import Camera
from wai.format.codecs import imwrite_bytes_safe
from wai.format.conventions import rot_x, rot_y, rot_z
from wai.synthetic.lidar import simulate_lidar
from wai.synthetic.raw_synthetic import FakeInfo
from wai.synthetic.world import World

W, H, FOV_DEG = 800, 600, 100.0
FOCAL = W / (2.0 * math.tan(math.radians(FOV_DEG) / 2.0))  # OpenCDA get_camera_intrinsic
AGENTS = ("1732", "2056")
TIMESTAMPS = ("000069", "000071")
#: OpenCDA mounts in CARLA's (left-handed) vehicle frame: x, y, z, yaw (degrees).
CAMERA_MOUNTS_CARLA = ((2.5, 0.0, 1.0, 0.0), (0.0, 0.3, 1.8, 100.0), (0.0, -0.3, 1.8, -100.0), (-2.0, 0.0, 1.5, 180.0))
LIDAR_MOUNT_CARLA = (-0.5, 0.0, 1.9)
#: Right-handed body axes (x fwd, y left, z up) -> OpenCV camera axes, as columns: x_cv = -y, y_cv = -z, z_cv = x.
BODY_TO_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rh_from_carla(pose: list[float] | np.ndarray) -> np.ndarray:
    """Right-handed body-to-world 4x4 of a CARLA pose list ``[x, y, z, roll, yaw, pitch]`` (degrees).

    Mirroring y turns CARLA's rotation ``Rz(yaw) Ry(-pitch) Rx(-roll)`` (left-handed coordinates) into
    ``Rz(-yaw) Ry(-pitch) Rx(roll)`` and the location into ``(x, -y, z)``.
    """
    x, y, z, roll, yaw, pitch = (float(v) for v in pose)
    T = np.eye(4)
    T[:3, :3] = rot_z(math.radians(-yaw)) @ rot_y(math.radians(-pitch)) @ rot_x(math.radians(roll))
    T[:3, 3] = (x, -y, z)
    return T


def carla_from_rh(T: np.ndarray) -> list[float]:
    """Inverse of ``rh_from_carla``, rounded to float32 as ``carla.Transform`` stores it."""
    R = T[:3, :3]
    yaw = -math.degrees(math.atan2(R[1, 0], R[0, 0]))
    pitch = -math.degrees(math.asin(max(-1.0, min(1.0, -R[2, 0]))))
    roll = math.degrees(math.atan2(R[2, 1], R[2, 2]))
    vals = (T[0, 3], -T[1, 3], T[2, 3], roll, yaw, pitch)
    return [float(np.float32(v)) for v in vals]


def _mount(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
    """Right-handed mount transform of an OpenCDA (CARLA-frame) mount."""
    return rh_from_carla([x, y, z, 0.0, yaw, 0.0])


def vehicle_pose(scene: int, agent: int, t: int) -> np.ndarray:
    """Right-handed vehicle-to-world pose (origin on the road, in the car-free strip of ``World.street``)."""
    if agent == 0:
        x, y, yaw, pitch, roll = -6.0 + 2.0 * scene + 1.2 * t, -1.3, 7.0 + 2.0 * t, 1.5, 2.0
    else:
        x, y, yaw, pitch, roll = 4.0 - 1.5 * scene - 0.9 * t, 1.4, 172.0, -2.0, -1.5
    T = np.eye(4)
    T[:3, :3] = rot_z(math.radians(yaw)) @ rot_y(math.radians(pitch)) @ rot_x(math.radians(roll))
    T[:3, 3] = (x, y, 0.03)
    return T


@dataclass(frozen=True)
class AgentTruth:
    """Ground truth of one agent at one tick (right-handed world, metres)."""

    vehicle: list[float]  # CARLA pose list of the vehicle (true_ego_pos)
    lidar: list[float]  # CARLA pose list of the LiDAR (lidar_pose)
    cords: list[list[float]]  # CARLA pose lists of the 4 cameras
    lidar_rh: np.ndarray  # right-handed LiDAR-to-world (x fwd, y left, z up)
    cam_c2w: list[np.ndarray]  # OpenCV camera-to-world of the 4 cameras
    pano_c2w: np.ndarray  # OpenCV-axes pose at the LiDAR origin (z forward, x right, y down)


def agent_truth(scene: int, agent: int, t: int) -> AgentTruth:
    """Poses of agent ``agent`` (0 = ego) at tick index ``t`` of scenario ``scene``."""
    veh = carla_from_rh(vehicle_pose(scene, agent, t))
    T_veh = rh_from_carla(veh)
    lidar = carla_from_rh(T_veh @ _mount(*LIDAR_MOUNT_CARLA))
    cords = [carla_from_rh(T_veh @ _mount(*m)) for m in CAMERA_MOUNTS_CARLA]
    lidar_rh = rh_from_carla(lidar)

    def cv(T: np.ndarray) -> np.ndarray:
        out = T.copy()
        out[:3, :3] = T[:3, :3] @ BODY_TO_OPENCV
        return out

    return AgentTruth(veh, lidar, cords, lidar_rh, [cv(rh_from_carla(c)) for c in cords], cv(lidar_rh))


def scenario_name(scene: int) -> str:
    """``2021_01_01_00_0<scene>_00``."""
    return f"2021_01_01_00_{scene:02d}_00"


def _pcd_text(points: np.ndarray, intensity: np.ndarray) -> str:
    """ASCII PCD exactly as Open3D (<= 0.15, OPV2V's era) writes a cloud with colours ``[intensity, 0, 0]``."""
    n = len(points)
    header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\n"
              f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA ascii\n")
    # ConvertRGBToFloat: bytes [B, G, R, 0] with R = (int)(r * 255) reinterpreted as a float (a denormal).
    r = np.clip((intensity.astype(np.float64) * 255.0).astype(np.int64), 0, 255).astype(np.uint32)
    rgb = (r << np.uint32(16)).view(np.float32).astype(np.float64)
    # Open3D holds doubles of CARLA's float32 data; + 0.0 avoids printing "-0".
    xyz = points.astype(np.float32).astype(np.float64) + 0.0
    rows = ["%.10g %.10g %.10g %.10g" % (a, b, c, d) for (a, b, c), d in zip(xyz.tolist(), rgb.tolist())]  # noqa: UP031
    return header + "".join(row + "\n" for row in rows)


def focal_of(w: int) -> float:
    """OpenCDA's focal length (pixels) of a ``w`` pixels wide camera with fov 100 degrees."""
    return w / (2.0 * math.tan(math.radians(FOV_DEG) / 2.0))


def _frame_yaml(tr: AgentTruth, other: AgentTruth, other_id: int, speed: float, size: tuple[int, int] = (W, H),
                compat_keys: bool = True) -> dict:
    S = np.diag([1.0, -1.0, 1.0, 1.0])
    w, h = size
    f = focal_of(w)
    d: dict = {}
    for i, c in enumerate(tr.cords):
        # writer: lidar2camera = inv(camera2world) @ lidar2world, in CARLA's left-handed frames
        cam_rh = rh_from_carla(c)
        ext = S @ np.linalg.inv(cam_rh) @ tr.lidar_rh @ S
        K = [[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]]  # a fresh list: no YAML anchors
        d[f"camera{i}"] = {"cords": list(c), "extrinsic": ext.tolist(), "intrinsic": K}
    d["ego_speed"] = speed
    d["lidar_pose"] = list(tr.lidar)
    d["plan_trajectory"] = [[tr.vehicle[0] + 2.0 * k, tr.vehicle[1], speed] for k in range(1, 4)]
    d["predicted_ego_pos"] = [v + (0.01 if k < 2 else 0.0) for k, v in enumerate(tr.vehicle)]
    d["true_ego_pos"] = list(tr.vehicle)
    d["vehicles"] = {other_id: {"angle": [other.vehicle[3], other.vehicle[4], other.vehicle[5]],
                                "center": [0.0, 0.0, 0.75], "extent": [2.25, 0.95, 0.75],
                                "location": list(other.vehicle[:3]), "speed": 18.5}}
    if compat_keys:  # keys of OPV2V-compatible writers (V2XSet, Adver-City): never read by the converter
        d["RSU"] = False
        d["vehicles"][other_id].update({"bp_id": "vehicle.lincoln.mkz2017", "class": "car", "color": "0,0,255"})
        d["walkers"] = {9001: {"angle": [0.0, 45.0, 0.0], "bp_id": "walker.pedestrian.0001", "class": "pedestrian",
                               "center": [0.0, 0.0, 0.93], "dist": 14.2, "extent": [0.19, 0.19, 0.93],
                               "location": [tr.vehicle[0] + 6.0, tr.vehicle[1] + 3.0, 0.9],
                               "relative_angle": 31.5, "speed": 4.1}}
    return d


def make_fake(root: str | Path, n_scenes: int = 2, n_agents: int = 2, n_timestamps: int = 2, seed: int = 0,
              lidar_channels: int = 32, lidar_h_res_deg: float = 0.4, depth_root: str | Path | None = None,
              cam_size: tuple[int, int] = (W, H), compat_keys: bool = True) -> FakeInfo:
    """Write ``n_scenes`` scenarios (train, then validate) of ``n_agents`` CAVs x ``n_timestamps`` ticks.

    With ``depth_root``, per-camera planar depth ``<ts>_depth<i>.npy`` (float32 metres, 0 = sky) is written
    there in the mirrored layout ``<depth_root>/<split>/<scenario>/<cav>/``. ``cam_size`` is the camera
    image size (OPV2V: 800x600; OPV2V-compatible datasets use others, e.g. 1920x1080), always fov 100 with
    OpenCDA's intrinsic ``[[f, 0, W/2], [0, f, H/2], [0, 0, 1]]``. ``compat_keys`` adds the YAML keys of
    OPV2V-compatible writers (``RSU: false``, ``walkers``, vehicles' ``bp_id``/``class``/string ``color``).
    """
    root = Path(root)
    world = World.street(seed)
    cw, ch = cam_size
    focal = focal_of(cw)
    cam = Camera.pinhole(cw, ch, focal, focal, (cw - 1) / 2.0, (ch - 1) / 2.0)  # CARLA: symmetric frustum
    for s in range(n_scenes):
        split = "train" if s == 0 or n_scenes == 1 else "validate"
        sd = root / split / scenario_name(s)
        sd.mkdir(parents=True, exist_ok=True)
        protocol = {"world": {"sync_mode": True, "fixed_delta_seconds": 0.05}}
        (sd / "data_protocol.yaml").write_text(yaml.safe_dump(protocol, default_flow_style=False))
        for t in range(n_timestamps):
            truths = [agent_truth(s, a, t) for a in range(n_agents)]
            ts = TIMESTAMPS[t] if t < len(TIMESTAMPS) else f"{69 + 2 * t:06d}"
            for a in range(n_agents):
                aid = AGENTS[a] if a < len(AGENTS) else str(3000 + a)
                ad = sd / aid
                ad.mkdir(exist_ok=True)
                tr = truths[a]
                o = (a + 1) % n_agents
                oid = int(AGENTS[o]) if o < len(AGENTS) else 3000 + o
                doc = _frame_yaml(tr, truths[o], oid, 18.13 + a, (cw, ch), compat_keys)
                (ad / f"{ts}.yaml").write_text(yaml.safe_dump(doc, default_flow_style=False))
                pts = simulate_lidar(world, tr.lidar_rh, n_channels=lidar_channels, v_fov_deg=(-25.0, 2.0),
                                     h_res_deg=lidar_h_res_deg)
                xyz = pts[:, :3] * np.array([1.0, -1.0, 1.0], np.float32)  # right-handed -> CARLA LiDAR frame
                (ad / f"{ts}.pcd").write_text(_pcd_text(xyz, pts[:, 3]))
                for i, c2w in enumerate(tr.cam_c2w):
                    r = world.render(cam, c2w)
                    imwrite_bytes_safe(ad / f"{ts}_camera{i}.png", r["rgb"][..., ::-1])
                    if depth_root is not None:
                        dd = Path(depth_root) / split / sd.name / aid
                        dd.mkdir(parents=True, exist_ok=True)
                        np.save(dd / f"{ts}_depth{i}.npy", r["depth"].astype(np.float32))
    return FakeInfo(root, n_scenes, n_scenes * n_agents * n_timestamps, options={"width": 512, "height": 144})
