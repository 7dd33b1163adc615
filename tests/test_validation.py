"""Tests of ``wai.validation``: a clean synthetic dataset passes, each corruption is reported with its code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wai.errors import SceneNotFoundError
from wai.format import Camera, Modality, SceneWriter, atomic, codecs
from wai.format.codecs import cv2
from wai.synthetic.world import CLASS_NAMES, CLASSES, World, look_at
from wai.validation import REPORT_VERSION, Issue, Report, format_report, run_cli, validate
from wai.validation import geometry as geo

PINHOLE_SCENE = "street_0000"
PANO_SCENE = "pano_0000"
#: Frame whose pose/depth the corruption tests break (it looks at the +y facades, so its transposed
#: rotation looks at the -y facades, which frames f3..f5 see: the geometric check can compare them).
BAD = "f1"


def _pinhole_poses() -> list[np.ndarray]:
    poses = []
    for side in (1.0, -1.0):
        for x in (-3.0, 0.0, 3.0):
            poses.append(look_at([x, 0.5 * side, 1.6], [x + 1.5, 12.0 * side, 4.0]))
    return poses


def _write_dataset(root: Path) -> None:
    world = World.street(0)
    cam = Camera.pinhole(160, 120, 110.0, 110.0, 79.5, 59.5)
    with SceneWriter(root, PINHOLE_SCENE, "synthetic") as w:
        w.add_label_table("street", CLASS_NAMES)
        for i, T in enumerate(_pinhole_poses()):
            r = world.render(cam, T)
            mods = {"semantic": Modality("labels", r["semantic"], labels="street"),
                    "building_mask": Modality("binary", r["semantic"] == CLASSES["building"])}
            w.add_frame(f"f{i}", cam, T, image=r["rgb"], depth=r["depth"], modalities=mods)
    pano = Camera.panorama(256, 64, v_fov_deg=100.0)
    with SceneWriter(root, PANO_SCENE, "synthetic", camera_model="CYLINDRICAL") as w:
        for i, x in enumerate((-2.0, 0.0, 2.0)):
            T = look_at([x, 0.5, 1.7], [x + 10.0, 0.5, 1.7])
            r = world.render(pano, T)
            w.add_frame(f"p{i}", pano, T, image=r["rgb"], depth=r["depth"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validation") / "out"
    _write_dataset(root)
    return root


@pytest.fixture()
def scene(dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the pinhole scene to corrupt."""
    dst = tmp_path / PINHOLE_SCENE
    shutil.copytree(dataset / PINHOLE_SCENE, dst)
    return dst


def _meta(scene_dir: Path) -> dict[str, Any]:
    return json.loads((scene_dir / "scene_meta.json").read_text())


def _edit_meta(scene_dir: Path, fn: Any) -> None:
    meta = _meta(scene_dir)
    fn(meta)
    atomic.write_json(scene_dir / "scene_meta.json", meta)


def _frame(meta: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in meta["frames"] if f["frame_name"] == name)


def _codes(report: Report) -> set[str]:
    return {i.code for i in report.errors}


def _one(report: Report, code: str) -> Issue:
    found = [i for i in report.issues if i.code == code]
    assert found, f"no {code} issue; got {[(i.code, i.message) for i in report.issues]}"
    return found[0]


# --- clean data ------------------------------------------------------------------------------


def test_good_dataset_is_clean(dataset: Path) -> None:
    report = validate(dataset)
    assert report.errors == [] and report.warnings == [], [i.message for i in report.issues]
    assert report.ok and report.scenes == 2 and report.frames == 9
    for name in (PINHOLE_SCENE, PANO_SCENE):
        g = report.geometry[name]
        assert g["pairs"] >= 2 and g["skipped"] == 0
        assert g["agreement"] > 0.9 and g["min_agreement"] > 0.9


def test_single_scene_paths_are_relative_to_it(scene: Path) -> None:
    report = validate(scene)
    assert report.ok and report.scenes == 1 and report.frames == 6
    assert report.geometry[PINHOLE_SCENE]["agreement"] > 0.9
    (scene / "images" / "f2.jpg").unlink()
    issue = _one(validate(scene, geometry=False), "missing_file")
    assert issue.path == "images/f2.jpg"


def test_validate_is_deterministic(dataset: Path) -> None:
    assert validate(dataset, seed=3).to_json() == validate(dataset, seed=3).to_json()


# --- corruptions -----------------------------------------------------------------------------


def test_transposed_rotation_caught_geometrically(scene: Path) -> None:
    def transpose(meta: dict[str, Any]) -> None:
        T = np.array(_frame(meta, BAD)["transform_matrix"])
        T[:3, :3] = T[:3, :3].T
        _frame(meta, BAD)["transform_matrix"] = T.tolist()

    _edit_meta(scene, transpose)
    report = validate(scene)
    assert "rotation_not_proper" not in _codes(report)  # a transposed rotation is still proper
    issue = _one(report, "depth_reprojection")
    assert issue.severity == "error" and issue.field == f"frames[{BAD}]"
    assert "scene_meta.json" in issue.message and "transform_matrix" in issue.message
    assert report.geometry[PINHOLE_SCENE]["min_agreement"] < geo.MIN_PAIR_AGREEMENT


def test_inverted_pose_caught_geometrically(scene: Path) -> None:
    def invert(meta: dict[str, Any]) -> None:
        fr = _frame(meta, BAD)
        fr["transform_matrix"] = np.linalg.inv(np.array(fr["transform_matrix"])).tolist()

    _edit_meta(scene, invert)
    report = validate(scene)
    assert _one(report, "depth_reprojection").field == f"frames[{BAD}]"
    assert report.geometry[PINHOLE_SCENE]["min_agreement"] < 0.3


def test_scaled_depth_caught_geometrically(scene: Path) -> None:
    path = scene / "depth" / f"{BAD}.exr"
    depth = codecs.read_depth(path)
    atomic.write_bytes(path, codecs.encode_depth(depth * 1.1))
    report = validate(scene)
    issue = _one(report, "depth_reprojection")
    assert issue.field == f"frames[{BAD}]" and "depth" in issue.message
    assert report.geometry[PINHOLE_SCENE]["min_agreement"] < 0.3
    assert report.exit_code == 1


def test_scaled_panorama_depth_caught(dataset: Path, tmp_path: Path) -> None:
    pano = shutil.copytree(dataset / PANO_SCENE, tmp_path / PANO_SCENE)
    path = pano / "depth" / "p0.exr"
    atomic.write_bytes(path, codecs.encode_depth(codecs.read_depth(path) * 1.1))
    report = validate(pano)
    assert _one(report, "depth_reprojection").field == "frames[p0]"


def test_missing_image(scene: Path) -> None:
    (scene / "images" / "f2.jpg").unlink()
    report = validate(scene)
    issue = _one(report, "missing_file")
    assert issue.severity == "error" and issue.field == "frames[f2].image"
    assert "images/f2.jpg" in issue.message and "scene_meta.json" in issue.message


def test_nan_depth(scene: Path) -> None:
    path = scene / "depth" / "f0.exr"
    depth = codecs.read_depth(path).astype(np.float32)
    depth[10:12, 20:25] = np.nan
    assert cv2.imwrite(str(path), depth)
    report = validate(scene)
    issue = _one(report, "depth_nonfinite")
    assert issue.path == "depth/f0.exr" and issue.field == "frames[f0].depth"
    assert "10 depth pixels" in issue.message and "depth/f0.exr" in issue.message
    assert "depth_reprojection" not in _codes(report)  # NaN pixels are ignored by the geometric check


def test_negative_depth(scene: Path) -> None:
    path = scene / "depth" / "f0.exr"
    depth = codecs.read_depth(path)
    depth[0, 0] = -1.0
    assert cv2.imwrite(str(path), depth)
    assert _one(validate(scene, geometry=False), "depth_negative").field == "frames[f0].depth"


def test_wrong_width(scene: Path) -> None:
    _edit_meta(scene, lambda m: _frame(m, "f0").update(w=170))
    report = validate(scene)
    shape = [i for i in report.errors if i.code == "shape_mismatch"]
    assert {i.path for i in shape} == {"images/f0.jpg", "depth/f0.exr", "semantic/f0.png", "building_mask/f0.png"}
    assert all(i.field == "frames[f0].w" for i in shape)
    assert "160x120" in shape[0].message and "w=170" in shape[0].message


def test_reflection_is_not_proper(scene: Path) -> None:
    def mirror(meta: dict[str, Any]) -> None:
        T = np.array(_frame(meta, "f3")["transform_matrix"])
        T[:3, 0] *= -1.0
        _frame(meta, "f3")["transform_matrix"] = T.tolist()

    _edit_meta(scene, mirror)
    issue = _one(validate(scene, geometry=False), "rotation_not_proper")
    assert issue.field == "frames[f3].transform_matrix" and "det -1" in issue.message
    assert "scene_meta.json" in issue.message


def test_metadata_problems_all_reported(scene: Path) -> None:
    def breakit(meta: dict[str, Any]) -> None:
        meta["version"] = "0.2"
        meta["depth_type"] = "range"
        meta["scene_name"] = "other"
        _frame(meta, "f1")["frame_name"] = "f0"
        _frame(meta, "f2")["cx"] = 500.0
        _frame(meta, "f2")["fl_y"] = -3.0
        _frame(meta, "f3")["transform_matrix"][3] = [0.0, 0.0, 1.0, 1.0]
        del _frame(meta, "f4")["h"]

    _edit_meta(scene, breakit)
    report = validate(scene, geometry=False)
    fields = {(i.code, i.field) for i in report.errors}
    assert {("version_mismatch", "version"), ("depth_type_mismatch", "depth_type"),
            ("scene_name_mismatch", "scene_name"), ("duplicate_frame", "frames[f0].frame_name"),
            ("intrinsics_invalid", "frames[f2].cx"), ("intrinsics_invalid", "frames[f2].fl_y"),
            ("pose_last_row", "frames[f3].transform_matrix"), ("schema", "frames[f4].h")} <= fields
    # the specific intrinsics issue replaces the generic schema message for the same field
    assert ("schema", "frames[f2].fl_y") not in fields


def test_invalid_json_and_failed_conversion(dataset: Path, tmp_path: Path) -> None:
    bad = shutil.copytree(dataset / PINHOLE_SCENE, tmp_path / "s1")
    (bad / "scene_meta.json").write_text("{not json")
    assert _one(validate(bad), "invalid_json").path == "scene_meta.json"
    with pytest.raises(RuntimeError, match="boom"):
        with SceneWriter(tmp_path, "s2", "synthetic"):
            raise RuntimeError("boom")
    report = validate(tmp_path / "s2")
    issue = _one(report, "conversion_failed")
    assert issue.path == "_process_log.json" and "RuntimeError: boom" in issue.message


def test_mask_values_warn_and_strict(scene: Path) -> None:
    path = scene / "building_mask" / "f0.png"
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    mask[0, :4] = 128
    assert cv2.imwrite(str(path), mask)
    report = validate(scene, geometry=False)
    issue = _one(report, "mask_values")
    assert issue.severity == "warning" and report.ok and report.exit_code == 0
    strict = validate(scene, strict=True, geometry=False)
    assert not strict.ok and strict.exit_code == 1 and not strict.errors
    assert run_cli(str(scene), as_json=False, strict=False, geometry=False) == 0
    assert run_cli(str(scene), as_json=False, strict=True, geometry=False) == 1


def test_scene_lists(dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "out"
    shutil.copytree(dataset, root)
    split = root / "_meta" / "train"
    split.mkdir(parents=True)
    atomic.write_json(root / "_meta" / "manifest.json", {"converter": "synthetic"})
    atomic.write_npy(split / "synthetic_scene_list_train.npy", np.array([PINHOLE_SCENE, "gone_0001"]))
    report = validate(root, geometry=False)
    assert _one(report, "scene_list_missing_scene").field == "gone_0001"
    unlisted = _one(report, "scene_not_listed")
    assert unlisted.severity == "warning" and unlisted.path == PANO_SCENE
    (root / PINHOLE_SCENE / "scene_meta.json").unlink()
    report = validate(root, geometry=False)
    assert {"incomplete_scene", "scene_list_incomplete_scene"} <= _codes(report)


# --- API, JSON and CLI -----------------------------------------------------------------------


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(SceneNotFoundError, match="no such directory"):
        validate(tmp_path / "nope")
    assert run_cli(str(tmp_path / "nope"), as_json=False, strict=False, geometry=True) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _one(validate(empty), "no_scenes").severity == "error"


def test_json_keys_stable(scene: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (scene / "images" / "f2.jpg").unlink()
    assert run_cli(str(scene), as_json=True, strict=False, geometry=True) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"root", "ok", "n_scenes", "n_frames", "n_errors", "n_warnings", "issues", "geometry",
                        "version"}
    assert out["version"] == REPORT_VERSION and out["ok"] is False and out["n_errors"] >= 1
    assert all(set(i) == {"path", "field", "severity", "code", "message"} for i in out["issues"])
    g = out["geometry"][PINHOLE_SCENE]
    assert {"pairs", "agreement", "min_agreement", "worst_pair", "skipped", "skipped_pairs", "note",
            "frames_with_depth", "pair_details", "unpaired"} <= set(g)


def test_cli_exit_codes_and_summary(dataset: Path, scene: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(str(dataset), as_json=False, strict=False, geometry=True) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(str(dataset)) and "0 errors" in text and text.rstrip().endswith("OK")
    for i in range(6):
        (scene / "images" / f"f{i}.jpg").unlink()
    (scene / "depth" / "f0.exr").write_bytes(b"garbage")
    assert run_cli(str(scene), as_json=False, strict=False, geometry=False) == 1
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    assert lines[-1] == "FAILED" and "ERROR missing_file x6" in text and "... and 3 more" in text
    assert len(format_report(validate(scene, geometry=False), max_lines=5).splitlines()) <= 5
