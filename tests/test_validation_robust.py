"""wai-validate on hostile or unusual input: truncated media, paths that leave the dataset, datasets without
depth, folders of datasets, raw data, bounded JSON, huge w/h, progress output, and the statistical tests.

Scenes come from the independent writer of ``tests/_validation_fixtures.py`` (not ``SceneWriter``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import _validation_fixtures as vf
import numpy as np
import pytest

from wai.errors import PathEscapeError
from wai.format.codecs import cv2
from wai.format.scene import load_frame
from wai.synthetic.world import World
from wai.validation import Issue, Report, run_cli, validate

WORLD = World.street(0)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root holding the dense pinhole scene (5 frames, 96x72) and its _meta."""
    root = tmp_path_factory.mktemp("robust") / "out"
    vf.write_kind("dense_pinhole", root, WORLD)
    vf.write_dataset_meta(root, "synthetic", ["dense_pinhole"])
    return root


@pytest.fixture()
def root(clean: Path, tmp_path: Path) -> Path:
    """A private copy of the clean dataset root."""
    return shutil.copytree(clean, tmp_path / "out", symlinks=True)


def _meta(sd: Path) -> dict[str, Any]:
    return json.loads((sd / "scene_meta.json").read_text())


def _save(sd: Path, meta: dict[str, Any]) -> None:
    (sd / "scene_meta.json").write_text(json.dumps(meta))


def _issues(report: Report, code: str) -> list[Issue]:
    return [i for i in report.issues if i.code == code]


def _one(report: Report, code: str) -> Issue:
    found = _issues(report, code)
    assert found, f"no {code}; got {[(i.code, i.message) for i in report.issues]}"
    return found[0]


def test_clean_root_is_clean(clean: Path) -> None:
    report = validate(clean)
    assert report.ok and report.issues == [], [i.message for i in report.issues]


# --- media decoded in full -------------------------------------------------------------------------


def test_truncated_jpeg_png_and_exr_are_errors(root: Path) -> None:
    sd = root / "dense_pinhole"
    jpg = sd / "images" / "f00.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: int(len(data) * 0.6)])
    assert cv2.imread(str(jpg)) is not None  # OpenCV's imread happily returns a grey-filled picture
    meta = _meta(sd)
    png = sd / "images" / "f01.png"
    ok, buf = cv2.imencode(".png", cv2.imread(str(sd / "images" / "f01.jpg")))
    png.write_bytes(buf.tobytes()[:-30])
    meta["frames"][1]["image"] = meta["frames"][1]["file_path"] = "images/f01.png"
    _save(sd, meta)
    exr = sd / "depth" / "f02.exr"
    exr.write_bytes(exr.read_bytes()[:-200])
    report = validate(root, geometry=False)
    bad = {i.path: i for i in _issues(report, "decode_failed")}
    assert set(bad) == {"dense_pinhole/images/f00.jpg", "dense_pinhole/images/f01.png", "dense_pinhole/depth/f02.exr"}
    assert "truncated" in bad["dense_pinhole/images/f00.jpg"].message
    assert bad["dense_pinhole/depth/f02.exr"].field == "frames[f02].depth"
    assert report.exit_code == 1


# --- paths that leave the dataset -----------------------------------------------------------------


def test_symlinked_file_leaving_the_dataset_is_path_escape(root: Path, tmp_path: Path) -> None:
    sd = root / "dense_pinhole"
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(sd / "images" / "f00.jpg", outside)
    (sd / "images" / "f00.jpg").unlink()
    (sd / "images" / "f00.jpg").symlink_to(outside)
    report = validate(root)
    issue = _one(report, "path_escape")
    assert issue.severity == "error" and issue.field == "frames[f00].image"
    assert "outside" in issue.message and "images/f00.jpg" in issue.message
    # the loader refuses the same path with the same function
    with pytest.raises(PathEscapeError, match="outside"):
        load_frame(sd, "f00", modalities=["image"])


def test_symlink_inside_the_dataset_is_fine(root: Path) -> None:
    sd = root / "dense_pinhole"
    (sd / "originals").mkdir()
    shutil.move(sd / "images" / "f00.jpg", sd / "originals" / "f00.jpg")
    (sd / "images" / "f00.jpg").symlink_to(Path("..") / "originals" / "f00.jpg")
    report = validate(root)
    assert report.ok and not report.errors, [i.message for i in report.errors]


def test_absolute_and_parent_paths_are_path_escape(root: Path) -> None:
    sd = root / "dense_pinhole"
    meta = _meta(sd)
    meta["frames"][0]["depth"] = str((sd / "depth" / "f00.exr").resolve())
    meta["frames"][1]["depth"] = "../dense_pinhole/depth/f01.exr"
    _save(sd, meta)
    report = validate(root, geometry=False)
    assert {i.field for i in _issues(report, "path_escape")} == {"frames[f00].depth", "frames[f01].depth"}


def test_symlinked_scene_folder_and_meta_leaving_the_root(root: Path, tmp_path: Path) -> None:
    elsewhere = shutil.copytree(root / "dense_pinhole", tmp_path / "elsewhere" / "linked")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    report = validate(root, geometry=False)
    issue = _one(report, "path_escape")
    assert issue.path == "linked" and "not checked" in issue.message
    assert report.scenes == 1 and not any(i.path.startswith("linked/") for i in report.issues)
    # a scene_meta.json that is a link out of the dataset is not read
    sd = root / "dense_pinhole"
    shutil.copy(sd / "scene_meta.json", tmp_path / "meta.json")
    (sd / "scene_meta.json").unlink()
    (sd / "scene_meta.json").symlink_to(tmp_path / "meta.json")
    report = validate(root, geometry=False)
    assert any(i.path == "dense_pinhole/scene_meta.json" for i in _issues(report, "path_escape"))


def test_scene_list_and_covisibility_entries_are_contained(root: Path) -> None:
    np.save(root / "_meta" / "train" / "synthetic_scene_list_train.npy", np.array(["dense_pinhole", "../../etc"]))
    sd = root / "dense_pinhole"
    meta = _meta(sd)
    meta["scene_modalities"] = {"pairwise_covisibility": {"scene_key": "../../outside.npy", "format": "mmap"}}
    _save(sd, meta)
    report = validate(root, geometry=False)
    esc = _issues(report, "path_escape")
    assert {(i.path, i.field) for i in esc} == {
        ("_meta/train/synthetic_scene_list_train.npy", "../../etc"),
        ("dense_pinhole/scene_meta.json", "scene_modalities.pairwise_covisibility.scene_key")}
    assert not _issues(report, "scene_list_missing_scene")  # an escaping entry is not looked up on disk


def test_missing_scene_modality_file_is_a_warning(root: Path) -> None:
    sd = root / "dense_pinhole"
    meta = _meta(sd)
    meta["scene_modalities"] = {"pairwise_covisibility": {"scene_key": "covisibility/v0/x.npy", "format": "mmap"}}
    _save(sd, meta)
    report = validate(root, geometry=False)
    assert _one(report, "missing_scene_file").severity == "warning" and report.ok


# --- depth ------------------------------------------------------------------------------------------


def _empty_depth(sd: Path) -> None:
    for p in (sd / "depth").glob("*.exr"):
        vf.write_depth(p, np.zeros_like(vf.read_depth(p)), "float16")


def test_dataset_without_depth_is_an_error_scene_is_a_warning(root: Path) -> None:
    sd = root / "dense_pinhole"
    _empty_depth(sd)
    report = validate(root)
    issue = next(i for i in _issues(report, "no_depth") if i.severity == "error")
    assert issue.path == "." and "none of its 1 scenes" in issue.message and report.exit_code == 1
    scene = validate(sd)
    warn = _one(scene, "no_depth")
    assert warn.severity == "warning" and scene.ok and scene.exit_code == 0
    assert validate(sd, strict=True).exit_code == 1
    assert run_cli(str(sd), as_json=False, strict=True, geometry=False) == 1


def test_scene_without_depth_modality_is_a_warning(root: Path) -> None:
    sd = root / "dense_pinhole"
    meta = _meta(sd)
    del meta["frame_modalities"]["depth"]
    for fr in meta["frames"]:
        del fr["depth"]
    _save(sd, meta)
    warn = _one(validate(sd), "no_depth")
    assert warn.severity == "warning" and "no depth modality" in warn.message


# --- folders of datasets and raw data -------------------------------------------------------------


def test_folder_of_datasets_validates_each(tmp_path: Path) -> None:
    top = tmp_path / "converted"
    vf.write_kind("co3d_orbit", top / "co3d", WORLD)
    vf.write_kind("eth3d_sparse", top / "eth3d", WORLD)
    vf.write_dataset_meta(top / "eth3d", "eth3d", ["eth3d_sparse"])
    report = validate(top)
    assert report.ok and report.issues == [], [i.message for i in report.issues]
    assert report.scenes == 2 and set(report.geometry) == {"co3d/co3d_orbit", "eth3d/eth3d_sparse"}
    (top / "eth3d" / "eth3d_sparse" / "images" / "DSC_0001.jpg").unlink()
    issue = _one(validate(top, geometry=False), "missing_file")
    assert issue.path == "eth3d/eth3d_sparse/images/DSC_0001.jpg"


def _raw_kitti360(root: Path) -> Path:
    for rel in ("calibration/perspective.txt", "data_2d_raw/2013_05_28_drive_0000_sync/image_00/data_rect/x.png",
                "data_3d_raw/2013_05_28_drive_0000_sync/velodyne_points/data/0000000000.bin",
                "data_poses/2013_05_28_drive_0000_sync/poses.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"0")
    return root


def test_raw_root_gets_convert_advice_never_remove(tmp_path: Path) -> None:
    raw = _raw_kitti360(tmp_path / "KITTI-360")
    report = validate(raw)
    issue = _one(report, "no_scenes")
    assert "wai-convert kitti360" in issue.message and "separate" in issue.message
    assert all("remove" not in i.message.lower() for i in report.issues)
    assert not _issues(report, "not_a_scene")
    assert sorted(p.name for p in raw.iterdir()) == ["calibration", "data_2d_raw", "data_3d_raw", "data_poses"]


def test_raw_folder_inside_a_dataset_root(root: Path) -> None:
    _raw_kitti360(root / "kitti360_raw")
    (root / "notes").mkdir()
    report = validate(root)
    warns = {i.path: i for i in _issues(report, "not_a_scene")}
    assert set(warns) == {"kitti360_raw", "notes"} and report.ok
    assert "wai-convert kitti360" in warns["kitti360_raw"].message
    assert all("remove" not in i.message.lower() for i in report.issues)


# --- bounded JSON and untrusted sizes ---------------------------------------------------------------


def test_json_is_read_bounded(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = root / "dense_pinhole"
    (sd / "_process_log.json").write_text("[" * 100_000 + "]" * 100_000)
    issue = _one(validate(sd, geometry=False), "invalid_json")
    assert issue.path == "_process_log.json" and "nests deeper" in issue.message
    monkeypatch.setenv("WAI_MAX_JSON_MB", "0.001")
    report = validate(root, geometry=False)
    capped = {i.path for i in _issues(report, "invalid_json") if "cap" in i.message}
    assert "dense_pinhole/scene_meta.json" in capped


def test_huge_w_h_are_compared_not_allocated(root: Path) -> None:
    sd = root / "dense_pinhole"
    meta = _meta(sd)
    meta["frames"][0]["w"] = meta["frames"][0]["h"] = 10**9
    meta["frames"][0]["cx"] = meta["frames"][0]["cy"] = 10.0
    _save(sd, meta)
    report = validate(root)
    shape = _issues(report, "shape_mismatch")
    assert {i.field for i in shape} == {"frames[f00].w/h"} and len(shape) == 2  # image and depth
    assert report.geometry["dense_pinhole"]["frames_with_depth"] == 4


# --- progress ------------------------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal_and_never_with_json(clean: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(str(clean), as_json=False, strict=False, geometry=False) == 0
    assert capsys.readouterr().err == ""  # not a terminal: silent
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run_cli(str(clean), as_json=False, strict=False, geometry=False) == 0
    err = capsys.readouterr().err
    assert "5/5" in err and "frame" in err
    assert run_cli(str(clean), as_json=True, strict=False, geometry=False) == 0
    out = capsys.readouterr()
    assert out.err == "" and json.loads(out.out)["ok"] is True


# --- the statistical tests and isolated frames --------------------------------------------------------


def test_scale_fit_measures_the_depth_scale(tmp_path: Path) -> None:
    for kind in ("dense_pinhole", "co3d_orbit"):
        sd = vf.write_kind(kind, tmp_path / "s", WORLD)
        assert abs(validate(sd).geometry[kind]["scale"]["factor"] - 1.0) < 0.01
        vf.corrupt(sd, "depth_x1.1", kind)
        report = validate(sd)
        scale = report.geometry[kind]["scale"]
        assert abs(scale["factor"] - 1.1) < 0.02 and scale["failed"], scale
        issue = _one(report, "depth_scale_bias")
        assert issue.field == "" and "x1.1" in issue.message and f"all {5} frames" in issue.message


def test_first_frame_transposed_in_a_lidar_sequence_is_reported(tmp_path: Path) -> None:
    # the issue's case: 5 frames, 0.9 m forward motion, one sparse scan each, first rotation transposed
    sd = vf.write_kind("lidar_seq5", tmp_path / "k", WORLD)
    first = _meta(sd)["frames"][0]["frame_name"]
    vf.corrupt(sd, "rotation_transposed_one", "lidar_seq5")
    report = validate(sd)
    issue = _one(report, "pose_isolated")
    assert issue.field == f"frames[{first}].transform_matrix" and "transposed rotation" in issue.message
    assert report.geometry["lidar_seq5"]["isolated"] == [first] and report.exit_code == 1


def test_same_picture_at_the_same_pose_is_not_a_duplicate(tmp_path: Path) -> None:
    views, _ = vf._BUILDERS["dense_pinhole"](WORLD)
    again = vf.ViewData("f05", views[4].cam, views[4].c2w, views[4].rgb, views[4].depth, {})
    sd = vf.write_scene(tmp_path, "rep", "synthetic", [*views, again])
    report = validate(sd)
    assert not _issues(report, "duplicate_image") and report.ok, [i.message for i in report.errors]


def test_validation_is_deterministic(clean: Path) -> None:
    a = validate(clean, seed=5).to_json()
    b = validate(clean, seed=5).to_json()
    assert a == b
    with pytest.raises(ValueError, match="max_pairs"):
        validate(clean, max_pairs=-1)


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_report_paths_never_point_outside(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    sd = root / "dense_pinhole"
    (sd / "depth" / "f03.exr").unlink()
    (sd / "depth" / "f03.exr").symlink_to(tmp_path / "secret.png")
    report = validate(root)
    assert _one(report, "path_escape").field == "frames[f03].depth"
    assert not _issues(report, "extension_mismatch")  # the target was never opened


def test_non_utf8_dataset_path_validates_without_crashing(tmp_path: Path) -> None:
    """Issue 15: a path with bytes that are not UTF-8 crashed cv2.imread(str(path)) with SIGSEGV."""
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from wai.converters.synthetic import SyntheticConverter\n"
        "from wai.run import RunOptions, run_conversion\n"
        "from wai.synthetic.raw_synthetic import make_fake\n"
        "from wai.validation import validate\n"
        "raw = make_fake(Path(sys.argv[1]) / 'raw', n_scenes=1, n_frames=2).root\n"
        "base = Path(os.fsdecode(os.fsencode(sys.argv[1]) + b'/d\\xe9j\\xff'))\n"
        "base.mkdir()\n"
        "raw = Path(os.replace(raw, base / 'raw') or base / 'raw')  # the fakes write with OpenCV: move after\n"
        "assert run_conversion(SyntheticConverter(raw), base / 'out', RunOptions(progress=False)).ok\n"
        "print(validate(base / 'out').ok)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
