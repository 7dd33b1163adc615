"""KITTI-360 raw-file readers: calibration, poses, Velodyne scans, split lists and the label table.

Every reader is strict: a missing file raises ``SourceNotFoundError`` and a malformed one a
``SourceLayoutError`` naming the file (and line or key) and what was expected. Formats are those of
``kitti360Scripts`` (``helpers/project.py``, ``viewer/kitti360Viewer3DRaw.py``); see
``docs/sources/kitti360.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from wai.converters._rawio import dir_problem, integer, numbers, read_bytes, read_text
from wai.errors import layout_error, require_file
from wai.format.cameras import Camera
from wai.format.codecs import cv2
from wai.format.conventions import is_proper_rotation

#: Semantic id of ``building`` in the KITTI-360 label table (``labels.py``).
BUILDING_ID = 11
CALIB_DIR = "calibration"
SEQ_PREFIX = "2013_05_28_drive_"

# Plausible ranges of raw numbers (anything outside is a damaged file, reported with file and line/key).
#: Image side from ``S_rect_0x`` (pixels); the real cameras are 1408x376.
MAX_IMAGE_SIDE = 16384
#: Focal length from ``P_rect_0x`` (pixels); the real one is 552.55.
MAX_FOCAL_PX = 1e5
#: Stereo baseline ``|P_rect_01[0, 3] / P_rect_01[0, 0]|`` (metres); the real one is 0.594.
MAX_BASELINE_M = 10.0
#: Translation of a calibration transform (camera -> pose / Velodyne), metres; the real ones are < 2 m.
MAX_CALIB_TRANSLATION_M = 100.0
#: Translation of a pose (metres from the world origin); real KITTI-360 poses are within ~5 km.
MAX_POSE_TRANSLATION_M = 1e6
#: Largest frame id (the longest sequence has ~15k frames).
MAX_FRAME_ID = 10**9
#: Largest Velodyne coordinate (metres); the HDL-64E reaches ~120 m.
MAX_LIDAR_M = 1e4


def _floats(path: Path, tokens: list[str], line: int, key: str | None = None, what: str = "values") -> np.ndarray:
    """Finite numbers of one line (errors name the file, line, key and the offending value)."""
    return numbers(path, tokens, line=line, key=key, what=what)


def read_key_values(path: str | Path) -> dict[str, tuple[list[str], int]]:
    """``key: v v v`` lines of a calibration file -> ``{key: (value tokens, line number)}``.

    Values are parsed on demand (``calib_values``), so lines nobody reads (``calib_time: 09-Jan-2012 ...``)
    may hold anything.
    """
    p = Path(path)
    out: dict[str, tuple[list[str], int]] = {}
    for i, raw in enumerate(read_text(p, "KITTI-360 calibration file").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise layout_error(p, f"expected 'key: values', got {line[:60]!r}", line=i)
        out[key.strip()] = (rest.split(), i)
    return out


def calib_values(path: Path, table: dict[str, tuple[list[str], int]], key: str, n: int) -> np.ndarray:
    """The ``n`` numbers of ``key`` in a ``key: values`` file (errors name file, line and key)."""
    if key not in table:
        raise layout_error(path, f"missing key (expected a line '{key}: <{n} numbers>')", key=key)
    tokens, line = table[key]
    vals = _floats(path, tokens, line, key)
    if vals.size != n:
        raise layout_error(path, f"expected {n} numbers, got {vals.size}", line=line, key=key)
    return vals


def _rigid(path: Path, vals: np.ndarray, key: str | None, line: int | None,
           max_t: float = MAX_CALIB_TRANSLATION_M) -> np.ndarray:
    """4x4 of a 3x4 row-major rigid transform: proper rotation (to 1e-4), translation within ``max_t`` metres."""
    T = np.eye(4)
    T[:3, :4] = vals.reshape(3, 4)
    if not np.all(np.isfinite(T)):
        raise layout_error(path, "non-finite value in the 3x4 transform", line=line, key=key)
    if np.abs(T[:3, :3]).max() > 1.0 + 1e-3:
        raise layout_error(path, "rotation part has entries outside [-1, 1] (not a rotation)", line=line, key=key)
    if not is_proper_rotation(T[:3, :3], tol=1e-4):
        raise layout_error(path, "rotation part is not a proper rotation (orthonormal, det +1)", line=line, key=key)
    t = float(np.abs(T[:3, 3]).max())
    if t > max_t:
        raise layout_error(path, f"translation {T[:3, 3].tolist()} is beyond the plausible {max_t:g} m", line=line,
                           key=key)
    return T


@dataclass(frozen=True)
class RectCamera:
    """One rectified perspective camera: intrinsics, ``P_rect``, ``R_rect`` and its stereo offset.

    ``rect_from_rect0`` maps rectified-camera-0 points into this rectified camera (pure translation
    ``(-b, 0, 0)`` with ``b = -P_rect[0, 3] / P_rect[0, 0]``, the baseline; identity for camera 00).
    """

    cam: str  # "00" or "01"
    camera: Camera
    P_rect: np.ndarray  # 3x4
    R_rect: np.ndarray  # 3x3
    rect_from_rect0: np.ndarray  # 4x4


@dataclass(frozen=True)
class Calibration:
    """The calibration chain of one KITTI-360 installation (all 4x4, metres)."""

    cameras: dict[str, RectCamera]
    cam0_to_pose: np.ndarray  # unrectified camera 00 -> GPS/IMU ("pose") frame
    cam0_to_velo: np.ndarray  # unrectified camera 00 -> Velodyne
    files: dict[str, str]  # relative paths read

    @property
    def R_rect0(self) -> np.ndarray:
        """``R_rect_00`` as 4x4 (unrectified camera 00 -> rectified camera 00)."""
        R = np.eye(4)
        R[:3, :3] = self.cameras["00"].R_rect
        return R

    @property
    def rect0_from_velo(self) -> np.ndarray:
        """Velodyne -> rectified camera 00: ``R_rect_00 @ inv(T_cam0->velo)``."""
        return self.R_rect0 @ np.linalg.inv(self.cam0_to_velo)  # general inverse, as the devkit

    def rect_from_velo(self, cam: str) -> np.ndarray:
        """Velodyne -> rectified camera ``cam`` (through the rectified stereo baseline for camera 01)."""
        return self.cameras[cam].rect_from_rect0 @ self.rect0_from_velo

    def rect0_to_world_from_imu(self, imu_to_world: np.ndarray) -> np.ndarray:
        """Rectified camera 00 -> world from a ``poses.txt`` pose: ``pose @ T_cam0->pose @ inv(R_rect_00)``."""
        # np.linalg.inv as in the devkit: R_rect is printed with 6 decimals, its transpose differs by ~1e-6.
        return imu_to_world @ self.cam0_to_pose @ np.linalg.inv(self.R_rect0)


def read_perspective(path: str | Path, cams: list[str]) -> dict[str, RectCamera]:
    """``perspective.txt``: ``P_rect_0k`` (12), ``R_rect_0k`` (9), ``S_rect_0k`` (W H) for each camera."""
    p = require_file(path, "KITTI-360 perspective calibration", "download the calibration archive")
    table = read_key_values(p)
    out = {}
    for cam in cams:
        P = calib_values(p, table, f"P_rect_{cam}", 12).reshape(3, 4)
        R = calib_values(p, table, f"R_rect_{cam}", 9).reshape(3, 3)
        S = calib_values(p, table, f"S_rect_{cam}", 2)
        if not is_proper_rotation(R, tol=1e-4):
            raise layout_error(p, "not a proper rotation", line=table[f"R_rect_{cam}"][1], key=f"R_rect_{cam}")
        s_line = table[f"S_rect_{cam}"][1]
        w, h = (integer(p, v, line=s_line, key=f"S_rect_{cam}", what="image size (W H, pixels)", lo=1,
                        hi=MAX_IMAGE_SIDE) for v in S)
        p_line, p_key = table[f"P_rect_{cam}"][1], f"P_rect_{cam}"
        if P[2, 2] != 1.0 or P[2, 3] != 0.0 or P[1, 3] != 0.0 or P[2, 0] != 0.0 or P[2, 1] != 0.0:
            raise layout_error(p, "expected a rectified projection K [I | t] with t = (tx, 0, 0)", line=p_line,
                               key=p_key)
        numbers(p, [P[0, 0], P[1, 1]], line=p_line, key=p_key, what="focal lengths fx, fy (pixels)", lo=1e-3,
                hi=MAX_FOCAL_PX)
        numbers(p, [P[0, 2]], line=p_line, key=p_key, what=f"principal point cx (pixels, image width {w})",
                lo=-w, hi=2 * w)
        numbers(p, [P[1, 2]], line=p_line, key=p_key, what=f"principal point cy (pixels, image height {h})",
                lo=-h, hi=2 * h)
        numbers(p, [P[0, 3] / P[0, 0]], line=p_line, key=p_key, what="stereo baseline tx / fx (metres)",
                lo=-MAX_BASELINE_M, hi=MAX_BASELINE_M)
        T = np.eye(4)
        # P_rect_0k = K [I | (-b, 0, 0)]: rectified camera k sees rect-0 points shifted by -b along x.
        T[0, 3] = P[0, 3] / P[0, 0]
        out[cam] = RectCamera(cam, Camera.from_K(P[:3, :3], w, h), P, R, T)
    return out


def read_cam_to_pose(path: str | Path, cam: str = "00") -> np.ndarray:
    """``calib_cam_to_pose.txt``: the 4x4 of ``image_<cam>`` (unrectified camera -> GPS/IMU frame)."""
    p = require_file(path, "KITTI-360 camera-to-pose calibration", "download the calibration archive")
    table = read_key_values(p)
    key = f"image_{cam}"
    return _rigid(p, calib_values(p, table, key, 12), key, table[key][1])


def read_cam_to_velo(path: str | Path) -> np.ndarray:
    """``calib_cam_to_velo.txt``: one line of 12 numbers, unrectified camera 00 -> Velodyne."""
    p = require_file(path, "KITTI-360 camera-to-Velodyne calibration", "download the calibration archive")
    lines = [(i, ln) for i, ln in enumerate(read_text(p, "KITTI-360 calibration file").splitlines(), 1)
             if ln.strip()]
    if len(lines) != 1:
        raise layout_error(p, f"expected one line of 12 numbers, found {len(lines)} non-empty lines")
    i, ln = lines[0]
    vals = _floats(p, ln.split(), i)
    if vals.size != 12:
        raise layout_error(p, f"expected 12 numbers (3x4 row-major), got {vals.size}", line=i)
    return _rigid(p, vals, None, i)


def read_calibration(root: Path, cams: list[str]) -> Calibration:
    """The calibration chain from ``<root>/calibration`` for the rectified cameras ``cams``."""
    d = root / CALIB_DIR
    problem = dir_problem(d)
    if problem not in (None, "missing"):
        raise layout_error(d, f"KITTI-360 calibration folder is {problem}")
    cameras = read_perspective(d / "perspective.txt", sorted(set(cams) | {"00"}))
    return Calibration(
        cameras={c: cameras[c] for c in sorted(set(cams) | {"00"})},
        cam0_to_pose=read_cam_to_pose(d / "calib_cam_to_pose.txt", "00"),
        cam0_to_velo=read_cam_to_velo(d / "calib_cam_to_velo.txt"),
        files={k: f"{CALIB_DIR}/{k}.txt" for k in ("perspective", "calib_cam_to_pose", "calib_cam_to_velo")},
    )


def read_pose_file(path: str | Path) -> dict[int, np.ndarray]:
    """``poses.txt`` (frame + 12) or ``cam0_to_world.txt`` (frame + 16, or + 12) -> ``{frame id: 4x4}``.

    Frames are looked up by id: frames where the car stood still have no line. Real lines mix fixed and
    scientific notation, may write the last matrix row as integers and end with a space
    (``700 -0.940061 -2.932256e-02 ... 0.000000 0 0.000000 1 ``): tokens are split on any whitespace.
    Every value must be finite, the frame id a non-negative integer, the rotation proper and the
    translation within ``MAX_POSE_TRANSLATION_M``; the file must end with a newline (one line per frame,
    each ended: a last line without one was cut short, and ``1.800000`` cut to ``1.8`` still parses).
    """
    p = require_file(path, "KITTI-360 pose file", "download data_poses")
    out: dict[int, np.ndarray] = {}
    for i, ln in enumerate(read_text(p, "KITTI-360 pose file", final_newline=True).splitlines(), 1):
        if not ln.strip():
            continue
        toks = ln.split()
        if len(toks) not in (13, 17):
            raise layout_error(p, f"expected a frame id and 12 (3x4) or 16 (4x4) numbers, got {len(toks)} values",
                               line=i)
        frame = integer(p, toks[0], line=i, what="frame id", lo=0, hi=MAX_FRAME_ID)
        vals = _floats(p, toks[1:], i, what="pose matrix")
        if vals.size == 16 and not np.allclose(vals[12:], [0, 0, 0, 1], atol=1e-6):
            raise layout_error(p, f"last matrix row is {vals[12:].tolist()}, expected 0 0 0 1", line=i)
        T = _rigid(p, vals[:12], None, i, max_t=MAX_POSE_TRANSLATION_M)
        if frame in out:
            raise layout_error(p, f"frame {frame} appears twice", line=i)
        out[frame] = T
    if not out:
        raise layout_error(p, "no pose lines")
    return out


def read_velodyne(path: str | Path) -> np.ndarray:
    """A Velodyne ``.bin``: little-endian float32 x 4 (x, y, z, reflectance) per point -> ``[N, 4]``.

    Refused (``SourceLayoutError`` naming the file): an empty file (a scan always has points), a size that is
    not a multiple of 16 bytes (truncated), non-finite values, coordinates beyond ``MAX_LIDAR_M``.
    """
    p = Path(path)
    data = read_bytes(p, "Velodyne scan", max_bytes=1 << 30)
    n = len(data)
    if n == 0:
        raise layout_error(p, "Velodyne scan is empty (0 bytes); a scan always has points")
    if n % 16:
        raise layout_error(p, f"size {n} bytes is not a multiple of 16 (float32 x 4 per point): truncated?")
    pts = np.frombuffer(data, dtype="<f4").reshape(-1, 4)
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        raise layout_error(p, f"point {k} of {len(pts)} has a non-finite value {pts[k].tolist()} (damaged scan?)")
    far = float(np.abs(pts[:, :3]).max())
    if far > MAX_LIDAR_M:
        raise layout_error(p, f"a coordinate is {far:.4g} m, beyond the plausible {MAX_LIDAR_M:g} m (damaged scan?)")
    return pts


def read_split_frames(path: Path) -> set[tuple[str, int]]:
    """``2013_05_28_drive_{train,val}_frames.txt`` -> ``{(sequence, frame id)}`` (from the image relpath)."""
    out: set[tuple[str, int]] = set()
    for i, ln in enumerate(read_text(path, "KITTI-360 split file").splitlines(), 1):
        if not ln.strip():
            continue
        rel = ln.split()[0]
        parts = Path(rel).parts
        seq = next((s for s in parts if s.startswith(SEQ_PREFIX)), None)
        stem = Path(rel).stem
        if seq is None or not stem.isdigit():
            raise layout_error(path, f"expected '<data_2d_raw/<seq>/image_0x/data_rect/<frame>.png> ...', got "
                               f"{ln[:80]!r}", line=i)
        out.add((seq, int(stem)))
    return out


@lru_cache(maxsize=1)
def label_table() -> tuple[dict[str, object], ...]:
    """The KITTI-360 label rows shipped with the package (``converters/data/kitti360_labels.json``)."""
    text = resources.files("wai.converters").joinpath("data/kitti360_labels.json").read_text()
    return tuple(json.loads(text)["labels"])


def label_names() -> dict[int, str]:
    """``{id: name}`` of every label with a non-negative id (the values of ``semantic`` PNGs)."""
    return {int(r["id"]): str(r["name"]) for r in label_table() if int(r["id"]) >= 0}  # type: ignore[call-overload]


# --- depth helpers ---------------------------------------------------------------------------------

#: Occlusion filter half-window (rows, cols) and margin: about two Velodyne channel spacings (0.4 deg ~ 4 px)
#: by a few azimuth steps, so the sparse returns of a near occluder close up (tuned on the fake, see docs).
OCC_HALF_ROWS = 4
OCC_HALF_COLS = 3
OCC_REL_TOL = 0.10


def remove_occluded(depth: np.ndarray, half_rows: int = OCC_HALF_ROWS, half_cols: int = OCC_HALF_COLS,
                    rel_tol: float = OCC_REL_TOL) -> np.ndarray:
    """Zero the pixels of a sparse z-buffer that have a nearer return (by more than ``rel_tol``) in their window.

    The LiDAR sits away from the camera, so it sees surfaces the camera cannot (behind poles, trunks, cars);
    those points land between the sparse points of the occluder. Each point is treated as a splat of the
    LiDAR's angular spacing: a pixel whose depth exceeds the window minimum by more than ``rel_tol`` is behind
    a closer surface and is dropped. Costs some coverage at depth edges and on far ground, where the window
    spans a larger depth change.
    """
    depth = np.asarray(depth, dtype=np.float32)
    # Work on inverse depth so "no return" is 0 and the window's nearest return is a max, then test only
    # the returns instead of running full-image where/isfinite passes.
    idx = np.flatnonzero(depth > 0)  # ~3x faster than flatnonzero on the float map
    inv = np.zeros_like(depth)
    inv.ravel()[idx] = 1.0 / depth.ravel()[idx]
    k = np.ones((2 * half_rows + 1, 2 * half_cols + 1), np.uint8)
    nearest = cv2.dilate(inv, k, borderType=cv2.BORDER_CONSTANT, borderValue=0.0)
    # d <= d_min * (1 + tol)  <=>  1/d >= (1/d_min) / (1 + tol)
    keep = idx[inv.ravel()[idx] * (1.0 + rel_tol) >= nearest.ravel()[idx]]
    out = np.zeros_like(depth)
    out.ravel()[keep] = depth.ravel()[keep]
    return out


def building_ratio(sem: np.ndarray) -> float:
    """Fraction of pixels labelled building (KITTI-360 id 11)."""
    return float(np.count_nonzero(sem == BUILDING_ID) / sem.size)
