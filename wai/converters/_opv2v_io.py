"""OPV2V raw-file readers: directory listing, per-frame YAML, Open3D ``.pcd`` LiDAR, per-camera depth.

Only parsing lives here (no geometry beyond building 4x4 matrices from the YAML lists); see
``wai.converters.opv2v`` for the layout, the conventions and the transform chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wai.errors import SourceLayoutError, import_optional, layout_error, require_file

N_CAMERAS = 4
#: Camera order of OPV2V: camera0 front, camera1 right(-rear), camera2 left(-rear), camera3 back.
CAMERA_NAMES = ("front", "right", "left", "back")
#: Raw split folder -> output split name (WAI lists use train/val/test).
SPLITS = {"train": "train", "validate": "val", "test": "test", "test_culvercity": "test_culvercity"}
_FRAME_RE = re.compile(r"^(\d{6})\.yaml$")


# --- YAML ----------------------------------------------------------------------------------------------


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml parses ~10x faster where built in
    """``SafeLoader`` that also reads ``1e-5``-style floats (YAML 1.1 requires a dot; OpenCOOD adds the same)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file with the safe loader (plus ``1e-5`` floats); errors name the file and line."""
    p = require_file(path, "OPV2V per-frame YAML")
    try:
        data = yaml.load(p.read_text(), Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise layout_error(p, f"not valid YAML: {e}", line=None if line is None else line + 1) from e
    if not isinstance(data, dict):
        raise layout_error(p, f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def _floats(path: Path, value: Any, shape: tuple[int, ...], key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise layout_error(path, f"expected numbers of shape {shape}: {e}", key=key) from e
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise layout_error(path, f"expected finite numbers of shape {shape}, got {np.shape(value)}", key=key)
    return arr


@dataclass(frozen=True)
class CameraMeta:
    """One ``camera{i}`` entry: CARLA pose list, LiDAR->camera extrinsic (UE4 axes), 3x3 intrinsic."""

    cords: np.ndarray  # [x, y, z, roll, yaw, pitch], metres / degrees, CARLA left-handed world
    extrinsic: np.ndarray  # 4x4 LiDAR -> camera, UE4 axes
    intrinsic: np.ndarray  # 3x3, OpenCDA convention (cx = W/2, cy = H/2)


@dataclass(frozen=True)
class FrameMeta:
    """The parts of one per-frame YAML the converter uses."""

    path: Path
    lidar_pose: np.ndarray  # [x, y, z, roll, yaw, pitch]
    true_ego_pos: np.ndarray | None
    cameras: tuple[CameraMeta, ...]
    ego_speed: float | None


def parse_frame_yaml(path: str | Path) -> FrameMeta:
    """Read ``<ts>.yaml``; a missing key raises ``SourceLayoutError`` naming the file and the key."""
    p = Path(path)
    d = load_yaml(p)
    if "lidar_pose" not in d:
        raise layout_error(p, "missing key; every OPV2V frame YAML has the LiDAR pose [x, y, z, roll, yaw, pitch]",
                           key="lidar_pose")
    lidar = _floats(p, d["lidar_pose"], (6,), "lidar_pose")
    ego = _floats(p, d["true_ego_pos"], (6,), "true_ego_pos") if d.get("true_ego_pos") is not None else None
    cams = []
    for i in range(N_CAMERAS):
        key = f"camera{i}"
        c = d.get(key)
        if not isinstance(c, dict):
            raise layout_error(p, f"missing or not a mapping; expected {key} with cords, extrinsic, intrinsic",
                               key=key)
        for sub in ("cords", "extrinsic", "intrinsic"):
            if sub not in c:
                raise layout_error(p, "missing key", key=f"{key}.{sub}")
        K = _floats(p, c["intrinsic"], (3, 3), f"{key}.intrinsic")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise layout_error(p, f"focal lengths must be positive, got {K[0, 0]}, {K[1, 1]}", key=f"{key}.intrinsic")
        cams.append(CameraMeta(_floats(p, c["cords"], (6,), f"{key}.cords"),
                               _floats(p, c["extrinsic"], (4, 4), f"{key}.extrinsic"), K))
    speed = d.get("ego_speed")
    return FrameMeta(p, lidar, ego, tuple(cams), float(speed) if isinstance(speed, (int, float)) else None)


# --- listing -------------------------------------------------------------------------------------------


def is_agent_dir(p: Path) -> bool:
    """A CAV/RSU folder: an integer name (negative = road-side unit)."""
    return p.is_dir() and re.fullmatch(r"-?\d+", p.name) is not None


def is_scenario_dir(p: Path) -> bool:
    """A scenario folder holds at least one agent folder."""
    return p.is_dir() and any(is_agent_dir(c) for c in p.iterdir())


def list_agents(scenario: Path) -> list[str]:
    """Agent folders in OpenCOOD order: sorted, a leading RSU (negative id) moved to the end; first = ego."""
    names = sorted(c.name for c in scenario.iterdir() if is_agent_dir(c))
    if names and int(names[0]) < 0:
        names = names[1:] + names[:1]
    return names


def list_timestamps(agent_dir: Path) -> list[str]:
    """6-digit frame ids of the ``<ts>.yaml`` files (names containing ``additional`` are skipped)."""
    return sorted(m.group(1) for f in agent_dir.iterdir() if (m := _FRAME_RE.match(f.name)))


def camera_image_path(agent_dir: Path, ts: str, i: int) -> Path:
    """``<ts>_camera<i>.png``."""
    return agent_dir / f"{ts}_camera{i}.png"


# --- LiDAR ---------------------------------------------------------------------------------------------


def _pcd_header(path: Path) -> dict[str, str]:
    """The header of a PCD file (keys upper-case), checked for the fields OPV2V writes and for a complete
    data section (Open3D fills a truncated one with garbage instead of failing)."""
    header: dict[str, str] = {}
    try:
        data = path.read_bytes()
    except OSError as e:
        raise layout_error(path, f"cannot read: {e}") from e
    pos = 0
    for _ in range(20):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        line = data[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        header[key.upper()] = value.strip()
        if key.upper() == "DATA":
            break
    if "DATA" not in header or "FIELDS" not in header or "POINTS" not in header:
        raise layout_error(path, "not a PCD file: expected a header with FIELDS, POINTS and DATA lines "
                                 "(as written by open3d.io.write_point_cloud)")
    fields = header["FIELDS"].split()
    if fields[:3] != ["x", "y", "z"]:
        raise layout_error(path, f"PCD FIELDS must start with 'x y z', got {header['FIELDS']!r}", key="FIELDS")
    if not header["POINTS"].isdigit():
        raise layout_error(path, f"PCD POINTS must be an integer, got {header['POINTS']!r}", key="POINTS")
    n = int(header["POINTS"])
    kind = header["DATA"].lower()
    if kind == "ascii":
        body = data[pos:].strip()  # one point per line; counting newlines beats splitting 100k+ rows
        rows = body.count(b"\n") + 1 if body else 0
        if rows != n:
            raise layout_error(path, f"header says POINTS {n} but the ascii data section has {rows} rows "
                                     "(truncated or malformed)", key="POINTS")
    elif kind == "binary":
        try:
            size = sum(int(a) * int(b) for a, b in zip(header["SIZE"].split(), header["COUNT"].split()))
        except (KeyError, ValueError) as e:
            raise layout_error(path, "PCD header lacks valid SIZE/COUNT lines") from e
        if len(data) - pos < n * size:
            raise layout_error(path, f"header says POINTS {n} ({n * size} bytes) but the binary data section "
                                     f"has {len(data) - pos} bytes (truncated)", key="POINTS")
    return header


def read_pcd(path: str | Path) -> np.ndarray:
    """float32 ``[N, 4]`` ``(x, y, z, intensity)`` in the LiDAR frame (CARLA left-handed: x fwd, y right, z up).

    Read with Open3D exactly as OpenCOOD's ``pcd_to_np`` (intensity = red channel in [0, 1], 256 levels).
    """
    p = require_file(path, "LiDAR point cloud (.pcd)")
    header = _pcd_header(p)
    o3d = import_optional("open3d", "open3d")
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    pcd = o3d.io.read_point_cloud(str(p), format="pcd")
    xyz = np.asarray(pcd.points, dtype=np.float64)
    expected = int(header["POINTS"])
    if len(xyz) != expected:
        raise layout_error(p, f"Open3D parsed {len(xyz)} points but the header says POINTS {expected} "
                              "(truncated or malformed data section)")
    if pcd.has_colors():
        inten = np.asarray(pcd.colors, dtype=np.float64)[:, 0]
    else:
        inten = np.zeros(len(xyz))
    if not np.all(np.isfinite(xyz)):
        raise layout_error(p, "non-finite point coordinates")
    return np.concatenate([xyz, inten[:, None]], axis=1).astype(np.float32)


# --- per-camera depth ----------------------------------------------------------------------------------


def read_camera_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Planar (z) depth in metres of one source camera; 0 = no data.

    ``.png``: OPV2V-H 8-bit, value = metres (HEAL reads it as ``ToTensor() * 255``); 0 and 255 (saturated)
    are treated as no data. ``.npy``: float metres; non-finite and non-positive values are no data.
    """
    if path.suffix == ".npy":
        try:
            d = np.load(path).astype(np.float32)
        except (OSError, ValueError) as e:
            raise layout_error(path, f"cannot read depth array: {e}") from e
        d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    else:
        from wai.format.codecs import cv2

        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise layout_error(path, "cannot decode depth PNG")
        if img.ndim == 3:
            img = img[..., 0]
        if img.dtype != np.uint8:
            raise layout_error(path, f"expected an 8-bit depth PNG (metres, OPV2V-H), got {img.dtype}")
        d = np.where((img > 0) & (img < 255), img.astype(np.float32), 0.0).astype(np.float32)
    if d.shape != shape:
        raise layout_error(path, f"depth shape {d.shape} != camera image (h, w) {shape}")
    return d


def find_camera_depth(dirs: list[Path], ts: str, i: int) -> Path | None:
    """The first ``<ts>_depth<i>.npy`` / ``.png`` found in ``dirs`` (None when there is none)."""
    for d in dirs:
        for ext in (".npy", ".png"):
            p = d / f"{ts}_depth{i}{ext}"
            if p.is_file():
                return p
    return None


def check_image(path: Path) -> Path:
    """Raise ``SourceNotFoundError`` naming the camera image if it is missing."""
    return require_file(path, "OPV2V camera image", "each frame needs <ts>_camera0..3.png")


__all__ = [
    "CAMERA_NAMES", "N_CAMERAS", "SPLITS", "CameraMeta", "FrameMeta", "SourceLayoutError", "camera_image_path",
    "check_image", "find_camera_depth", "is_agent_dir", "is_scenario_dir", "list_agents", "list_timestamps",
    "load_yaml", "parse_frame_yaml", "read_camera_depth", "read_pcd",
]
