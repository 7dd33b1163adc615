"""Bad raw input gets a clear error or a recorded drop, never a crash or silently wrong output (issue 15).

One test (or a few) per case of the issue, on small fakes of each source: damaged media, non-finite and
implausible numbers, unreadable folders, non-UTF-8 paths, paths in raw metadata that leave ``--input``, option
values that can never work; plus the real-file shapes the fakes now produce. The seeded fuzzing of the same
trees is ``tests/test_fuzz_raw.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from wai.converters import _colmap, _media, get_converter
from wai.converters import _kitti360_io as kio
from wai.converters.vkitti2 import read_colors
from wai.errors import SourceLayoutError, UsageError, WaiError
from wai.format.codecs import cv2
from wai.format.scene import load_scene
from wai.run import RunOptions, run_conversion
from wai.synthetic import get_fake

# --- helpers -------------------------------------------------------------------------------------------

#: Small fakes (the fuzz harness uses the same ones) and the options they are converted with.
FAKES: dict[str, tuple[Callable[[Path], Any], dict[str, Any]]] = {
    "kitti360": (lambda r: get_fake("kitti360")(r, n_frames=4, no_pose_index=2, n_val=1, lidar_channels=16,
                                                lidar_h_res_deg=1.0, scale=0.25), {"cameras": "00,01",
                                                                                   "frames_per_scene": 2}),
    "opv2v": (lambda r: get_fake("opv2v")(r, n_scenes=1, n_agents=2, n_timestamps=2, lidar_channels=16,
                                          lidar_h_res_deg=2.0, cam_size=(96, 72)), {"width": 128, "height": 32}),
    "eth3d": (lambda r: get_fake("eth3d")(r, n_scenes=2, n_images=3, w=96, h=64, points_per_image=30,
                                          real_shapes=True), {}),
    "co3d": (lambda r: get_fake("co3d")(r, n_frames=3, real_shapes=True), {"min_quality": 0.2}),
    "vkitti2": (lambda r: get_fake("vkitti2")(r, n_frames=2, w=124, h=38), {}),
}
K360_SEQ = "2013_05_28_drive_0000_sync"


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    base = tmp_path_factory.mktemp("raw_fakes")

    @cache
    def make(name: str) -> Any:
        return FAKES[name][0](base / name)

    return make


def copy_raw(fakes: Callable[[str], Any], name: str, dst: Path) -> Path:
    """A hard-linked copy of a fake (replace files with ``put``/``edit``, never write into them)."""
    shutil.copytree(fakes(name).root, dst, copy_function=os.link)
    return dst


def put(path: Path, data: bytes) -> None:
    """Replace a (hard-linked) file."""
    path.unlink()
    path.write_bytes(data)


def edit_text(path: Path, fn: Callable[[str], str]) -> None:
    put(path, fn(path.read_text()).encode())


def converter(name: str, root: Path, **opts: Any) -> Any:
    cls = get_converter(name)
    return cls(root, cls.Options(**{**FAKES[name][1], **opts}))


def convert(name: str, root: Path, out: Path, **opts: Any) -> Any:
    return run_conversion(converter(name, root, **opts), out, RunOptions(workers=1, progress=False))


def check_raw(name: str, root: Path, out: Path, **opts: Any) -> str:
    """The --check-raw report ('' when it finds nothing)."""
    try:
        run_conversion(converter(name, root, **opts), out, RunOptions(workers=1, progress=False, check_raw=True,
                                                                      dry_run=True))
    except SourceLayoutError as e:
        return str(e)
    return ""


def drops(out: Path, res: Any) -> dict[str, str]:
    """frame name -> drop reason over every scene of the run (finished ones from coverage.json)."""
    outd = {}
    for r in res.results:
        cov = out / r.name / "coverage.json"
        if cov.is_file():
            for row in json.loads(cov.read_text())["frames"]:
                if not row.get("selected", True):
                    outd[row["frame"]] = row["drop_reason"]
    return outd


def written(out: Path, res: Any) -> list[str]:
    return sorted(f["frame_name"] for r in res.results if r.status == "finished"
                  for f in load_scene(out / r.name).frames)


def failures(res: Any) -> list[str]:
    """First lines of the failed scenes' errors (each must be a WaiError)."""
    errs = [(r.error or "").splitlines()[0] for r in res.results if r.status == "failed"]
    names = {c.__name__ for c in _all_subclasses(WaiError)}
    assert all(e.split(":", 1)[0] in names for e in errs), errs
    return errs


def _all_subclasses(c: type) -> set[type]:
    out = {c}
    for s in c.__subclasses__():
        out |= _all_subclasses(s)
    return out


def loop(path: Path) -> None:
    """Replace a folder by a symlink loop: it exists but cannot be listed."""
    shutil.rmtree(path)
    path.symlink_to(path)


_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _OPENED is not None and event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
        a = args[0]
        if isinstance(a, (str, bytes, os.PathLike)):
            _OPENED.append(os.fsdecode(a))


sys.addaudithook(_audit)


@contextmanager
def opened_paths() -> Iterator[list[str]]:
    """Every path Python opens or lists inside the block (audit events; native libraries are not seen)."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def never_touched(paths: list[str], outside: Path) -> bool:
    o = str(outside.resolve())
    return not any(os.path.abspath(p).startswith(o) or os.path.realpath(p).startswith(o) for p in paths)


# --- media verification (the module every converter uses) -----------------------------------------------


def test_media_checks_png_and_jpeg(tmp_path: Path) -> None:
    img = (np.arange(40 * 30 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)
    png, jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    cv2.imwrite(str(png), img)
    cv2.imwrite(str(jpg), img)
    assert _media.verify_image(png, "x", fmt="png", size=(40, 30), channels=(3,), bit_depth=(8,)).size == (40, 30)
    assert _media.verify_image(jpg, "x", fmt="jpeg", size=(40, 30), channels=(3,)).fmt == "jpeg"
    data_png, data_jpg = png.read_bytes(), jpg.read_bytes()
    cases = {
        "truncated": (data_png[:-20], "truncated"), "empty": (b"", "empty"),
        "flipped": (data_png[:60] + bytes([data_png[60] ^ 1]) + data_png[61:], "CRC mismatch"),
        "trailing": (data_png + b"junk", "after its IEND"), "not png": (data_jpg, "not a PNG file"),
    }
    for data, msg in cases.values():
        put(png, data)
        with pytest.raises(SourceLayoutError, match=msg):
            _media.verify_image(png, "x", fmt="png")
        put(png, data_png)
    with pytest.raises(SourceLayoutError, match=r"a\.png: x is 40x30 pixels, but cameras\.txt says 41x30"):
        _media.verify_image(png, "x", fmt="png", size=(41, 30), size_source="cameras.txt")
    for data, msg in ((data_jpg[:-300], "EOI"), (b"", "empty"), (data_jpg[:100], "truncated"),
                      (data_jpg[:2] + b"\x00" + data_jpg[3:], "expected a marker")):
        put(jpg, data)
        with pytest.raises(SourceLayoutError, match=msg):
            _media.verify_image(jpg, "x", fmt="jpeg")
    put(jpg, data_jpg + b"\x00" * 16)  # zero padding after EOI is allowed
    assert _media.verify_image(jpg, "x", fmt="jpeg").size == (40, 30)


# --- KITTI-360 ---------------------------------------------------------------------------------------------


def _k360_img(root: Path, cam: str, frame: int) -> Path:
    return root / "data_2d_raw" / K360_SEQ / f"image_{cam}" / "data_rect" / f"{frame:010d}.png"


@pytest.mark.parametrize("damage", ["truncated", "zero", "wrong_size"])
def test_kitti360_bad_png_is_dropped_and_reported(fakes: Callable[[str], Any], tmp_path: Path, damage: str) -> None:
    root = copy_raw(fakes, "kitti360", tmp_path / "raw")
    img = _k360_img(root, "00", 251)
    data = img.read_bytes()
    new = {"truncated": data[: len(data) // 2], "zero": b"",
           "wrong_size": cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes()}[damage]
    put(img, new)
    report = check_raw("kitti360", root, tmp_path / "chk")
    assert "0000000251.png" in report, report
    res = convert("kitti360", root, tmp_path / "out")
    assert res.ok
    reason = drops(tmp_path / "out", res)["0000000251_00"]
    assert reason.startswith("bad_image: ") and "image_00/data_rect/0000000251.png" in reason, reason
    if damage == "wrong_size":
        assert "30x20 pixels, but calibration/perspective.txt S_rect_00 says 352x94" in reason
    assert "0000000251_00" not in written(tmp_path / "out", res) and "0000000251_01" in written(tmp_path / "out", res)


def test_kitti360_velodyne_empty_and_odd(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "kitti360", tmp_path / "raw")
    velo = root / "data_3d_raw" / K360_SEQ / "velodyne_points" / "data"
    put(velo / "0000000250.bin", b"")
    put(velo / "0000000251.bin", (velo / "0000000251.bin").read_bytes()[:-5])
    report = check_raw("kitti360", root, tmp_path / "chk")
    assert "0000000250.bin: Velodyne scan is empty" in report and "not a multiple of 16" in report, report
    res = convert("kitti360", root, tmp_path / "out")
    reasons = [k for r in res.results for k, n in r.drop_reasons.items() for _ in range(n)]  # empty scenes too
    assert sum(r.startswith("bad_lidar: ") and "0000000250.bin" in r and "empty" in r for r in reasons) == 2
    assert sum("0000000251.bin" in r and "not a multiple of 16" in r for r in reasons) == 2


@pytest.mark.parametrize("frame_id", ["nan", "inf", "-inf", "1e400", "2.5"])
def test_kitti360_pose_frame_id_is_a_failed_scene_not_an_abort(fakes: Callable[[str], Any], tmp_path: Path,
                                                               frame_id: str) -> None:
    root = copy_raw(fakes, "kitti360", tmp_path / "raw")
    poses = root / "data_poses" / K360_SEQ / "cam0_to_world.txt"
    edit_text(poses, lambda t: frame_id + t[t.index(" "):])
    report = check_raw("kitti360", root, tmp_path / "chk")
    assert re.search(r"cam0_to_world\.txt:1: frame id", report), report
    res = convert("kitti360", root, tmp_path / "out")
    assert [r.status for r in res.results] == ["failed"]
    assert re.search(r"SourceLayoutError: \S+cam0_to_world\.txt:1: frame id", failures(res)[0])


def test_kitti360_huge_s_rect_is_a_clear_error(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "kitti360", tmp_path / "raw")
    edit_text(root / "calibration" / "perspective.txt",
              lambda t: re.sub(r"S_rect_00: .*", "S_rect_00: 1.000000e+09 1.000000e+09", t))
    report = check_raw("kitti360", root, tmp_path / "chk")
    assert re.search(r"perspective\.txt:\d+ \[S_rect_00\]: image size", report), report
    res = convert("kitti360", root, tmp_path / "out")
    errs = failures(res)
    assert errs and all("S_rect_00" in e and "Unable to allocate" not in e for e in errs)


@pytest.mark.parametrize("what", ["pose_translation", "fx", "velo_inf", "pose_huge"])
def test_kitti360_non_finite_numbers_name_the_file(fakes: Callable[[str], Any], tmp_path: Path, what: str) -> None:
    root = copy_raw(fakes, "kitti360", tmp_path / "raw")
    cal = root / "calibration"
    poses = root / "data_poses" / K360_SEQ / "cam0_to_world.txt"

    def nth_token(t: str, line: int, k: int, new: str) -> str:
        lines = t.splitlines(keepends=True)
        toks = lines[line].split(" ")
        toks[k] = new
        lines[line] = " ".join(toks)
        return "".join(lines)

    path, pattern = {
        "pose_translation": (poses, r"cam0_to_world\.txt:2: pose matrix: value 4 is nan"),
        "pose_huge": (poses, r"cam0_to_world\.txt:2: translation .* beyond the plausible"),
        "fx": (cal / "perspective.txt", r"perspective\.txt:\d+ \[P_rect_00\]: values: value 1 is nan"),
        "velo_inf": (cal / "calib_cam_to_velo.txt", r"calib_cam_to_velo\.txt:1: values: value 4 is inf"),
    }[what]
    if what in ("pose_translation", "pose_huge"):
        edit_text(poses, lambda t: nth_token(t, 1, 4, "nan" if what == "pose_translation" else "1e9"))
    elif what == "fx":
        edit_text(path, lambda t: re.sub(r"P_rect_00: \S+", "P_rect_00: nan", t))
    else:
        edit_text(path, lambda t: nth_token(t, 0, 3, "inf"))
    assert re.search(pattern, check_raw("kitti360", root, tmp_path / "chk")), pattern
    res = convert("kitti360", root, tmp_path / "out")
    errs = failures(res)
    assert errs and all(re.search(pattern, e) for e in errs), errs


def test_kitti360_unreadable_image_folder_drops_with_reason(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "kitti360", tmp_path / "raw")
    loop(root / "data_2d_raw" / K360_SEQ / "image_01" / "data_rect")
    assert "image_01/data_rect: image folder of camera 01 is unreadable" in check_raw("kitti360", root,
                                                                                        tmp_path / "chk")
    res = convert("kitti360", root, tmp_path / "out")
    d = drops(tmp_path / "out", res)
    cam01 = {k: v for k, v in d.items() if k.endswith("_01") and v != "no_pose"}
    assert len(cam01) == 3 and all(v.startswith("no_image: ") and "unreadable" in v for v in cam01.values()), d
    assert all(n.endswith("_00") for n in written(tmp_path / "out", res))


def test_kitti360_broken_sequence_does_not_stop_the_others(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "kitti360", tmp_path / "raw")
    other = "2013_05_28_drive_0002_sync"
    for sub in ("data_2d_raw", "data_3d_raw", "data_poses"):
        shutil.copytree(root / sub / K360_SEQ, root / sub / other, copy_function=os.link)
    put(root / "data_poses" / other / "cam0_to_world.txt", b"250 not a pose\n")
    res = convert("kitti360", root, tmp_path / "out")
    by_status = {r.name: r.status for r in res.results}
    assert by_status[other] == "failed" and sum(s == "finished" for s in by_status.values()) == 2, by_status
    assert "cam0_to_world.txt:1" in failures(res)[0]


def test_kitti360_real_pose_line_parses(tmp_path: Path) -> None:
    # Mixed fixed/scientific notation, last row partly integers, trailing space (as real cam0_to_world.txt).
    line = ("700 -0.940061 -2.932256e-02 0.339745 -1.402337e+03 3.117703e-02 -0.999514 0.000000e+00 3.101234e+03 "
            "0.339580 1.059223e-02 0.940518 115.204000 0.000000 0 0.000000 1 \n")
    p = tmp_path / "cam0_to_world.txt"
    p.write_text(line)
    T = kio.read_pose_file(p)[700]
    np.testing.assert_allclose(T[:3, 3], [-1402.337, 3101.234, 115.204])
    assert T[0, 1] == pytest.approx(-2.932256e-02)
    p.write_text(line.rstrip("\n"))  # cut short: its last number could have lost digits
    with pytest.raises(SourceLayoutError, match="does not end with a newline"):
        kio.read_pose_file(p)


def test_kitti360_fake_writes_real_style_pose_lines(fakes: Callable[[str], Any]) -> None:
    first = (fakes("kitti360").root / "data_poses" / K360_SEQ / "cam0_to_world.txt").read_text().splitlines()[0]
    assert first.endswith(" 0.000000 0 0.000000 1 ") and re.search(r"\de[-+]\d\d", first), first


def test_kitti360_validate_options(fakes: Callable[[str], Any]) -> None:
    root = fakes("kitti360").root
    for opts in ({"cameras": "02"}, {"frames_per_scene": 0}, {"min_depth": 5.0, "max_depth": 1.0},
                 {"max_depth": float("nan")}, {"min_building_ratio": 1.5}, {"bucket_weights": "1,x,2"},
                 {"sequences": "../x"}):
        with pytest.raises(UsageError):
            converter("kitti360", root, **opts).validate_options()


# --- OPV2V ---------------------------------------------------------------------------------------------------


def _opv_agent(root: Path, agent: str = "1732") -> Path:
    return root / "train" / "2021_01_01_00_00_00" / agent


def test_opv2v_camera_png_of_another_size_is_refused(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "opv2v", tmp_path / "raw")
    img = _opv_agent(root) / "000069_camera2.png"
    put(img, cv2.imencode(".png", np.zeros((36, 48, 3), np.uint8))[1].tobytes())  # half size
    pattern = (r"000069_camera2\.png: OPV2V camera image is 48x36 pixels, but 000069\.yaml camera2\.intrinsic "
               r"\(cx = W/2, cy = H/2\) says 96x72")
    assert re.search(pattern, check_raw("opv2v", root, tmp_path / "chk"))
    res = convert("opv2v", root, tmp_path / "out")
    assert re.search(pattern, failures(res)[0])


def test_opv2v_unreadable_agent_folder_drops_with_reason(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "opv2v", tmp_path / "raw")
    loop(_opv_agent(root, "2056"))
    assert "2056: agent folder is unreadable" in check_raw("opv2v", root, tmp_path / "chk")
    res = convert("opv2v", root, tmp_path / "out")
    d = drops(tmp_path / "out", res)
    assert sorted(d) == ["000069_2056", "000071_2056"] and all("unreadable" in v for v in d.values()), d
    assert written(tmp_path / "out", res) == ["000069_1732", "000071_1732"]
    assert load_scene(tmp_path / "out" / res.results[0].name).frames[0]["is_ego"] is True


@pytest.mark.parametrize("key", ["lidar_pose", "ego_speed", "intrinsic"])
def test_opv2v_non_finite_yaml_numbers(fakes: Callable[[str], Any], tmp_path: Path, key: str) -> None:
    root = copy_raw(fakes, "opv2v", tmp_path / "raw")
    y = _opv_agent(root) / "000071.yaml"
    d = yaml.safe_load(y.read_text())
    if key == "lidar_pose":
        d["lidar_pose"][1] = float("nan")
    elif key == "ego_speed":
        d["ego_speed"] = float("inf")
    else:
        d["camera1"]["intrinsic"][0][0] = float("nan")
    put(y, yaml.safe_dump(d, default_flow_style=False).encode())
    where = {"lidar_pose": r"\[lidar_pose\]", "ego_speed": r"\[ego_speed\]", "intrinsic": r"\[camera1\.intrinsic\]"}
    pattern = r"000071\.yaml " + where[key] + r": .*(nan|inf)"
    assert re.search(pattern, check_raw("opv2v", root, tmp_path / "chk"))
    assert re.search(pattern, failures(convert("opv2v", root, tmp_path / "out"))[0])


@pytest.mark.parametrize("opts", [{"width": 0}, {"height": 1}, {"v_fov_deg": 200.0}, {"v_center_deg": 95.0},
                                  {"wall_radius": -1.0}, {"fill_radius_deg": float("nan")},
                                  {"depth_root": "/nonexistent/x"}])
def test_opv2v_options_that_can_never_work(fakes: Callable[[str], Any], tmp_path: Path,
                                           opts: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        convert("opv2v", fakes("opv2v").root, tmp_path / "out", **opts)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_opv2v_compatible_1920x1080_cameras_and_extra_keys(tmp_path: Path) -> None:
    info = get_fake("opv2v")(tmp_path / "raw", n_scenes=1, n_agents=1, n_timestamps=1, lidar_channels=16,
                             lidar_h_res_deg=2.0, cam_size=(1920, 1080))
    y = yaml.safe_load((info.root / "train" / "2021_01_01_00_00_00" / "1732" / "000069.yaml").read_text())
    assert y["RSU"] is False and y["walkers"] and isinstance(next(iter(y["vehicles"].values()))["color"], str)
    for opts in ({}, {"also_pinhole": True}):
        res = convert("opv2v", info.root, tmp_path / f"out{len(opts)}", **opts)
        assert res.ok, failures(res)
    sc = load_scene(tmp_path / "out1" / "2021_01_01_00_00_00_pinhole")
    f = sc.frames[0]
    assert (f["w"], f["h"], f["cx"], f["cy"]) == (1920, 1080, 959.5, 539.5)


# --- ETH3D -----------------------------------------------------------------------------------------------------

REAL_UND_CAMERA = "0 PINHOLE 6220 4141 3430.27 3429.23 3119.2 2057.75\n"
REAL_DIST_CAMERA = ("THIN_PRISM_FISHEYE 6048 4032 3411.42 3410.02 3041.29 2014.07 0.21047 0.21102 -5.36231e-06 "
                    "0.00051541 -0.158023 0.406856 -8.46499e-05 0.000861313\n")
REAL_IMAGE = "14 0.554619 0.524856 -0.452905 0.460219 -0.173888 0.236895 1.27596 {cam} {name}\n"


def test_eth3d_real_lines_parse(tmp_path: Path) -> None:
    """The real pipes lines: the undistorted camera has its own size and focal length; dslr_calibration_jpg has
    two cameras, the image line uses camera 1 with a negative qw (the same rotation); COLMAP's header counts."""
    pytest.importorskip("pycolmap")
    und, dist = tmp_path / "und", tmp_path / "jpg"
    for d in (und, dist):
        d.mkdir()
        (d / "points3D.txt").write_text("# 3D point list with one line of data per point:\n"
                                        "# Number of points: 0, mean track length: 0\n")
    (und / "cameras.txt").write_text("# Number of cameras: 1\n" + REAL_UND_CAMERA)
    (dist / "cameras.txt").write_text("# Number of cameras: 2\n0 " + REAL_DIST_CAMERA + "1 " + REAL_DIST_CAMERA)
    header = "# Number of images: 1, mean observations per image: 557.643\n"
    (und / "images.txt").write_text(header + REAL_IMAGE.format(cam=0, name="dslr_images_undistorted/DSC_0647.JPG")
                                    + " 2362.39 248.498 -1 1784.7 268.254 -1\n")
    neg = REAL_IMAGE.replace("14 0.554619 0.524856 -0.452905 0.460219", "14 -0.554619 -0.524856 0.452905 -0.460219")
    (dist / "images.txt").write_text(header + neg.format(cam=1, name="dslr_images/DSC_0647.JPG") + "\n")
    ru, rd = _colmap.read_model(und), _colmap.read_model(dist)
    cam = _colmap.to_pinhole(ru.cameras[0], und / "cameras.txt")
    assert (cam.w, cam.h, cam.fl_x, cam.fl_y) == (6220, 4141, 3430.27, 3429.23)
    assert (cam.cx, cam.cy) == pytest.approx((3118.7, 2057.25))
    assert rd.images[14].camera_id == 1 and (rd.cameras[1].width, rd.cameras[1].height) == (6048, 4032)
    np.testing.assert_allclose(_colmap.cam_to_world(rd.images[14]), _colmap.cam_to_world(ru.images[14]), atol=1e-12)


def test_eth3d_real_shapes_fake_converts_exactly(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    fake = fakes("eth3d")
    res = convert("eth3d", fake.root, tmp_path / "out")
    assert res.ok, failures(res)
    for scene, truth in fake.truth.items():
        sc = load_scene(tmp_path / "out" / scene)
        for f in sc.frames:
            cam = truth["frames"][f["frame_name"]]["camera"]
            assert (f["w"], f["h"]) == (cam.w, cam.h) == (99, 66)  # 6220x4141 scaled; the distorted one is 96x64
            assert (f["fl_x"], f["cx"]) == pytest.approx((cam.fl_x, cam.cx))
            np.testing.assert_allclose(sc.pose(f["frame_name"]), truth["frames"][f["frame_name"]]["c2w"], atol=1e-9)


def test_eth3d_distorted_image_in_the_undistorted_folder_is_refused(fakes: Callable[[str], Any],
                                                                    tmp_path: Path) -> None:
    root = copy_raw(fakes, "eth3d", tmp_path / "raw")
    sd = root / "courtyard" / "images"
    name = sorted((sd / "dslr_images").iterdir())[0].name
    put(sd / "dslr_images_undistorted" / name, (sd / "dslr_images" / name).read_bytes())  # same name, 96x64
    pattern = rf"{name}: ETH3D undistorted image is 96x64 pixels, but dslr_calibration_undistorted/cameras\.txt " \
              r"\(camera 0\) says 99x66"
    assert re.search(pattern, check_raw("eth3d", root, tmp_path / "chk"))
    res = convert("eth3d", root, tmp_path / "out")
    assert {r.name: r.status for r in res.results} == {"courtyard": "failed", "botanical_garden": "finished"}
    assert re.search(pattern, failures(res)[0])


@pytest.mark.parametrize("name", ["../../../outside/X.JPG", "/ABS/outside/X.JPG"])
def test_eth3d_image_name_outside_input_is_refused(fakes: Callable[[str], Any], tmp_path: Path, name: str) -> None:
    root = copy_raw(fakes, "eth3d", tmp_path / "data" / "raw")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(next((root / "courtyard" / "images" / "dslr_images_undistorted").iterdir()), outside / "X.JPG")
    name = name.replace("/ABS/outside", str(outside))
    images = root / "courtyard" / "dslr_calibration_undistorted" / "images.txt"
    edit_text(images, lambda t: re.sub(r"dslr_images_undistorted/DSC_0287\.JPG", name, t))
    with opened_paths() as seen:
        report = check_raw("eth3d", root, tmp_path / "chk")
        res = convert("eth3d", root, tmp_path / "out")
    assert re.search(r"images\.txt \[image \d+ NAME\]: path .* leaves", report), report
    assert re.search(r"PathEscapeError: .*images\.txt \[image \d+ NAME\]", failures(res)[0])
    assert never_touched(seen, outside), [p for p in seen if "outside" in p]


# --- Co3D ------------------------------------------------------------------------------------------------------


def _edit_annotations(root: Path, fn: Callable[[dict[str, Any]], None], seq_index: int = 0) -> None:
    p = root / "car" / "frame_annotations.jgz"
    data = json.loads(gzip.decompress(p.read_bytes()))
    seqs = sorted({fa["sequence_name"] for fa in data})
    fa = next(fa for fa in data if fa["sequence_name"] == seqs[seq_index])
    fn(fa)
    put(p, gzip.compress(json.dumps(data).encode()))


@pytest.mark.parametrize("key", ["image", "depth", "mask", "depth_mask"])
@pytest.mark.parametrize("style", ["dotdot", "absolute"])
def test_co3d_paths_outside_input_are_refused(fakes: Callable[[str], Any], tmp_path: Path, key: str,
                                              style: str) -> None:
    root = copy_raw(fakes, "co3d", tmp_path / "data" / "raw")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(root / "car" / "101_11758_21048" / "images" / "frame000001.jpg", outside / "frame000001.jpg")
    bad = "../../outside/frame000001.jpg" if style == "dotdot" else str(outside / "frame000001.jpg")

    def edit(fa: dict[str, Any]) -> None:
        {"image": fa["image"], "depth": fa["depth"], "mask": fa["mask"]}.get(key, fa["depth"])[
            "mask_path" if key == "depth_mask" else "path"] = bad

    _edit_annotations(root, edit)
    with opened_paths() as seen:
        report = check_raw("co3d", root, tmp_path / "chk")
        res = convert("co3d", root, tmp_path / "out")
    entry = {"image": "image.path", "depth": "depth.path", "mask": "mask.path", "depth_mask": "depth.mask_path"}[key]
    pattern = rf"frame_annotations\.jgz \[101_11758_21048/0\.{re.escape(entry)}\]: path .* leaves"
    assert re.search(pattern, report), report
    status = {r.name: r.status for r in res.results}
    assert status["car_101_11758_21048"] == "failed" and status["car_102_11950_20630"] == "finished"
    assert re.search("PathEscapeError: .*" + pattern, failures(res)[0])
    assert never_touched(seen, outside)


@pytest.mark.parametrize("field", ["T", "focal_length", "frame_timestamp", "principal_point", "image.size"])
def test_co3d_non_finite_numbers_name_the_key(fakes: Callable[[str], Any], tmp_path: Path, field: str) -> None:
    root = copy_raw(fakes, "co3d", tmp_path / "raw")

    def edit(fa: dict[str, Any]) -> None:
        if field == "frame_timestamp":
            fa["frame_timestamp"] = float("nan")
        elif field == "image.size":
            fa["image"]["size"] = [float("inf"), 120]
        else:
            fa["viewpoint"][field][0] = float("nan")

    _edit_annotations(root, edit)
    key = field if field in ("frame_timestamp", "image.size") else f"viewpoint.{field}"
    pattern = rf"frame_annotations\.jgz \[101_11758_21048/0\.{re.escape(key)}\]: .*(nan|inf)"
    assert re.search(pattern, check_raw("co3d", root, tmp_path / "chk"))
    assert re.search(pattern, failures(convert("co3d", root, tmp_path / "out"))[0])


def test_co3d_check_raw_with_a_depth_that_is_not_an_object(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "co3d", tmp_path / "raw")
    _edit_annotations(root, lambda fa: fa.update(depth=5))
    conv = converter("co3d", root)
    problems = conv.check_scene(next(s for s in conv.iter_scenes() if s.name == "car_101_11758_21048"))
    assert any(re.search(r"\[101_11758_21048/0\.depth\]: expected an object or null, got int", p) for p in problems)


def test_co3d_real_annotation_shape(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    """frame_number 1 pairs with frame000001.jpg, frame_timestamp 0.0, v1 meta.frame_splits with ndc_isotropic."""
    fake = fakes("co3d")
    data = json.loads(gzip.decompress((fake.root / "car" / "frame_annotations.jgz").read_bytes()))
    fa = next(fa for fa in data if fa["sequence_name"] == "102_11950_20630")
    assert fa["frame_number"] == 1 and fa["image"]["path"].endswith("frame000001.jpg")
    assert fa["frame_timestamp"] == 0.0 and fa["meta"]["frame_splits"] and fa["camera_name"] is None
    assert fa["viewpoint"]["intrinsics_format"] == "ndc_isotropic"
    res = convert("co3d", fake.root, tmp_path / "out")
    assert res.ok, failures(res)
    sc = load_scene(tmp_path / "out" / "car_102_11950_20630")
    assert [(f["frame_name"], f["source_frame"], f["timestamp"]) for f in sc.frames][0] == ("frame000001", 1, 0.0)


def test_co3d_broken_category_does_not_stop_the_others(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "co3d", tmp_path / "raw")
    shutil.copytree(root / "car", root / "apple", copy_function=os.link)
    put(root / "apple" / "sequence_annotations.jgz", b"\x1f\x8b broken")
    res = convert("co3d", root, tmp_path / "out")
    status = {r.name: r.status for r in res.results}
    assert status["apple"] == "failed" and status["car_101_11758_21048"] == "finished", status
    assert "apple/sequence_annotations.jgz: not a gzip'd JSON file" in failures(res)[0]


def test_co3d_truncated_jpeg_is_reported(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "co3d", tmp_path / "raw")
    img = root / "car" / "101_11758_21048" / "images" / "frame000002.jpg"
    put(img, img.read_bytes()[:-100])
    pattern = r"frame000002\.jpg: Co3D image is truncated or corrupt: it does not end with the JPEG EOI marker"
    assert re.search(pattern, check_raw("co3d", root, tmp_path / "chk"))
    assert re.search(pattern, failures(convert("co3d", root, tmp_path / "out"))[0])


# --- VKITTI2 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["extrinsic", "intrinsic"])
def test_vkitti2_non_finite_rows(fakes: Callable[[str], Any], tmp_path: Path, table: str) -> None:
    root = copy_raw(fakes, "vkitti2", tmp_path / "raw")
    p = root / "Scene01" / "clone" / f"{table}.txt"

    def nan_first_value(text: str) -> str:  # the row of frame 1, camera 0: its first value becomes nan
        lines = text.splitlines(keepends=True)
        k = next(i for i, ln in enumerate(lines) if ln.startswith("1 0 "))
        toks = lines[k].split(" ")
        toks[2] = "nan"
        lines[k] = " ".join(toks)
        return "".join(lines)

    edit_text(p, nan_first_value)
    pattern = rf"{table}\.txt:\d+: values: value 1 is nan; expected finite numbers"
    assert re.search(pattern, check_raw("vkitti2", root, tmp_path / "chk"))
    res = convert("vkitti2", root, tmp_path / "out")
    assert {r.name: r.status for r in res.results} == {"Scene01_clone": "failed", "Scene02_15-deg-left": "finished"}
    assert re.search(pattern, failures(res)[0])


@pytest.mark.parametrize("damage", ["truncated", "zero", "wrong_size"])
def test_vkitti2_bad_jpeg(fakes: Callable[[str], Any], tmp_path: Path, damage: str) -> None:
    root = copy_raw(fakes, "vkitti2", tmp_path / "raw")
    img = root / "Scene01" / "clone" / "frames" / "rgb" / "Camera_1" / "rgb_00001.jpg"
    data = img.read_bytes()
    put(img, {"truncated": data[:-50], "zero": b"",
              "wrong_size": cv2.imencode(".jpg", np.zeros((19, 62, 3), np.uint8))[1].tobytes()}[damage])
    report = check_raw("vkitti2", root, tmp_path / "chk")
    assert "Camera_1/rgb_00001.jpg" in report, report
    assert "Camera_1/rgb_00001.jpg" in failures(convert("vkitti2", root, tmp_path / "out"))[0]


def test_vkitti2_real_colors_table(fakes: Callable[[str], Any]) -> None:
    table, keys, ids = read_colors(fakes("vkitti2").root / "Scene01" / "clone" / "colors.txt")
    assert len(keys) == 15 and table[0] == "undefined" and table[13] == "Car" and table[14] == "Van"
    assert int(ids[list(keys).index(0)]) == 0  # Undefined 0 0 0


def test_vkitti2_unreadable_camera_folder_drops_its_frames(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "vkitti2", tmp_path / "raw")
    loop(root / "Scene01" / "clone" / "frames" / "rgb" / "Camera_1")
    assert "Camera_1 is unreadable" in check_raw("vkitti2", root, tmp_path / "chk")
    res = convert("vkitti2", root, tmp_path / "out")
    d = drops(tmp_path / "out", res)
    assert sorted(d) == ["00000_cam1", "00001_cam1"] and all("unreadable" in v for v in d.values())


@pytest.mark.parametrize("opts", [{"cameras": "2"}, {"max_depth": -1.0}, {"variations": "../x"}])
def test_vkitti2_options_that_can_never_work(fakes: Callable[[str], Any], tmp_path: Path,
                                             opts: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        convert("vkitti2", fakes("vkitti2").root, tmp_path / "out", **opts)


# --- every source --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAKES))
def test_non_utf8_input_path_converts(fakes: Callable[[str], Any], tmp_path: Path, name: str) -> None:
    """``\\xe9`` in --input: read byte-safely (cv2.imread(str(path)) died with SIGSEGV on such paths)."""
    root = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    copy_raw(fakes, name, root)
    res = convert(name, root, tmp_path / "out")
    assert res.ok, failures(res)
    ref = convert(name, fakes(name).root, tmp_path / "ref")
    assert written(tmp_path / "out", res) == written(tmp_path / "ref", ref)


@pytest.mark.parametrize("name", sorted(FAKES))
def test_fakes_write_into_a_non_utf8_folder(tmp_path: Path, name: str) -> None:
    """The fakes (what `wai-demo DIR` writes) and the conversion write byte-safely: cv2.imwrite(str(path)) died
    with SIGSEGV on a folder name that is not valid UTF-8."""
    raw = Path(os.fsdecode(bytes(tmp_path) + b"/d\xe9mo_raw"))
    FAKES[name][0](raw)
    res = convert(name, raw, Path(os.fsdecode(bytes(tmp_path) + b"/d\xe9mo_out")))
    assert res.ok and res.results, failures(res)


def test_non_utf8_scene_folder_is_a_failed_scene(fakes: Callable[[str], Any], tmp_path: Path) -> None:
    root = copy_raw(fakes, "eth3d", tmp_path / "raw")
    os.rename(root / "botanical_garden", Path(os.fsdecode(bytes(root) + b"/botanical\xffgarden")))
    assert "characters outside [A-Za-z0-9_.-]" in check_raw("eth3d", root, tmp_path / "chk")
    res = convert("eth3d", root, tmp_path / "out")
    assert {r.name: r.status for r in res.results} == {"botanical_garden": "failed", "courtyard": "finished"}
    assert "rename it" in failures(res)[0]


@pytest.mark.parametrize("name", sorted(FAKES))
def test_layout_hint_in_the_no_scenes_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty").mkdir()
    cls = get_converter(name)
    assert cls.layout_hint
    with pytest.raises(WaiError, match="expected " + re.escape(cls.layout_hint[:20])):
        run_conversion(cls(tmp_path / "empty"), tmp_path / "out", RunOptions(workers=1, progress=False))


def test_iter_scenes_errors_are_wai_errors_naming_the_file(tmp_path: Path) -> None:
    """When the listing itself cannot proceed it raises a WaiError naming the folder, not an OSError."""
    root = tmp_path / "k360"
    (root / "data_2d_raw").mkdir(parents=True)
    loop(root / "data_2d_raw")
    with pytest.raises(SourceLayoutError, match=r"data_2d_raw: KITTI-360 data_2d_raw folder .* is unreadable"):
        list(get_converter("kitti360")(root).iter_scenes())
