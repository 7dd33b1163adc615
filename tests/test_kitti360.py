"""KITTI-360 converter against the ground truth of the fake sequence (wai.synthetic.fake_kitti360)."""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from wai.converters import _kitti360_io as kio
from wai.converters.kitti360 import Kitti360Converter, Kitti360Options
from wai.converters.sampling import allocate, bucket_of, parse_weights, stratified_sample
from wai.errors import SourceLayoutError, WaiError
from wai.format.scene import load_frame, load_scene
from wai.run import RunOptions, run_conversion
from wai.synthetic.fake_kitti360 import _LUT, SEQ, fake_truth, make_fake

TRUTH = fake_truth()
W = {"rich": 0.5, "mixed": 0.3, "road": 0.2}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake(tmp_path_factory.mktemp("k360") / "raw").root


@lru_cache(maxsize=32)
def render(cam: str, frame: int) -> dict[str, np.ndarray]:
    return TRUTH.world.render(TRUTH.camera, TRUTH.cam_to_world[cam][frame])


def convert(raw: Path, out: Path, **opts: object) -> dict[str, object]:
    """Convert with float32 depth; return {frame_name: (scene, frame dict)} and the run result."""
    conv = Kitti360Converter(raw, Kitti360Options(**{"frames_per_scene": 4, **opts}))  # type: ignore[arg-type]
    res = run_conversion(conv, out, RunOptions(progress=False, depth_precision="float32"))
    assert res.ok, [r.error for r in res.failed]
    frames = {}
    for r in res.results:
        sc = load_scene(out / r.name)
        for f in sc.frames:
            frames[f["frame_name"]] = (sc, f)
    cov = {}
    for r in res.results:
        for row in json.loads((out / r.name / "coverage.json").read_text())["frames"]:
            cov[row["frame"]] = row
    return {"res": res, "frames": frames, "cov": cov}


@pytest.fixture(scope="module")
def base(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return convert(raw, tmp_path_factory.mktemp("out") / "base", cameras="00,01")


def _fraction_within(depth: np.ndarray, truth: np.ndarray, tol: float = 0.01) -> float:
    v = depth > 0
    return float(np.mean(np.abs(depth[v] - truth[v]) <= tol * truth[v]))


# --- calibration, poses, layout ------------------------------------------------------------------


def test_poses_and_intrinsics_equal_truth(base: dict) -> None:
    frames = base["frames"]
    assert len(frames) == 2 * len(TRUTH.posed)
    for name, (_, f) in frames.items():
        fid, cam = int(name[:10]), name[-2:]
        np.testing.assert_allclose(np.array(f["transform_matrix"]), TRUTH.cam_to_world[cam][fid], atol=1e-6)
        assert (f["w"], f["h"]) == (1408, 376)
        assert f["fl_x"] == pytest.approx(552.554261) and f["cx"] == pytest.approx(682.049453)
        assert f["cy"] == pytest.approx(238.769549)
    # stereo baseline of the published P_rect_01
    T0, T1 = (np.array(frames[f"0000000251_{c}"][1]["transform_matrix"]) for c in ("00", "01"))
    assert np.linalg.norm(T1[:3, 3] - T0[:3, 3]) == pytest.approx(328.318735 / 552.554261, abs=1e-6)


def test_no_pose_frame_dropped_and_scenes_split(base: dict) -> None:
    cov = base["cov"]
    assert cov["0000000253_00"]["drop_reason"] == "no_pose" and cov["0000000253_00"]["selected"] is False
    assert cov["0000000253_01"]["drop_reason"] == "no_pose"
    res = base["res"]
    assert {(r.name, r.split) for r in res.results} == {
        (f"{SEQ}_0000000250_0000000254", "train"), (f"{SEQ}_0000000255_0000000257", "val")}
    assert res.manifest["drop_reasons"] == {"no_pose": 2}


def test_poses_txt_path_equals_cam0_to_world(raw: Path, base: dict, tmp_path: Path) -> None:
    other = convert(raw, tmp_path / "poses", cameras="00,01", pose_source="poses")
    assert set(other["frames"]) == set(base["frames"])
    for name, (_, f) in other["frames"].items():
        np.testing.assert_allclose(f["transform_matrix"], base["frames"][name][1]["transform_matrix"], atol=1e-6)
    sc = next(iter(other["frames"].values()))[0]
    assert "imu_from_rect_cam_00" in sc.meta["_applied_transforms"]
    assert sc.meta["source"]["pose_source"] == "poses"


def test_missing_calibration_key_names_file_and_key(raw: Path, tmp_path: Path) -> None:
    root = tmp_path / "k"
    shutil.copytree(raw / "calibration", root / "calibration")
    persp = root / "calibration" / "perspective.txt"
    persp.write_text("".join(ln + "\n" for ln in persp.read_text().splitlines() if not ln.startswith("P_rect_00")))
    with pytest.raises(SourceLayoutError, match=r"perspective\.txt \[P_rect_00\]: missing key"):
        kio.read_calibration(root, ["00"])
    shutil.copy(raw / "calibration" / "perspective.txt", persp)
    pose = root / "calibration" / "calib_cam_to_pose.txt"
    pose.write_text(pose.read_text().replace("image_00:", "image_0:"))
    with pytest.raises(SourceLayoutError, match=r"calib_cam_to_pose\.txt \[image_00\]: missing key"):
        kio.read_calibration(root, ["00"])
    shutil.copy(raw / "calibration" / "calib_cam_to_pose.txt", pose)
    velo = root / "calibration" / "calib_cam_to_velo.txt"
    velo.write_text(" ".join(velo.read_text().split()[:11]) + "\n")
    with pytest.raises(SourceLayoutError, match=r"calib_cam_to_velo\.txt:1: expected 12 numbers"):
        kio.read_calibration(root, ["00"])


def test_bad_pose_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "cam0_to_world.txt"
    p.write_text("250 " + " ".join(["1"] * 12) + " 0 0 0 1\n251 1 0 0\n")
    with pytest.raises(SourceLayoutError, match=r"cam0_to_world\.txt:1: .*proper rotation"):
        kio.read_pose_file(p)
    p.write_text("250 1 0 0 0 0 1 0 0 0 0 1 0\n251 1 0 0\n")
    with pytest.raises(SourceLayoutError, match=r"cam0_to_world\.txt:2: expected a frame id and 12"):
        kio.read_pose_file(p)


# --- depth ---------------------------------------------------------------------------------------


def test_depth_equals_true_z(base: dict) -> None:
    for name in ("0000000251_00", "0000000254_01", "0000000256_00"):
        sc, f = base["frames"][name]
        depth = load_frame(sc, name, ["depth"])["depth"]
        truth = render(name[-2:], int(name[:10]))["depth"]
        assert (depth > 0).mean() > 0.02
        assert _fraction_within(depth, truth) >= 0.99, name
        assert depth.max() <= 80.0 and depth[depth > 0].min() >= 0.5


def test_zbuffer_keeps_the_nearer_point(raw: Path) -> None:
    conv = Kitti360Converter(raw, Kitti360Options(cameras="00", occlusion_filter=False))
    calib = kio.read_calibration(raw, ["00"])
    poses = kio.read_pose_file(raw / "data_poses" / SEQ / "cam0_to_world.txt")
    ray = TRUTH.camera.rays(np.array([[700.0, 200.0]]), normalize=False)[0]
    velo_from_cam = np.linalg.inv(calib.rect_from_velo("00"))
    for zs in ((10.0, 20.0), (20.0, 10.0)):
        pts = np.stack([ray * z for z in zs])
        velo = pts @ velo_from_cam[:3, :3].T + velo_from_cam[:3, 3]
        depth, n = conv._depth(calib, poses, 251, "00", poses[251], velo, [])
        assert n == 2 and np.count_nonzero(depth) == 1
        assert depth[200, 700] == pytest.approx(10.0, rel=1e-6)


def test_accumulation_adds_coverage_without_wrong_depth(raw: Path, base: dict, tmp_path: Path) -> None:
    acc = convert(raw, tmp_path / "acc", cameras="00", accumulate=2)
    for name in ("0000000252_00", "0000000255_00"):
        sc, _ = acc["frames"][name]
        d_acc = load_frame(sc, name, ["depth"])["depth"]
        d_one = load_frame(base["frames"][name][0], name, ["depth"])["depth"]
        truth = render("00", int(name[:10]))["depth"]
        assert (d_acc > 0).sum() > 2.0 * (d_one > 0).sum(), name
        assert _fraction_within(d_acc, truth) >= 0.99, name
        assert acc["cov"][name]["n_points_projected"] > base["cov"][name]["n_points_projected"]
        assert acc["cov"][name]["n_scans_accumulated"] == 5


def test_occlusion_filter_removes_parallax_errors(raw: Path, base: dict, tmp_path: Path) -> None:
    off = convert(raw, tmp_path / "noocc", cameras="00", occlusion_filter=False)
    name = "0000000254_00"
    truth = render("00", 254)["depth"]
    raw_d = load_frame(off["frames"][name][0], name, ["depth"])["depth"]
    filt = load_frame(base["frames"][name][0], name, ["depth"])["depth"]
    assert _fraction_within(raw_d, truth) < 0.98 < 0.99 <= _fraction_within(filt, truth)
    assert (filt > 0).sum() > 0.9 * (raw_d > 0).sum()


# --- semantics and building filters --------------------------------------------------------------


def test_semantics_and_building_ratio(base: dict) -> None:
    cov = base["cov"]
    for name, (sc, _) in base["frames"].items():
        fid, cam = int(name[:10]), name[-2:]
        sem = load_frame(sc, name, ["semantic"])["semantic"]
        if fid == 250:  # no semantic PNG: all "unlabeled", statistics null
            assert not sem.any() and cov[name]["building_ratio"] is None and cov[name]["semantic_ratios"] is None
            continue
        truth = _LUT[render(cam, fid)["semantic"]]
        np.testing.assert_array_equal(sem, truth)
        assert cov[name]["building_ratio"] == pytest.approx(float(np.mean(truth == 11)), abs=0.01)
        assert cov[name]["sampling_bucket"] == bucket_of(cov[name]["building_ratio"])
    assert sc.meta["label_tables"]["kitti360"]["11"] == "building"
    assert sc.meta["frame_modalities"]["semantic"]["format"] == "labels"


def test_building_only(raw: Path, tmp_path: Path) -> None:
    out = convert(raw, tmp_path / "bo", cameras="00", building_only=True)
    cov = out["cov"]
    assert cov["0000000250_00"]["drop_reason"] == "no_semantics"
    written = [n for n in out["frames"]]
    assert written
    for name in written:
        sc, _ = out["frames"][name]
        depth = load_frame(sc, name, ["depth"])["depth"]
        r = render("00", int(name[:10]))
        v = depth > 0
        assert np.mean(_LUT[r["semantic"]][v] == 11) >= 0.99
        assert _fraction_within(depth, r["depth"]) >= 0.99
        assert cov[name]["building_valid_depth_pixels"] >= 2000
    filters = sc.meta["filters"]
    assert filters["building_only"] is True and filters["min_valid_depth"] == 2000
    # a threshold above every frame drops them all: the scenes are empty (not failed), say why, leave no folder
    conv = Kitti360Converter(raw, Kitti360Options(cameras="00", building_only=True, min_valid_depth=10**6))
    res = run_conversion(conv, tmp_path / "bo2", RunOptions(progress=False))
    assert res.ok and [r.status for r in res.results] == ["empty", "empty"]
    train, val = res.results
    assert (train.split, val.split) == ("train", "val")
    assert train.drop_reasons == {"no_pose": 1, "no_semantics": 1, "too_few_building_depth": 3}
    assert val.drop_reasons == {"too_few_building_depth": 3} and train.n_dropped + val.n_dropped == 8
    assert sorted(p.name for p in (tmp_path / "bo2").iterdir()) == ["_meta"]
    manifest = json.loads((tmp_path / "bo2" / "_meta" / "manifest.json").read_text())
    assert manifest["failures"] == {} and manifest["counts"]["scenes_empty"] == 2
    assert {n: e["drop_reasons"] for n, e in manifest["empty_scenes"].items()} == {
        train.name: train.drop_reasons, val.name: val.drop_reasons}
    again = run_conversion(conv, tmp_path / "bo2", RunOptions(progress=False))  # resume: nothing to redo
    assert [(r.status, r.empty) for r in again.results] == [("skipped", True), ("skipped", True)]


def test_min_building_ratio(raw: Path, base: dict, tmp_path: Path) -> None:
    ratios = {n: base["cov"][n]["building_ratio"] for n in base["frames"] if n.endswith("_00")}
    thr = float(np.median([r for r in ratios.values() if r is not None]))
    out = convert(raw, tmp_path / "mbr", cameras="00", min_building_ratio=thr)
    for name, r in ratios.items():
        row = out["cov"][name]
        if r is None:
            assert row["drop_reason"] == "no_semantics"
        elif r < thr:
            assert row["drop_reason"] == "low_building_ratio" and row["building_ratio"] == pytest.approx(r)
        else:
            assert name in out["frames"]


# --- stratified sampling -------------------------------------------------------------------------


def test_allocation_proportions_and_redistribution() -> None:
    assert allocate(100, {"rich": 500, "mixed": 500, "road": 500}, W) == (
        {"rich": 50, "mixed": 30, "road": 20}, {"rich": 50, "mixed": 30, "road": 20})
    # rich has 10: its missing 40 go to mixed and road as 30:20 -> 30+24, 20+16
    req, ach = allocate(100, {"rich": 10, "mixed": 500, "road": 500}, W)
    assert req == {"rich": 50, "mixed": 30, "road": 20} and ach == {"rich": 10, "mixed": 54, "road": 36}
    # mixed then overflows too: everything else goes to road
    assert allocate(100, {"rich": 10, "mixed": 5, "road": 500}, W)[1] == {"rich": 10, "mixed": 5, "road": 85}
    # fewer frames than requested: all are taken
    assert allocate(100, {"rich": 10, "mixed": 5, "road": 7}, W)[1] == {"rich": 10, "mixed": 5, "road": 7}
    with pytest.raises(WaiError, match="bucket-weights"):
        parse_weights("0.5,0.5", ["rich", "mixed", "road"])


def test_stratified_sample_is_deterministic_and_proportional() -> None:
    rng = np.random.default_rng(1)
    scores = {i: float(s) for i, s in enumerate(np.concatenate([rng.uniform(0.3, 1, 300), rng.uniform(0.1, 0.3, 300),
                                                                 rng.uniform(0, 0.1, 300)]))}
    a = stratified_sample(scores, 60, W, seed=3, stream=SEQ)
    assert {b: sum(a.bucket[k] == b for k in a.selected) for b in W} == {"rich": 30, "mixed": 18, "road": 12}
    assert a.selected == stratified_sample(dict(reversed(list(scores.items()))), 60, W, seed=3, stream=SEQ).selected
    assert a.selected != stratified_sample(scores, 60, W, seed=4, stream=SEQ).selected
    few = {k: v for k, v in scores.items() if v < 0.3 or k < 5}  # only 5 rich frames
    b = stratified_sample(few, 60, W, seed=0)
    assert b.report["rich"] == {"available": 5, "requested": 30, "achieved": 5}
    assert b.report["mixed"]["achieved"] == 33 and b.report["road"]["achieved"] == 22


def test_sampling_in_the_converter(raw: Path, base: dict, tmp_path: Path) -> None:
    out = convert(raw, tmp_path / "sample", cameras="00", sample=4, seed=1)
    cov = out["cov"]
    assert len(out["frames"]) == 4
    sampled = [cov[n] for n in cov if cov[n]["selected"]]
    assert all(r["sampling_bucket"] == "rich" for r in sampled)  # every labelled frame of the fake is rich
    assert sorted(r["drop_reason"] for r in cov.values() if not r["selected"]) == [
        "no_pose", "no_semantics", "not_sampled", "not_sampled"]
    summary = next(iter(out["res"].manifest["scene_summaries"].values()))["sampling"]
    assert summary["rich"] == {"available": 6, "requested": 2, "achieved": 4}
    assert summary["mixed"]["achieved"] == 0 and summary["road"]["requested"] == 1
    again = convert(raw, tmp_path / "sample2", cameras="00", sample=4, seed=1)
    assert set(again["frames"]) == set(out["frames"])
