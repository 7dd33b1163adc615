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

from wai.converters._media import decode_image, verify_image
from wai.converters._rawio import dir_problem, number, numbers, read_bytes, require_final_newline
from wai.errors import SourceLayoutError, import_optional, layout_error, require_file

N_CAMERAS = 4
#: Camera order of OPV2V: camera0 front, camera1 right(-rear), camera2 left(-rear), camera3 back.
CAMERA_NAMES = ("front", "right", "left", "back")
#: Raw split folder -> output split name (WAI lists use train/val/test).
SPLITS = {"train": "train", "validate": "val", "test": "test", "test_culvercity": "test_culvercity"}
_FRAME_RE = re.compile(r"^(\d{6})\.yaml$")
_AGENT_RE = re.compile(r"-?[0-9]+")

# Plausible ranges of raw numbers (anything outside is a damaged file, reported with file and key).
#: |x|, |y|, |z| of a CARLA pose (metres); CARLA towns span a few km.
MAX_POSITION_M = 1e6
#: |roll|, |yaw|, |pitch| of a CARLA pose (degrees).
MAX_ANGLE_DEG = 720.0
#: Camera focal length (pixels) and image side (pixels) from the YAML intrinsic.
MAX_FOCAL_PX = 1e5
MAX_IMAGE_SIDE = 16384
#: |ego_speed| (km/h).
MAX_SPEED_KMH = 1000.0
#: |x|, |y|, |z| of a LiDAR point (metres); CARLA's LiDAR range is ~100 m.
MAX_LIDAR_M = 1e4


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
    """Parse a YAML file with the safe loader (plus ``1e-5`` floats); errors name the file and line.

    Read as bytes with a size cap (PyYAML detects the encoding; undecodable bytes are a ``YAMLError``). A file
    whose last line lacks its newline is refused: ``yaml.dump`` always writes one, and a YAML cut inside its
    last number still parses (``- 141.350677`` -> ``- 141.35``).
    """
    p = require_file(path, "OPV2V per-frame YAML")
    data = read_bytes(p, "OPV2V per-frame YAML")
    require_final_newline(p, data, "OPV2V per-frame YAML")  # yaml.dump always ends with a newline
    try:
        doc = yaml.load(data, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise layout_error(p, f"not valid YAML: {e}", line=None if line is None else line + 1) from e
    except RecursionError as e:
        raise layout_error(p, "not valid YAML: nested too deep (damaged file?)") from e
    if not isinstance(doc, dict):
        raise layout_error(p, f"expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def _floats(path: Path, value: Any, shape: tuple[int, ...], key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise layout_error(path, f"expected numbers of shape {shape}: {e}", key=key) from e
    if arr.shape != shape:
        raise layout_error(path, f"expected finite numbers of shape {shape}, got {np.shape(value)}", key=key)
    return numbers(path, arr.ravel(), key=key, what=f"{shape} numbers").reshape(shape)


def _pose(path: Path, value: Any, key: str) -> np.ndarray:
    """A CARLA pose list ``[x, y, z, roll, yaw, pitch]`` (metres, degrees), finite and plausible."""
    v = _floats(path, value, (6,), key)
    numbers(path, v[:3], key=key, what="position x, y, z (metres)", lo=-MAX_POSITION_M, hi=MAX_POSITION_M)
    numbers(path, v[3:], key=key, what="angles roll, yaw, pitch (degrees)", lo=-MAX_ANGLE_DEG, hi=MAX_ANGLE_DEG)
    return v


def _intrinsic(path: Path, value: Any, key: str) -> np.ndarray:
    """OpenCDA's 3x3 ``[[f, 0, W/2], [0, f, H/2], [0, 0, 1]]``: positive finite focal lengths, a principal
    point inside a plausible image, no skew (the format's cameras have none)."""
    K = _floats(path, value, (3, 3), key)
    numbers(path, [K[0, 0], K[1, 1]], key=key, what="focal lengths fx, fy (pixels)", lo=1e-3, hi=MAX_FOCAL_PX)
    numbers(path, [K[0, 2], K[1, 2]], key=key, what="principal point cx, cy (pixels, = W/2, H/2)", lo=0.5,
            hi=MAX_IMAGE_SIDE / 2)
    if K[0, 1] != 0 or K[1, 0] != 0 or not np.array_equal(K[2], [0.0, 0.0, 1.0]):
        raise layout_error(path, f"expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}", key=key)
    return K


@dataclass(frozen=True)
class CameraMeta:
    """One ``camera{i}`` entry: CARLA pose list, LiDAR->camera extrinsic (UE4 axes), 3x3 intrinsic."""

    cords: np.ndarray  # [x, y, z, roll, yaw, pitch], metres / degrees, CARLA left-handed world
    extrinsic: np.ndarray  # 4x4 LiDAR -> camera, UE4 axes
    intrinsic: np.ndarray  # 3x3, OpenCDA convention (cx = W/2, cy = H/2)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(W, H)`` the intrinsic implies: OpenCDA writes ``cx = W/2``, ``cy = H/2``."""
        return round(2 * float(self.intrinsic[0, 2])), round(2 * float(self.intrinsic[1, 2]))


@dataclass(frozen=True)
class FrameMeta:
    """The parts of one per-frame YAML the converter uses."""

    path: Path
    lidar_pose: np.ndarray  # [x, y, z, roll, yaw, pitch]
    true_ego_pos: np.ndarray | None
    cameras: tuple[CameraMeta, ...]
    ego_speed: float | None


def parse_frame_yaml(path: str | Path) -> FrameMeta:
    """Read ``<ts>.yaml``; a missing key raises ``SourceLayoutError`` naming the file and the key.

    Every number used is checked finite and plausible (``MAX_*`` above). Keys the converter does not use
    (``vehicles``, ``walkers``, ``RSU``, ``plan_trajectory``, ...) may hold anything.
    """
    p = Path(path)
    d = load_yaml(p)
    if "lidar_pose" not in d:
        raise layout_error(p, "missing key; every OPV2V frame YAML has the LiDAR pose [x, y, z, roll, yaw, pitch]",
                           key="lidar_pose")
    lidar = _pose(p, d["lidar_pose"], "lidar_pose")
    ego = _pose(p, d["true_ego_pos"], "true_ego_pos") if d.get("true_ego_pos") is not None else None
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
        K = _intrinsic(p, c["intrinsic"], f"{key}.intrinsic")
        ext = _floats(p, c["extrinsic"], (4, 4), f"{key}.extrinsic")
        numbers(p, ext[:3].ravel(), key=f"{key}.extrinsic", what="3x4 LiDAR -> camera", lo=-MAX_POSITION_M,
                hi=MAX_POSITION_M)
        cams.append(CameraMeta(_pose(p, c["cords"], f"{key}.cords"), ext, K))
    speed = d.get("ego_speed")
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        speed = None
    else:
        speed = number(p, speed, key="ego_speed", what="ego speed (km/h)", lo=-MAX_SPEED_KMH, hi=MAX_SPEED_KMH)
    return FrameMeta(p, lidar, ego, tuple(cams), speed)


# --- listing -------------------------------------------------------------------------------------------


def is_agent_dir(p: Path) -> bool:
    """A CAV/RSU folder: an integer name (negative = road-side unit)."""
    return _AGENT_RE.fullmatch(p.name) is not None and dir_problem(p) is None


def is_agent_name(name: str) -> bool:
    """An integer name (a CAV id; negative = road-side unit)."""
    return _AGENT_RE.fullmatch(name) is not None


def is_scenario_dir(p: Path) -> bool:
    """A scenario folder holds at least one agent folder (readable or not)."""
    if dir_problem(p) is not None:
        return False
    try:
        return any(is_agent_name(c.name) and dir_problem(c) != "not a directory" for c in p.iterdir())
    except OSError:
        return False


def list_agents(scenario: Path) -> list[str]:
    """Agent folders in OpenCOOD order: sorted, a leading RSU (negative id) moved to the end; first = ego.

    Folders with an agent name that cannot be listed (a symlink loop, no permission) are included: the
    converter drops their frames with the reason (``agent_problem``).
    """
    names = sorted(c.name for c in scenario.iterdir() if is_agent_name(c.name)
                   and dir_problem(c) != "not a directory")
    if names and int(names[0]) < 0:
        names = names[1:] + names[:1]
    return names


def agent_problem(agent_dir: Path) -> str | None:
    """None for a readable agent folder, else why it cannot be read."""
    return dir_problem(agent_dir)


def list_timestamps(agent_dir: Path) -> list[str]:
    """6-digit frame ids of the ``<ts>.yaml`` files (names containing ``additional`` are skipped)."""
    return sorted(m.group(1) for f in agent_dir.iterdir() if (m := _FRAME_RE.match(f.name)))


def camera_image_path(agent_dir: Path, ts: str, i: int) -> Path:
    """``<ts>_camera<i>.png``."""
    return agent_dir / f"{ts}_camera{i}.png"


# --- LiDAR ---------------------------------------------------------------------------------------------


def _parse_pcd(path: Path) -> tuple[dict[str, str], np.ndarray | None]:
    """The header of a PCD file (keys upper-case), checked for the fields OPV2V writes and for a complete
    data section (Open3D fills a truncated one with garbage instead of failing), and for ``DATA ascii`` the
    parsed values (float64 ``[N, n_fields]``, checked by ``_ascii_values``; None for binary data)."""
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
    if not header["POINTS"].isascii() or not header["POINTS"].isdigit():
        raise layout_error(path, f"PCD POINTS must be an integer, got {header['POINTS']!r}", key="POINTS")
    n = int(header["POINTS"])
    kind = header["DATA"].lower()
    values = None
    if kind == "ascii":
        body = data[pos:].strip()  # one point per line; counting newlines beats splitting 100k+ rows
        rows = body.count(b"\n") + 1 if body else 0
        if rows != n:
            raise layout_error(path, f"header says POINTS {n} but the ascii data section has {rows} rows "
                                     "(truncated or malformed)", key="POINTS")
        values = _ascii_values(path, body, n, len(fields))
    elif kind == "binary":
        try:
            size = sum(int(a) * int(b) for a, b in zip(header["SIZE"].split(), header["COUNT"].split()))
        except (KeyError, ValueError) as e:
            raise layout_error(path, "PCD header lacks valid SIZE/COUNT lines") from e
        if len(data) - pos < n * size:
            raise layout_error(path, f"header says POINTS {n} ({n * size} bytes) but the binary data section "
                                     f"has {len(data) - pos} bytes (truncated)", key="POINTS")
    return header, values


def parse_ascii_rows(body: bytes, n_fields: int) -> np.ndarray:
    """float64 ``[rows, n_fields]`` of space-separated numbers, one row per line (a PCD's ASCII data section).

    Arrow's C++ CSV parser (pyarrow is a core dependency): strict (a malformed token or a row with another
    number of values raises ``pyarrow.ArrowInvalid``), correctly rounded like strtod, and ~4x faster than
    Open3D's reader. No other check: see ``_ascii_values``.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"f{i}" for i in range(n_fields)]
    table = pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=" "),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64())))
    if table.num_rows == 0:
        return np.zeros((0, n_fields))
    return np.column_stack([table.column(i).to_numpy() for i in range(n_fields)])


def _ascii_values(path: Path, body: bytes, n: int, n_fields: int) -> np.ndarray:
    """The float64 ``[n, n_fields]`` values of an ASCII data section, checked: every value a number, ``n`` rows
    of ``n_fields`` (Open3D reads a malformed token as garbage instead of failing); x, y, z finite and plausible.
    """
    import pyarrow as pa

    try:
        vals = parse_ascii_rows(body, n_fields)
    except (pa.ArrowInvalid, ValueError) as e:
        raise layout_error(path, f"ascii data section is malformed ({str(e).splitlines()[0]}); expected {n} rows "
                                 f"of {n_fields} numbers", key="DATA") from e
    if len(vals) != n:
        raise layout_error(path, f"ascii data section has {len(vals)} rows; POINTS says {n} (a damaged row?)",
                           key="DATA")
    xyz = vals[:, :3]
    if not np.isfinite(xyz).all():
        k = int(np.flatnonzero(~np.isfinite(xyz).all(axis=1))[0])
        raise layout_error(path, f"point {k} has non-finite coordinates {xyz[k].tolist()}", key="DATA")
    if xyz.size and float(np.abs(xyz).max()) > MAX_LIDAR_M:
        raise layout_error(path, f"a coordinate is {float(np.abs(xyz).max()):.4g} m, beyond the plausible "
                                 f"{MAX_LIDAR_M:g} m", key="DATA")
    return vals


def check_pcd(path: str | Path) -> None:
    """Raise ``SourceLayoutError`` naming the file if the PCD's header or data section is malformed."""
    _parse_pcd(require_file(path, "LiDAR point cloud (.pcd)"))


def _packed_red(rgb: np.ndarray, typ: str) -> np.ndarray:
    """Red channel in [0, 1] of PCD ``rgb`` values (the bytes ``[B, G, R, 0]`` as a little-endian 4-byte
    number of PCD type ``typ``: ``F`` float32, ``U``/``I`` integer), as Open3D unpacks them: byte 2 / 255."""
    with np.errstate(over="ignore", invalid="ignore"):  # out of float32 range: inf, as strtof gives
        bits = rgb.astype("<f4").view("<u4") if typ == "F" else np.nan_to_num(rgb).astype(np.int64).astype("<u4")
    return ((bits >> 16) & 0xFF).astype(np.float64) / 255.0


def read_pcd(path: str | Path) -> np.ndarray:
    """float32 ``[N, 4]`` ``(x, y, z, intensity)`` in the LiDAR frame (CARLA left-handed: x fwd, y right, z up).

    The values Open3D reads as OpenCOOD's ``pcd_to_np`` does (intensity = red channel in [0, 1], 256 levels). An
    ASCII file (what OPV2V ships) is parsed once, by the check itself; a binary one through Open3D.
    """
    p = require_file(path, "LiDAR point cloud (.pcd)")
    header, values = _parse_pcd(p)
    fields = header["FIELDS"].split()
    # Open3D makes colours of an `rgb`/`rgba` field only (any other field is not intensity to it)
    col = next((k for k, f in enumerate(fields) if f in ("rgb", "rgba")), None)
    types, sizes = header.get("TYPE", "").split(), header.get("SIZE", "").split()
    packed = col is None or (col < min(len(types), len(sizes)) and types[col] in "FUI" and sizes[col] == "4")
    if values is not None and packed:
        xyz = values[:, :3]
        inten = _packed_red(values[:, col], types[col]) if col is not None else np.zeros(len(xyz))
        return np.concatenate([xyz, inten[:, None]], axis=1).astype(np.float32)
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
    if xyz.size and float(np.abs(xyz).max()) > MAX_LIDAR_M:
        raise layout_error(p, f"a coordinate is {float(np.abs(xyz).max()):.4g} m, beyond the plausible "
                              f"{MAX_LIDAR_M:g} m")
    return np.concatenate([xyz, inten[:, None]], axis=1).astype(np.float32)


# --- per-camera depth ----------------------------------------------------------------------------------


def read_camera_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Planar (z) depth in metres of one source camera; 0 = no data.

    ``.png``: OPV2V-H 8-bit, value = metres (HEAL reads it as ``ToTensor() * 255``); 0 and 255 (saturated)
    are treated as no data. ``.npy``: float metres; non-finite and non-positive values are no data.
    """
    if path.suffix == ".npy":
        try:
            d = np.load(path, allow_pickle=False)
            if d.dtype.kind not in "fiu":
                raise ValueError(f"dtype {d.dtype} is not numeric")
            d = d.astype(np.float32)
        except (OSError, ValueError, EOFError) as e:
            raise layout_error(path, f"cannot read depth array: {e}") from e
        d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    else:
        from wai.format.codecs import cv2

        verify_image(path, "OPV2V-H depth PNG", fmt="png", size=(shape[1], shape[0]),
                     size_source="its camera image")
        img = decode_image(path, cv2.IMREAD_UNCHANGED, "OPV2V-H depth PNG")
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


def verify_camera_image(path: Path, cam: CameraMeta, yaml_path: Path, index: int) -> tuple[int, int]:
    """A complete 8-bit RGB(A) PNG whose size is the one its YAML intrinsic implies (``2 cx x 2 cy``);
    returns ``(h, w)``. ``SourceNotFoundError`` / ``SourceLayoutError`` naming the image."""
    check_image(path)
    hdr = verify_image(path, "OPV2V camera image", fmt="png", size=cam.image_size,
                       size_source=f"{yaml_path.name} camera{index}.intrinsic (cx = W/2, cy = H/2)",
                       channels=(3, 4), bit_depth=(8,))
    return hdr.height, hdr.width


__all__ = [
    "CAMERA_NAMES", "N_CAMERAS", "SPLITS", "CameraMeta", "FrameMeta", "SourceLayoutError", "agent_problem",
    "camera_image_path", "check_image", "check_pcd", "find_camera_depth", "is_agent_dir", "is_agent_name",
    "is_scenario_dir", "list_agents", "list_timestamps", "load_yaml", "parse_frame_yaml", "read_camera_depth",
    "parse_ascii_rows", "read_pcd", "verify_camera_image",
]
