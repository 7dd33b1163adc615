"""Co3D v2 converter: hand-worked camera conventions and the synthetic ground truth of ``wai.synthetic.fake_co3d``."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from wai.converters.co3d import Co3DConverter, Co3DOptions, c2w_from_pytorch3d, decode_depth_png, intrinsics_from_ndc
from wai.errors import SourceLayoutError, SourceNotFoundError
from wai.format.codecs import cv2, read_depth, read_labels, read_mask
from wai.format.conventions import invert_pose
from wai.format.scene import SceneWriter, load_scene
from wai.run import RunOptions, run_conversion
from wai.synthetic.fake_co3d import (
    MASKED_BLOCK,
    NONFINITE_PIXELS,
    SCALE,
    SEQUENCES,
    TRUE_CAMERA,
    car_center,
    co3d_from_street,
    make_fake,
    orbit_poses,
)
from wai.synthetic.world import World

N_FRAMES = 3
SEQ_A, SEQ_B, SEQ_LOW = (s[0] for s in SEQUENCES)

# The real annotation quoted in source_formats.md §4.2 (apple/110_13051_23361, frame 1).
REAL_R = [[-0.9983327388763428, -0.007844997569918633, -0.05718603357672691],
          [0.007174402941018343, -0.9999032020568848, 0.011922439560294151],
          [-0.05727402865886688, 0.011492285877466202, 0.9982923269271851]]
REAL_T = [-0.880431592464447, 5.909038543701172, 10.833968162536621]


# --- hand-worked conventions ---------------------------------------------------------------------


def test_isotropic_intrinsics_of_the_reference_annotation() -> None:
    # image.size = [640, 479] is [H, W]: W = 479, H = 640, s = min(W, H) / 2 = 239.5.
    # fx = fy = 2.300013542175293 * 239.5 = 550.8532...
    # PyTorch3D pixels (origin at the image corner): cx = 239.5 + 0.0020876827 * 239.5 = 239.5 + 0.5 = 240.0,
    # cy = 320 + 0.5 = 320.5 -- the numbers of source_formats.md §4.6, in the +0.5 (corner) convention.
    # Ours (pixel centres at integer coordinates) subtract 0.5: cx = 239.5, cy = 320.0.
    cam = intrinsics_from_ndc([2.300013542175293] * 2, [-0.002087682718411088] * 2, "ndc_isotropic", 479, 640)
    assert (cam.w, cam.h) == (479, 640)
    assert cam.fl_x == pytest.approx(550.8532433509827, abs=1e-9)
    assert cam.fl_y == pytest.approx(550.8532433509827, abs=1e-9)
    assert cam.cx + 0.5 == pytest.approx(240.0, abs=1e-6)
    assert cam.cy + 0.5 == pytest.approx(320.5, abs=1e-6)
    assert cam.cx == pytest.approx(239.5, abs=1e-6) and cam.cy == pytest.approx(320.0, abs=1e-6)


def test_norm_image_bounds_intrinsics_scale_per_axis() -> None:
    # v1: s = (W/2, H/2) = (239.5, 320); fx = 2 * 239.5 = 479, fy = 1.5 * 320 = 480;
    # cx = 239.5 - 0.1 * 239.5 - 0.5 = 215.05, cy = 320 + 0.2 * 320 - 0.5 = 383.5.
    cam = intrinsics_from_ndc([2.0, 1.5], [0.1, -0.2], "ndc_norm_image_bounds", 479, 640)
    np.testing.assert_allclose([cam.fl_x, cam.fl_y, cam.cx, cam.cy], [479.0, 480.0, 215.05, 383.5], atol=1e-9)
    with pytest.raises(ValueError, match="intrinsics_format 'screen'"):
        intrinsics_from_ndc([1, 1], [0, 0], "screen", 4, 4)


def test_pose_of_the_reference_annotation() -> None:
    c2w = c2w_from_pytorch3d(REAL_R, REAL_T)
    # Camera centre: X R + T = 0 -> C = -R T (column form) = (-0.2131, 5.7856, -10.9338) (worked by hand).
    np.testing.assert_allclose(c2w[:3, 3], [-0.21305562, 5.7856158, -10.93380151], atol=1e-6)
    # The OpenCV optical axis is PyTorch3D's +Z: the third column of R; OpenCV x (right) is minus the first.
    R = np.asarray(REAL_R)
    np.testing.assert_allclose(c2w[:3, 2], R[:, 2], atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 0], -R[:, 0], atol=1e-6)
    # Any point: X_cam(OpenCV) = (X_world @ R + T) * (-1, -1, 1).
    X = np.random.default_rng(0).normal(size=(5, 3)) * 4
    w2c = invert_pose(c2w)
    np.testing.assert_allclose(X @ w2c[:3, :3].T + w2c[:3, 3], (X @ R + np.asarray(REAL_T)) * [-1, -1, 1], atol=1e-6)


def test_depth_png_holds_float16_bits(tmp_path: Path) -> None:
    bits = np.array([[0x3E00, 0x0000], [0x7C00, 0x4900]], dtype=np.uint16)  # 1.5, 0, inf, 10.0
    cv2.imwrite(str(tmp_path / "d.png"), bits)
    np.testing.assert_array_equal(decode_depth_png(tmp_path / "d.png"), [[1.5, 0.0], [np.inf, 10.0]])


# --- conversion of the fake dataset --------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("co3d")
    info = make_fake(base / "raw", n_frames=N_FRAMES)
    conv = Co3DConverter(info.root, Co3DOptions(set_list="fewview_train"))
    res = run_conversion(conv, base / "out", RunOptions(workers=1, progress=False))
    assert res.ok, [r.error for r in res.failed]
    return info.root, base / "out"


def test_scenes_splits_and_quality_filter(converted: tuple[Path, Path]) -> None:
    _, out = converted
    manifest = json.loads((out / "_meta" / "manifest.json").read_text())
    assert manifest["splits"] == {"train": [f"car_{SEQ_A}"], "val": [f"car_{SEQ_B}"]}  # SEQ_LOW: quality 0.3
    s = load_scene(out / f"car_{SEQ_A}")
    assert s.meta["scale_type"] == "relative"
    assert [f["frame_name"] for f in s.frames] == ["frame000001", "frame000002", "frame000003"]
    assert [f["source_frame"] for f in s.frames] == [0, 1, 2]
    assert s.frames[1]["timestamp"] == pytest.approx(1 / 30)
    assert s.meta["_applied_transforms"]["opencv_from_pytorch3d_camera"] == np.diag([-1.0, -1, 1, 1]).tolist()
    assert s.meta["source"]["intrinsics_conversion"]["pixel_centre_shift_px"] == -0.5


def test_poses_and_intrinsics_equal_truth(converted: tuple[Path, Path]) -> None:
    _, out = converted
    world = World.street(0)
    for si, seq in enumerate((SEQ_A, SEQ_B)):
        s = load_scene(out / f"car_{seq}")
        _, truth = orbit_poses(world, si, N_FRAMES)
        for i in range(len(s.frames)):
            np.testing.assert_allclose(s.pose(i), truth[i], atol=1e-6)
            cam = s.camera(i)
            assert (cam.w, cam.h) == (120, 160)  # W != H: a [H, W] swap fails here
            np.testing.assert_allclose([cam.fl_x, cam.fl_y, cam.cx, cam.cy],
                                       [TRUE_CAMERA.fl_x, TRUE_CAMERA.fl_y, TRUE_CAMERA.cx, TRUE_CAMERA.cy], atol=1e-6)


def test_rendered_point_through_raw_annotation_and_converted_camera(converted: tuple[Path, Path]) -> None:
    """PyTorch3D's own formulas on the raw annotation and our converted camera put a world point on one pixel."""
    raw, out = converted
    world = World.street(0)
    street, _ = orbit_poses(world, 0, N_FRAMES)
    r = world.render(TRUE_CAMERA, street[1])
    v, u = 90, 40
    assert r["valid"][v, u]
    S = co3d_from_street(car_center(world, 0))
    X = S[:3, :3] @ r["points"][v, u].astype(np.float64) + S[:3, 3]
    with gzip.open(raw / "car" / "frame_annotations.jgz", "rt") as fh:
        fa = next(a for a in json.load(fh) if a["sequence_name"] == SEQ_A and a["frame_number"] == 1)
    vp = fa["viewpoint"]
    H, W = fa["image"]["size"]
    Xc = X @ np.asarray(vp["R"]) + np.asarray(vp["T"])  # PyTorch3D camera: +X left, +Y up
    ndc = np.asarray(vp["focal_length"]) * Xc[:2] / Xc[2] + np.asarray(vp["principal_point"])
    s_iso = min(W, H) / 2
    screen = np.array([W / 2, H / 2]) - ndc * s_iso  # PyTorch3D screen: pixel centres at +0.5
    np.testing.assert_allclose(screen - 0.5, [u, v], atol=1e-3)
    s = load_scene(out / f"car_{SEQ_A}")
    w2c = invert_pose(s.pose(1))
    uv, z, _ = s.camera(1).project((w2c[:3, :3] @ X + w2c[:3, 3])[None])
    np.testing.assert_allclose(uv[0], [u, v], atol=1e-3)
    assert z[0] == pytest.approx(SCALE * float(r["depth"][v, u]), rel=1e-5)


def test_depth_equals_true_z_up_to_scale_and_masks(converted: tuple[Path, Path]) -> None:
    raw, out = converted
    world = World.street(0)
    street, _ = orbit_poses(world, 0, N_FRAMES)
    s = load_scene(out / f"car_{SEQ_A}")
    for i, f in enumerate(s.frames):
        r = world.render(TRUE_CAMERA, street[i])
        d = read_depth(s.path / f["depth"])
        dm = read_mask(s.path / f["depth_mask"])
        valid = r["valid"].copy()
        valid[MASKED_BLOCK] = False
        for vv, uu, _ in NONFINITE_PIXELS:
            valid[vv, uu] = False
        np.testing.assert_array_equal(d > 0, valid)  # masked block, non-finite pixels and sky are invalid
        np.testing.assert_array_equal(dm, valid)
        scale = np.median(d[valid] / r["depth"][valid])
        assert scale == pytest.approx(SCALE, rel=1e-3)
        np.testing.assert_allclose(d[valid], SCALE * r["depth"][valid], rtol=2e-3)  # float16 twice
        fg_raw = cv2.imread(str(raw / "car" / SEQ_A / "masks" / f"{f['frame_name']}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(read_labels(s.path / f["fg_mask"]), fg_raw)
        assert 0 < np.count_nonzero((fg_raw > 0) & (fg_raw < 255))  # soft edges survive as 8-bit values
    assert s.meta["label_tables"]["co3d_fg"] == {"0": "background", "255": "foreground"}


# --- options and errors on a copy ----------------------------------------------------------------


@pytest.fixture()
def raw_copy(converted: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(converted[0], tmp_path / "raw")
    return tmp_path / "raw"


def _edit_annotations(raw: Path, fn) -> None:  # noqa: ANN001
    p = raw / "car" / "frame_annotations.jgz"
    with gzip.open(p, "rt") as fh:
        data = json.load(fh)
    for fa in data:
        fn(fa)
    with gzip.open(p, "wt") as fh:
        json.dump(data, fh)


def _convert(raw: Path, out: Path, **opts: object) -> list[Path]:
    conv = Co3DConverter(raw, Co3DOptions(**opts))  # type: ignore[arg-type]
    dirs = []
    for scene in conv.iter_scenes():
        with SceneWriter(out, scene.name, "co3d", source=conv.source_info(scene), scale_type="relative") as w:
            conv.convert_scene(scene, w)
        dirs.append(out / scene.name)
    return dirs


def test_manyview_set_list_drops_frames_of_other_splits(raw_copy: Path, tmp_path: Path) -> None:
    res = run_conversion(Co3DConverter(raw_copy, Co3DOptions(set_list="manyview_test_0")), tmp_path / "out",
                         RunOptions(workers=1, progress=False))
    assert [(r.name, r.split, r.n_frames, r.n_dropped) for r in res.results] == [(f"car_{SEQ_A}", "train", 2, 1)]
    cov = json.loads((tmp_path / "out" / f"car_{SEQ_A}" / "coverage.json").read_text())["frames"]
    dropped = [(c["frame"], c["drop_reason"]) for c in cov if not c.get("selected", True)]
    assert dropped == [("frame000003", "set list puts it in 'test', the scene is in 'train'")]


def test_min_quality_and_scale_adjustment(raw_copy: Path, tmp_path: Path) -> None:
    def double(fa: dict) -> None:
        fa["depth"]["scale_adjustment"] = 2.0

    _edit_annotations(raw_copy, double)
    dirs = _convert(raw_copy, tmp_path / "out", min_quality=0.2)
    assert [d.name for d in dirs] == [f"car_{SEQ_A}", f"car_{SEQ_B}", f"car_{SEQ_LOW}"]
    s = load_scene(dirs[0])
    world = World.street(0)
    r = world.render(TRUE_CAMERA, orbit_poses(world, 0, N_FRAMES)[0][0])
    d = read_depth(s.path / s.frames[0]["depth"])
    ok = d > 0
    np.testing.assert_allclose(d[ok], 2 * SCALE * r["depth"][ok], rtol=2e-3)


def test_swapped_image_size_is_caught(raw_copy: Path, tmp_path: Path) -> None:
    def swap(fa: dict) -> None:
        fa["image"]["size"] = fa["image"]["size"][::-1]

    _edit_annotations(raw_copy, swap)
    msg = r"frame000001\.jpg: does not decode to image\.size \[H, W\] = \[120, 160\]"
    with pytest.raises(SourceLayoutError, match=msg):
        _convert(raw_copy, tmp_path / "out")


def test_error_messages(raw_copy: Path, tmp_path: Path) -> None:
    (raw_copy / "car" / SEQ_A / "depths" / "frame000002.jpg.geometric.png").unlink()
    with pytest.raises(SourceNotFoundError, match=r"frame000002\.jpg\.geometric\.png"):
        _convert(raw_copy, tmp_path / "o1")
    conv = Co3DConverter(raw_copy)
    assert any("frame000002.jpg.geometric.png" in p for p in conv.check_scene(next(iter(conv.iter_scenes()))))
    with pytest.raises(SourceNotFoundError, match="set_lists_fewview_dev.json"):
        list(Co3DConverter(raw_copy, Co3DOptions(set_list="fewview_dev")).iter_scenes())
    with pytest.raises(SourceNotFoundError, match="--categories apple: .* available: car"):
        list(Co3DConverter(raw_copy, Co3DOptions(categories="apple")).iter_scenes())

    def bad_format(fa: dict) -> None:
        fa["viewpoint"]["intrinsics_format"] = "screen"

    _edit_annotations(raw_copy, bad_format)
    with pytest.raises(SourceLayoutError, match=r"frame_annotations\.jgz \[.*\.viewpoint\]: malformed viewpoint"):
        _convert(raw_copy, tmp_path / "o2", categories="car")
    (raw_copy / "car" / "sequence_annotations.jgz").write_bytes(b"not gzip")
    # A category that cannot be listed does not abort the listing (issue 15): it becomes a failed scene.
    scenes = list(Co3DConverter(raw_copy).iter_scenes())
    assert [s.name for s in scenes] == ["car"]
    msg = r"sequence_annotations\.jgz: not a gzip'd JSON file"
    assert any(re.search(msg, p) for p in Co3DConverter(raw_copy).check_scene(scenes[0]))
    res = run_conversion(Co3DConverter(raw_copy), tmp_path / "o3", RunOptions(workers=1, progress=False))
    assert [(r.name, r.status) for r in res.results] == [("car", "failed")]
    assert re.search(r"SourceLayoutError: .*" + msg, res.results[0].error)
