"""Conventions are code: the one place that defines axes, pose direction, pixel centres and depth types.

Canonical conventions (see ``docs/conventions.md``):

* **Camera axes**: OpenCV, x right, y down, z forward.
* **Pose direction**: ``transform_matrix`` is camera-to-world (maps camera-frame points into the world).
* **World**: the source's own world frame, right-handed; a left-handed source is mirrored by
  ``WORLD_FROM_LEFT_HANDED`` (negate y) and the matrix is recorded in ``_applied_transforms``.
* **Pixel centres** are at integer coordinates (OpenCV); COLMAP/ETH3D put them at +0.5 and are shifted
  by ``COLMAP_TO_OPENCV_PRINCIPAL_SHIFT`` on import.
* **Depth**: ``z`` (planar, along the optical axis) for ``PINHOLE``, ``range`` (Euclidean distance from the
  camera centre) for ``CYLINDRICAL``; metres when ``scale_type == "metric"``; 0 means no data.

All functions take and return float64 numpy arrays; batched inputs (``[..., 4, 4]``) are supported where noted.
"""

from __future__ import annotations

import numpy as np
from pyquaternion import Quaternion

from wai.errors import SchemaError

CAMERA_CONVENTION = "opencv"
PINHOLE = "PINHOLE"
CYLINDRICAL = "CYLINDRICAL"
CAMERA_MODELS = (PINHOLE, CYLINDRICAL)
DEPTH_Z = "z"
DEPTH_RANGE = "range"
DEPTH_TYPE_OF_MODEL = {PINHOLE: DEPTH_Z, CYLINDRICAL: DEPTH_RANGE}
SCALE_METRIC = "metric"
SCALE_RELATIVE = "relative"
SCALE_TYPES = (SCALE_METRIC, SCALE_RELATIVE)
#: Value stored in depth maps where there is no measurement.
DEPTH_INVALID = 0.0

#: Principal point shift applied to COLMAP/ETH3D intrinsics (pixel centre at +0.5 -> at 0).
COLMAP_TO_OPENCV_PRINCIPAL_SHIFT = -0.5

#: Camera axes OpenGL (x right, y up, z backward) -> OpenCV. Right-multiply a c2w rotation by it.
OPENCV_FROM_OPENGL = np.diag([1.0, -1.0, -1.0])
#: Mirror a left-handed world (CARLA/UE4: x forward, y right, z up) into a right-handed one by negating y.
WORLD_FROM_LEFT_HANDED = np.diag([1.0, -1.0, 1.0, 1.0])
#: UE4 camera axes (x forward, y right, z up) -> OpenCV camera axes: (x, y, z)_ue -> (y, -z, x)_cv. det = -1.
OPENCV_FROM_UE4 = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
#: PyTorch3D camera axes (x left, y up, z forward) -> OpenCV. Left-multiply camera-frame points.
OPENCV_FROM_PYTORCH3D = np.diag([-1.0, -1.0, 1.0])

ROTATION_TOL = 1e-5


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Assemble a 4x4 rigid transform from rotation ``R`` (3x3) and translation ``t`` (3,)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transform(s) ``[..., 4, 4]`` using ``R^T`` (exact for proper rotations)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points ``[..., 3]``."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ T[:3, :3].T + T[:3, 3]


def is_proper_rotation(R: np.ndarray, tol: float = ROTATION_TOL) -> bool:
    """True when ``R`` is orthonormal (``R R^T = I`` to ``tol``) with determinant +1."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return False
    return bool(np.abs(R @ R.T - np.eye(3)).max() <= tol and abs(np.linalg.det(R) - 1.0) <= tol)


def opengl_to_opencv_c2w(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world with OpenGL camera axes -> OpenCV camera axes (same camera centre)."""
    out = np.array(c2w, dtype=np.float64)
    out[..., :3, :3] = out[..., :3, :3] @ OPENCV_FROM_OPENGL
    return out


def left_to_right_handed_pose(T_left: np.ndarray) -> np.ndarray:
    """Re-express a pose given in a left-handed world (and left-handed body axes) in the y-mirrored world.

    ``S T S`` with ``S = WORLD_FROM_LEFT_HANDED``: both the world and the body frame are mirrored, so the
    result is a proper rigid transform when ``T_left`` was one.
    """
    S = WORLD_FROM_LEFT_HANDED
    return S @ np.asarray(T_left, dtype=np.float64) @ S


# --- quaternions -------------------------------------------------------------------------------


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Rotation matrix from a scalar-first quaternion ``(qw, qx, qy, qz)`` as COLMAP writes it.

    The quaternion is normalised first (COLMAP text files carry ~1e-9 rounding).
    """
    q = np.asarray(qvec, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise SchemaError(f"quaternion {q.tolist()} has zero or non-finite norm; expected (qw, qx, qy, qz)")
    return Quaternion(*(q / n)).rotation_matrix


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Scalar-first unit quaternion ``(qw, qx, qy, qz)`` with ``qw >= 0`` from a proper rotation matrix."""
    q = Quaternion(matrix=np.asarray(R, dtype=np.float64), atol=1e-6, rtol=1e-6).elements
    return q if q[0] >= 0 else -q


# --- Euler angles ------------------------------------------------------------------------------


def rot_x(a: float) -> np.ndarray:
    """Right-handed rotation about x by ``a`` radians."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    """Right-handed rotation about y by ``a`` radians."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    """Right-handed rotation about z by ``a`` radians."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_zyx_to_rotmat(yaw: float, pitch: float, roll: float, degrees: bool = True) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (intrinsic z-y'-x'', the aerospace/KITTI convention)."""
    if degrees:
        yaw, pitch, roll = np.deg2rad([yaw, pitch, roll])
    return rot_z(yaw) @ rot_y(pitch) @ rot_x(roll)


def carla_x_to_world(pose: list[float] | np.ndarray) -> np.ndarray:
    """CARLA/OpenCOOD ``x_to_world``: 4x4 from ``[x, y, z, roll, yaw, pitch]`` (metres, degrees).

    Note the list order **roll, yaw, pitch**. The result lives in CARLA's left-handed world (x forward,
    y right, z up) and equals ``carla.Transform.get_matrix()``; its 3x3 block is a proper rotation of
    the left-handed coordinates (det +1).
    """
    p = np.asarray(pose, dtype=np.float64).reshape(-1)
    if p.shape[0] != 6:
        raise SchemaError(f"CARLA pose must have 6 values [x, y, z, roll, yaw, pitch], got {p.tolist()}")
    x, y, z, roll, yaw, pitch = p
    cy, sy = np.cos(np.deg2rad(yaw)), np.sin(np.deg2rad(yaw))
    cr, sr = np.cos(np.deg2rad(roll)), np.sin(np.deg2rad(roll))
    cp, sp = np.cos(np.deg2rad(pitch)), np.sin(np.deg2rad(pitch))
    return np.array(
        [
            [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr, x],
            [sy * cp, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr, y],
            [sp, -cp * sr, cp * cr, z],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def carla_x1_to_x2(x1: list[float] | np.ndarray, x2: list[float] | np.ndarray) -> np.ndarray:
    """``inv(x_to_world(x2)) @ x_to_world(x1)``: maps points of frame x1 into frame x2 (OpenCOOD)."""
    return np.linalg.inv(carla_x_to_world(x2)) @ carla_x_to_world(x1)


def ue4_camera_to_opencv_c2w_right_handed(T_ue_cam_to_world_left: np.ndarray) -> np.ndarray:
    """UE4 camera-to-world in CARLA's left-handed world -> OpenCV camera-to-world in the y-mirrored world.

    ``S @ T @ M^T`` with ``S = diag(1,-1,1)`` (world mirror) and ``M = OPENCV_FROM_UE4``. Both S and M have
    det -1, so the result is a proper rotation.
    """
    T = np.asarray(T_ue_cam_to_world_left, dtype=np.float64)
    out = np.eye(4)
    S3 = WORLD_FROM_LEFT_HANDED[:3, :3]
    out[:3, :3] = S3 @ T[:3, :3] @ OPENCV_FROM_UE4.T
    out[:3, 3] = S3 @ T[:3, 3]
    return out


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """Closest proper rotation to ``R`` (SVD); used to clean text-file rounding, never to hide errors."""
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt
