"""Conventions and transforms against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from wai.errors import SchemaError
from wai.format import conventions as cv


def test_invert_pose_hand_value() -> None:
    T = cv.make_pose(cv.rot_z(np.pi / 2), [1.0, 2.0, 3.0])
    inv = cv.invert_pose(T)
    # R^T = rot_z(-90): (x, y) -> (y, -x); t' = -R^T t = -(2, -1, 3)
    np.testing.assert_allclose(inv[:3, 3], [-2.0, 1.0, -3.0], atol=1e-12)
    np.testing.assert_allclose(inv @ T, np.eye(4), atol=1e-12)
    batch = np.stack([T, np.eye(4)])
    np.testing.assert_allclose(cv.invert_pose(batch)[0], inv)


def test_rotations_hand_values() -> None:
    np.testing.assert_allclose(cv.rot_x(np.pi / 2) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(cv.rot_y(np.pi / 2) @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cv.rot_z(np.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    R = cv.euler_zyx_to_rotmat(90, 0, 0)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_quaternion_scalar_first() -> None:
    # 90 deg about z: (cos 45, 0, 0, sin 45)
    q = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]
    np.testing.assert_allclose(cv.qvec_to_rotmat(q), cv.rot_z(np.pi / 2), atol=1e-12)
    np.testing.assert_allclose(cv.rotmat_to_qvec(cv.rot_z(np.pi / 2)), q, atol=1e-12)
    # unnormalised input (text rounding) is normalised
    np.testing.assert_allclose(cv.qvec_to_rotmat(np.array(q) * 1.000001), cv.rot_z(np.pi / 2), atol=1e-9)
    with pytest.raises(SchemaError, match="zero"):
        cv.qvec_to_rotmat([0, 0, 0, 0])


def test_opengl_to_opencv() -> None:
    c2w = np.eye(4)
    out = cv.opengl_to_opencv_c2w(c2w)
    # OpenGL camera looks down -z: the OpenCV optical axis (+z) maps to world -z
    np.testing.assert_allclose(out[:3, :3] @ [0, 0, 1], [0, 0, -1])
    np.testing.assert_allclose(out[:3, :3] @ [0, 1, 0], [0, -1, 0])


def test_left_to_right_handed() -> None:
    # a CARLA pose with yaw 90 deg: body x (forward) points to world +y (left-handed world)
    T = cv.carla_x_to_world([1.0, 2.0, 3.0, 0.0, 90.0, 0.0])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    R = cv.left_to_right_handed_pose(T)
    assert cv.is_proper_rotation(R[:3, :3])
    # in the mirrored world the position has y negated and forward points to -y
    np.testing.assert_allclose(R[:3, 3], [1, -2, 3])
    np.testing.assert_allclose(R[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=1e-12)


def test_carla_x_to_world_formula_and_order() -> None:
    # order is [x, y, z, roll, yaw, pitch]: pitch 90 makes forward point up (+z)
    T = cv.carla_x_to_world([0, 0, 0, 0, 0, 90])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 0, 1], atol=1e-12)
    with pytest.raises(SchemaError, match="6 values"):
        cv.carla_x_to_world([0, 0, 0])


def test_ue4_camera_to_opencv_is_proper_and_looks_forward() -> None:
    T = cv.carla_x_to_world([5.0, 1.0, 2.0, 0.0, 0.0, 0.0])
    c2w = cv.ue4_camera_to_opencv_c2w_right_handed(T)
    assert cv.is_proper_rotation(c2w[:3, :3])
    np.testing.assert_allclose(c2w[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical axis = forward
    np.testing.assert_allclose(c2w[:3, :3] @ [0, 1, 0], [0, 0, -1], atol=1e-12)  # image down = world down
    np.testing.assert_allclose(c2w[:3, 3], [5.0, -1.0, 2.0])


def test_is_proper_rotation() -> None:
    assert cv.is_proper_rotation(np.eye(3))
    assert not cv.is_proper_rotation(np.diag([1.0, 1.0, -1.0]))
    assert not cv.is_proper_rotation(np.eye(3) * 1.01)
    R = cv.orthonormalize(cv.rot_x(0.3) + 1e-4)
    assert cv.is_proper_rotation(R)
