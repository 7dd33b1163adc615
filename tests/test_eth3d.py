"""ETH3D converter against the synthetic ground truth of ``wai.synthetic.fake_eth3d``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from wai.converters import _colmap, get_converter  # noqa: E402
from wai.errors import SourceLayoutError, SourceNotFoundError  # noqa: E402
from wai.format.cameras import Camera  # noqa: E402
from wai.format.conventions import invert_pose  # noqa: E402
from wai.format.scene import SceneWriter, load_frame, load_scene  # noqa: E402
from wai.run import RunOptions, run_conversion  # noqa: E402
from wai.synthetic.fake_eth3d import make_fake  # noqa: E402
from wai.synthetic.world import World  # noqa: E402

TRAIN, TEST = "courtyard", "botanical_garden"
ETH3D = get_converter("eth3d")


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return make_fake(tmp_path_factory.mktemp("eth3d") / "raw", n_scenes=2, n_images=4)


@pytest.fixture(scope="module")
def out(fake, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    before = sorted(str(p.relative_to(fake.root)) for p in fake.root.rglob("*"))
    o = tmp_path_factory.mktemp("eth3d_out")
    res = run_conversion(ETH3D(fake.root, ETH3D.Options()), o,
                         RunOptions(workers=1, progress=False, depth_precision="float32"))
    assert res.ok, [r.error for r in res.failed]
    assert sorted(str(p.relative_to(fake.root)) for p in fake.root.rglob("*")) == before  # raw tree untouched
    return o


@pytest.fixture(scope="module")
def world(fake) -> World:  # noqa: ANN001
    return World.street(fake.truth[TRAIN]["world_seed"])


def _frames(out: Path, scene: str):  # noqa: ANN202
    sc = load_scene(out / scene)
    return sc, [f["frame_name"] for f in sc.frames]


def _expected_sparse(truth: dict, frame: str, cam: Camera, c2w: np.ndarray, min_images: int = 2) -> np.ndarray:
    """Nearest z per pixel of the points in the frame's track (observed in >= min_images images)."""
    iid = truth["frames"][frame]["image_id"]
    rows = [i for i, t in enumerate(truth["tracks"]) if iid in t and len(set(t)) >= min_images]
    w2c = invert_pose(c2w)
    pc = truth["points"][rows] @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    u = np.floor(cam.fl_x * pc[:, 0] / z + cam.cx + 0.5).astype(int)
    v = np.floor(cam.fl_y * pc[:, 1] / z + cam.cy + 0.5).astype(int)
    k = (z > 0) & (u >= 0) & (u < cam.w) & (v >= 0) & (v < cam.h)
    exp = np.full(cam.shape, np.inf)
    for uu, vv, zz in zip(u[k], v[k], z[k]):  # the test's own z-buffer, independent of wai.format.projection
        exp[vv, uu] = min(exp[vv, uu], zz)
    exp[np.isinf(exp)] = 0.0
    return exp


def test_scenes_frames_and_splits(fake, out: Path) -> None:  # noqa: ANN001
    for scene, truth in fake.truth.items():
        sc, names = _frames(out, scene)
        assert names == sorted(truth["frames"])
        assert sc.meta["scale_type"] == "metric" and sc.meta["camera_model"] == "PINHOLE"
        assert sc.meta["_applied_transforms"]["world_from_source"] == np.eye(4).tolist()
    assert (out / "_meta" / "test" / "eth3d_scene_list_test.npy").is_file()  # botanical_garden is a test scene
    assert (out / "_meta" / "train" / "eth3d_scene_list_train.npy").is_file()


def test_poses_and_intrinsics_equal_truth(fake, out: Path) -> None:  # noqa: ANN001
    for scene, truth in fake.truth.items():
        sc, names = _frames(out, scene)
        fx, fy, cx, cy = truth["und_params"]
        for name in names:
            cam = sc.camera(name)
            assert (cam.w, cam.h) == (240, 160)
            np.testing.assert_allclose([cam.fl_x, cam.fl_y, cam.cx, cam.cy], [fx, fy, cx - 0.5, cy - 0.5], atol=1e-9)
            np.testing.assert_allclose(sc.pose(name), truth["frames"][name]["c2w"], atol=1e-9)
            assert sc.frame(name)["colmap_image_id"] == truth["frames"][name]["image_id"]


def test_sparse_depth_is_exact_z_of_multi_view_points(fake, out: Path) -> None:  # noqa: ANN001
    n_filtered = 0
    for scene, truth in fake.truth.items():
        sc, names = _frames(out, scene)
        rows = {r["frame"]: r for r in json.loads((out / scene / "coverage.json").read_text())["frames"]}
        for name in names:
            fr = load_frame(sc, name)
            cam, c2w = sc.camera(name), sc.pose(name)
            exp = _expected_sparse(truth, name, cam, c2w)
            if "occlusion_mask" in fr:
                exp[fr["occlusion_mask"] == 2] = 0.0
            sp = fr["sparse_depth"]
            assert np.array_equal(sp > 0, exp > 0), name
            np.testing.assert_allclose(sp[sp > 0], exp[sp > 0], rtol=1e-6)
            assert rows[name]["n_points_projected"] >= np.count_nonzero(exp)
            # points seen by one image only must not appear
            with_single = _expected_sparse(truth, name, cam, c2w, min_images=1)
            n_filtered += int(np.count_nonzero((with_single > 0) & (sp == 0)))
            if name == truth["empty_obs"]:  # the image with an empty POINTS2D line
                assert not sp.any() and rows[name]["n_points_projected"] == 0
            else:
                assert np.count_nonzero(sp) > 20, name
    assert n_filtered > 0  # the fake exercises the >= 2 images filter


def test_ground_truth_depth_resampled_into_undistorted_camera(out: Path, world: World) -> None:
    sc, names = _frames(out, TRAIN)
    assert "ground_truth_depth" in sc.meta["source"]["depth_source"]
    for name in names:
        d = load_frame(sc, name, "depth")["depth"]
        truth = world.render(sc.camera(name), sc.pose(name))["depth"]
        valid = d > 0
        assert valid.mean() > 0.8, name  # GT minus sky, mask-2 area and 3% splat gaps
        rel = np.abs(d[valid] - truth[valid]) / np.maximum(truth[valid], 1e-6)
        assert (rel < 0.01).mean() >= 0.99, (name, (rel < 0.01).mean())


def test_occlusion_mask_removes_depth(out: Path) -> None:
    sc, names = _frames(out, TRAIN)
    meta = sc.meta
    assert meta["frame_modalities"]["occlusion_mask"]["format"] == "labels"
    table = meta["label_tables"][meta["frame_modalities"]["occlusion_mask"]["labels"]]
    assert table["0"] == "valid" and table["1"] == "masked" and table["2"] == "occluded"
    for name in names:
        fr = load_frame(sc, name)
        m = fr["occlusion_mask"]
        assert {0, 1, 2} <= set(np.unique(m).tolist()) <= {0, 1, 2, 255}
        assert not fr["depth"][m == 2].any() and not fr["sparse_depth"][m == 2].any()
        assert fr["depth"][m == 1].any()  # value 1 is kept unless --drop-mask-1
        row = next(r for r in json.loads((out / TRAIN / "coverage.json").read_text())["frames"] if r["frame"] == name)
        assert row["occluded_ratio"] == pytest.approx(np.mean(m == 2))
        assert row["masked_ratio"] == pytest.approx(np.mean(m == 1))
        assert row["sparse_depth_valid_ratio"] < 0.05 < row["valid_depth_ratio"]


def test_test_scene_depth_equals_sparse_depth(out: Path) -> None:
    sc, names = _frames(out, TEST)
    assert "sparse" in sc.meta["source"]["depth_source"]
    assert "occlusion_mask" not in sc.meta["frame_modalities"]
    for name in names:
        fr = load_frame(sc, name)
        assert np.array_equal(fr["depth"], fr["sparse_depth"]) and fr["depth"].any()


def test_jpeg_copied_unchanged(fake, out: Path) -> None:  # noqa: ANN001
    name = sorted(fake.truth[TRAIN]["frames"])[1]
    raw = fake.root / TRAIN / "images" / "dslr_images_undistorted" / f"{name}.JPG"
    assert (out / TRAIN / "images" / f"{name}.jpg").read_bytes() == raw.read_bytes()


def test_options_max_size_png_drop_mask_1(fake, tmp_path: Path, world: World) -> None:  # noqa: ANN001
    opts = ETH3D.Options(image_format="png", max_size=120, drop_mask_1=True)
    res = run_conversion(ETH3D(fake.root, opts), tmp_path, RunOptions(scenes=TRAIN, progress=False,
                                                                      depth_precision="float32"))
    assert res.ok, [r.error for r in res.failed]
    sc, names = _frames(tmp_path, TRAIN)
    for name in names:
        full = fake.truth[TRAIN]["frames"][name]["camera"]
        cam = sc.camera(name)
        assert cam == full.resized(120, 80)
        fr = load_frame(sc, name)
        assert fr["image_fname"].suffix == ".png" and fr["image"].shape == (80, 120, 3)
        m = fr["occlusion_mask"]
        assert not fr["depth"][(m == 1) | (m == 2)].any() and not fr["sparse_depth"][m == 1].any()
        d = fr["depth"]
        truth = world.render(cam, sc.pose(name))["depth"]
        valid = d > 0
        rel = np.abs(d[valid] - truth[valid]) / np.maximum(truth[valid], 1e-6)
        assert (rel < 0.01).mean() >= 0.97, (name, (rel < 0.01).mean())  # coarser pixels: more edge pixels
        exp = _expected_sparse(fake.truth[TRAIN], name, cam, sc.pose(name))
        exp[(m == 1) | (m == 2)] = 0
        np.testing.assert_allclose(fr["sparse_depth"], exp, rtol=1e-6)


def _copy_scene(fake, tmp_path: Path) -> Path:  # noqa: ANN001
    root = tmp_path / "raw"
    shutil.copytree(fake.root / TRAIN, root / TRAIN)
    return root


def _convert(root: Path, tmp_path: Path) -> None:
    conv = ETH3D(root, ETH3D.Options())
    scene = next(s for s in conv.iter_scenes() if s.name == TRAIN)
    with SceneWriter(tmp_path / "out", scene.name, "eth3d") as w:
        conv.convert_scene(scene, w)


def test_malformed_images_txt_names_file_and_line(fake, tmp_path: Path) -> None:  # noqa: ANN001
    root = _copy_scene(fake, tmp_path)
    p = root / TRAIN / "dslr_calibration_undistorted" / "images.txt"
    lines = p.read_text().splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if not ln.startswith("#"))
    parts = lines[i].split()
    parts[3] = "not_a_number"
    lines[i] = " ".join(parts) + "\n"
    p.write_text("".join(lines))
    with pytest.raises(SourceLayoutError, match=rf"dslr_calibration_undistorted/images\.txt:{i + 1}:"):
        _convert(root, tmp_path)


def test_truncated_images_txt_is_an_error(fake, tmp_path: Path) -> None:  # noqa: ANN001
    root = _copy_scene(fake, tmp_path)
    p = root / TRAIN / "dslr_calibration_undistorted" / "images.txt"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:-1]))  # drop the last POINTS2D line
    with pytest.raises(SourceLayoutError, match=r"images\.txt"):
        _convert(root, tmp_path)


def test_bad_ground_truth_size_is_an_error(fake, tmp_path: Path) -> None:  # noqa: ANN001
    root = _copy_scene(fake, tmp_path)
    gt = sorted((root / TRAIN / "ground_truth_depth" / "dslr_images").iterdir())[0]
    gt.write_bytes(gt.read_bytes()[:-4])
    with pytest.raises(SourceLayoutError, match=rf"{gt.name}: .* expected 240x160 float32"):
        _convert(root, tmp_path)


def test_check_raw_reports_missing_files_by_name(fake, tmp_path: Path) -> None:  # noqa: ANN001
    root = _copy_scene(fake, tmp_path)
    (root / TRAIN / "dslr_calibration_undistorted" / "cameras.txt").unlink()
    with pytest.raises(SourceLayoutError, match=r"dslr_calibration_undistorted/cameras\.txt"):
        run_conversion(ETH3D(root, ETH3D.Options()), tmp_path / "o", RunOptions(check_raw=True, progress=False))
    shutil.rmtree(root / TRAIN)
    shutil.copytree(fake.root / TRAIN, root / TRAIN)
    (root / TRAIN / "dslr_calibration_jpg" / "cameras.txt").unlink()
    mask = sorted((root / TRAIN / "masks_for_images" / "dslr_images").iterdir())[-1]
    mask.unlink()
    problems = ETH3D(root, ETH3D.Options()).check_scene(next(ETH3D(root, ETH3D.Options()).iter_scenes()))
    assert any("dslr_calibration_jpg/cameras.txt" in p for p in problems), problems
    assert any(mask.name in p for p in problems), problems
    assert not (tmp_path / "o").exists()  # --check-raw stops before writing anything


# --- the pycolmap wrapper ---------------------------------------------------------------------------


def test_colmap_reads_eth3d_quirks(fake) -> None:  # noqa: ANN001
    rec = _colmap.read_model(fake.root / TRAIN / "dslr_calibration_jpg")
    assert list(rec.cameras) == [0] and rec.cameras[0].model_name == "THIN_PRISM_FISHEYE"
    empty = fake.truth[TRAIN]["empty_obs"]
    im = next(i for i in rec.images.values() if empty in i.name)
    assert im.num_points2D() == 0  # the empty observation line
    with pytest.raises(SourceLayoutError, match=r"cameras\.txt \[0\]: camera 0 is THIN_PRISM_FISHEYE"):
        _colmap.to_pinhole(rec.cameras[0], fake.root / TRAIN / "dslr_calibration_jpg" / "cameras.txt")
    with pytest.raises(SourceNotFoundError, match=r"expected \S*/images/cameras\.txt"):
        _colmap.read_model(fake.root / TRAIN / "images")


def test_colmap_pixel_convention(fake) -> None:  # noqa: ANN001
    dist = _colmap.read_model(fake.root / TRAIN / "dslr_calibration_jpg").cameras[0]
    rng = np.random.default_rng(0)
    uv = rng.uniform([0, 0], [239, 159], size=(500, 2))
    rays = _colmap.cam_from_img(dist, uv)
    np.testing.assert_allclose(_colmap.img_from_cam(dist, rays * 3.0), uv, atol=1e-6)
    # The principal point (COLMAP cx, cy) is pixel (cx - 0.5, cy - 0.5) in the format's convention.
    fx, fy, cx, cy = dist.params[:4]
    np.testing.assert_allclose(_colmap.img_from_cam(dist, np.array([[0.0, 0.0, 1.0]])), [[cx - 0.5, cy - 0.5]])
    # A distortion-free COLMAP camera and its format twin map every pixel onto itself.
    pin = pycolmap.Camera.create_from_model_name(0, "PINHOLE", 1.0, 64, 48)
    pin.params = np.array([50.0, 52.0, 31.7, 24.2])
    twin = _colmap.to_pinhole(pin, "cameras.txt")
    assert (twin.cx, twin.cy) == (31.2, 23.7)
    np.testing.assert_array_equal(_colmap.nearest_lookup(pin, twin), np.arange(64 * 48))


def test_binary_model_is_read_too(fake, tmp_path: Path) -> None:  # noqa: ANN001
    root = _copy_scene(fake, tmp_path)
    folder = root / TRAIN / "dslr_calibration_undistorted"
    _colmap.read_model(folder).write_binary(str(folder))
    for n in _colmap.MODEL_FILES:
        (folder / f"{n}.txt").unlink()
    res = run_conversion(ETH3D(root, ETH3D.Options()), tmp_path / "o", RunOptions(progress=False))
    assert res.ok, [r.error for r in res.failed]
    sc, names = _frames(tmp_path / "o", TRAIN)
    for name in names:
        np.testing.assert_allclose(sc.pose(name), fake.truth[TRAIN]["frames"][name]["c2w"], atol=1e-9)
