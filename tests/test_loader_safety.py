"""The loader never reads outside a dataset root and never sizes anything from unchecked w/h; clear errors for
wrong splits and swapped (weight, path) pairs; batch grouping; the panorama resolution preset; a fast --help.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from wai.errors import PathEscapeError, SceneNotFoundError, SchemaError  # noqa: E402
from wai.format.cameras import Camera  # noqa: E402
from wai.format.conventions import CYLINDRICAL, PINHOLE  # noqa: E402
from wai.loaders import LoaderConfigError, ViewBatchSampler, WAIDataset  # noqa: E402
from wai.loaders.dataset import RESOLUTION_PRESETS  # noqa: E402
from wai.loaders.transforms import crop_resize_plan  # noqa: E402
from wai.synthetic.scenes import make_camera, write_scene, write_scene_lists, write_street_dataset  # noqa: E402
from wai.synthetic.world import look_at  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KW = dict(num_views=2, resolution=(16, 12), sampling="random")


def _scene(root: Path, name: str = "s") -> Path:
    cam = make_camera(PINHOLE, (16, 12))
    write_scene(root, name, cam, [look_at([0, 0, 1.7], [0, 12, 3]), look_at([1, 0, 1.7], [1, 12, 3])])
    write_scene_lists(root, {"train": [name]})
    return root / name


def _edit_frame(scene: Path, **changes) -> None:
    p = scene / "scene_meta.json"
    meta = json.loads(p.read_text())
    meta["frames"][0].update(changes)
    p.write_text(json.dumps(meta))


@pytest.mark.parametrize("bad", ["../outside.jpg", "/etc/hostname", "images/../../outside.jpg"])
def test_frame_path_leaving_the_root_is_refused(tmp_path, bad):
    (tmp_path / "outside.jpg").write_bytes(b"not read")
    root = tmp_path / "root"
    scene = _scene(root)
    _edit_frame(scene, image=bad, file_path=bad)
    ds = WAIDataset(root, **KW)
    with pytest.raises(PathEscapeError, match=r"scene_meta\.json \[frames\[0\]\.image\]"):
        ds[0]  # two frames, two views: frame 0 is always loaded


def test_symlink_to_a_file_outside_is_refused(tmp_path):
    outside = tmp_path / "outside.jpg"
    root = tmp_path / "root"
    scene = _scene(root)
    img = scene / "images" / "00000.jpg"
    outside.write_bytes(img.read_bytes())
    img.unlink()
    img.symlink_to(outside)
    ds = WAIDataset(root, num_views=2, resolution=(16, 12), sampling="sequential")
    with pytest.raises(PathEscapeError, match="outside"):
        ds[0]
    inside = scene / "images" / "00001.jpg"  # a symlink that stays inside the root is fine
    img.unlink()
    img.symlink_to(inside)
    assert len(ds[0]) == 2


def test_symlinked_scene_folder_and_scene_list_entries_are_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _scene(elsewhere, "real")
    root = tmp_path / "root"
    _scene(root, "s")
    (root / "evil").symlink_to(elsewhere / "real", target_is_directory=True)
    write_scene_lists(root, {"train": ["s", "evil"]})
    with pytest.raises(PathEscapeError, match=r"scene_list_train\.npy \[entry 0\]: scene name 'evil'"):
        WAIDataset(root, **KW)  # the list is sorted: ['evil', 's']
    for entry in ("../elsewhere/real", "/abs/scene"):
        np.save(root / "_meta" / "train" / "synthetic_street_scene_list_train.npy", np.array(["s", entry]))
        with pytest.raises(PathEscapeError, match=r"scene_list_train\.npy \[entry 1\]"):
            WAIDataset(root, **KW)


def test_covisibility_entry_leaving_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    scene = _scene(root)
    meta = json.loads((scene / "scene_meta.json").read_text())
    meta["scene_modalities"] = {"pairwise_covisibility": {"scene_key": "../../x.npy", "format": "mmap"}}
    (scene / "scene_meta.json").write_text(json.dumps(meta))
    with pytest.raises(PathEscapeError, match="pairwise_covisibility"):
        WAIDataset(root, num_views=2, resolution=(16, 12), sampling="covisibility")[0]


@pytest.mark.parametrize("w,h", [(16, 10**8), (2**31 + 5, 2**31 + 5), (16, 12.0), (16, True), (16, 0)])
def test_crafted_image_size_is_refused_before_anything_is_sized(tmp_path, w, h):
    root = tmp_path / "root"
    scene = _scene(root)
    _edit_frame(scene, w=w, h=h)
    ds = WAIDataset(root, num_views=2, resolution=(16, 12), sampling="sequential")
    t0 = time.perf_counter()
    with pytest.raises(SchemaError, match=r"frames\[0\]\.(w|h)\]"):
        ds[0]
    assert time.perf_counter() - t0 < 5.0


def test_size_disagreeing_with_the_pixels_is_refused(tmp_path):
    root = tmp_path / "root"
    scene = _scene(root)
    _edit_frame(scene, w=1600, h=1200)  # plausible, but not what the JPEG holds
    with pytest.raises(SchemaError, match="decoded image is 16x12 .* says w x h = 1600x1200"):
        WAIDataset(root, num_views=2, resolution=(16, 12), sampling="sequential")[0]


def test_wrong_split_lists_the_splits_and_swapped_pairs_say_the_fix(tmp_path):
    root = tmp_path / "root"
    _scene(root)
    with pytest.raises(SceneNotFoundError, match=r"splits that exist there: \['train'\]"):
        WAIDataset(root, split="trian", **KW)
    with pytest.raises(LoaderConfigError, match=r"is \(weight, path\); write it as \(path, weight\)"):
        WAIDataset([(0.5, str(root))], **KW)
    with pytest.raises(LoaderConfigError, match="must be a number"):
        WAIDataset([(str(root), "heavy")], **KW)


@pytest.fixture(scope="module")
def mixed_roots(tmp_path_factory):
    pin = tmp_path_factory.mktemp("pin")
    write_street_dataset(pin, n_scenes=3, n_frames=2, camera_model=PINHOLE, size=(32, 24), seed=1)
    cyl = tmp_path_factory.mktemp("cyl")
    write_street_dataset(cyl, n_scenes=3, n_frames=2, camera_model=CYLINDRICAL, size=(64, 16), seed=2,
                         dataset_name="opv2v_like")
    return pin, cyl


def test_group_by_keeps_batches_to_one_camera_model_and_dataset(mixed_roots):
    pin, cyl = mixed_roots
    ds = WAIDataset([(pin, 1.0), (cyl, 1.0)], num_views=2, resolution=(28, 14), sampling="random",
                    samples_per_epoch=40)
    models = ds.sample_groups("camera_model")
    assert set(models[:20]) != set(models[20:])
    free = ViewBatchSampler(ds, images_per_gpu=8, seed=0)
    assert any(len({int(models[i]) for i, _, _ in b}) > 1 for b in free)  # without grouping batches mix
    for key in ("camera_model", "dataset", ["camera_model", "dataset"]):
        grouped = ViewBatchSampler(ds, images_per_gpu=8, seed=0, group_by=key)
        groups = ds.sample_groups(key)
        batches = list(grouped)
        assert batches and all(len({int(groups[i]) for i, _, _ in b}) == 1 for b in batches)
        ids = [i for b in batches for i, _, _ in b]
        assert len(ids) == len(set(ids)) and len(ids) >= 40 - 2 * 3  # at most one partial batch dropped per group
    views = ds[next(iter(ViewBatchSampler(ds, images_per_gpu=8, seed=0, group_by="camera_model")))[0]]
    assert len(views) == 2
    with pytest.raises(LoaderConfigError, match="group_by"):
        ds.sample_groups("scale")


def test_panorama_preset_keeps_the_full_azimuth():
    pano = Camera.panorama(2048, 576, v_fov_deg=90.0)
    for res in RESOLUTION_PRESETS["panorama"]:
        nw, nh, x0, y0 = crop_resize_plan(pano, res)
        assert x0 == 0 and nw == res[0] and res[0] % 14 == 0 and res[1] % 14 == 0
        assert (nh - res[1]) / nh < 0.045
    nw, _, x0, _ = crop_resize_plan(pano, (518, 392))  # a 4:3 view keeps ~135 of 360 degrees
    assert abs(518 / nw * 360 - 135) < 2.0


def test_train_ddp_help_does_not_import_torch():
    code = ("import sys; sys.path.insert(0, 'examples'); import train_ddp\n"
            "try:\n    train_ddp.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def _rename_frame_files(scene: Path, stem: bytes) -> None:
    """Give frame 0's image and depth files the non-UTF-8 name ``stem`` (bytes) and point scene_meta.json at it
    (JSON holds the undecodable byte as the surrogate escape Python's os functions map back to it)."""
    meta = json.loads((scene / "scene_meta.json").read_text())
    fr = meta["frames"][0]
    for key in ("image", "depth"):
        old = scene / fr[key]
        new_rel = os.fsdecode(os.path.dirname(os.fsencode(fr[key])) + b"/" + stem + os.fsencode(old.suffix))
        os.rename(old, scene / new_rel)
        fr[key] = new_rel
    fr["file_path"] = fr["image"]
    (scene / "scene_meta.json").write_text(json.dumps(meta))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX byte file names")
def test_non_utf8_frame_file_names_load_like_any_other(tmp_path):
    # cv2.imread(str) cannot take a name with undecodable bytes (the hot path used it); the loader reads such
    # files through Python's byte-safe file API instead, with the same values
    root = tmp_path / "root"
    scene = _scene(root)
    ref = WAIDataset(root, **KW)[0]
    _rename_frame_files(scene, b"fr\xff\xfe0")
    assert not (scene / "images").joinpath("fr\udcff\udcfe0.jpg").name.isascii()
    got = WAIDataset(root, **KW)[0]
    for a, b in zip(ref, got):
        for k in ("img", "depthmap", "pts3d"):
            assert torch.equal(a[k], b[k]), k


def test_corrupt_frame_file_is_named_not_a_crash(tmp_path):
    root = tmp_path / "root"
    scene = _scene(root)
    fr = json.loads((scene / "scene_meta.json").read_text())["frames"][0]
    (scene / fr["depth"]).write_bytes(b"\x76\x2f\x31\x01" + b"\x00" * 64)  # EXR magic, then garbage
    with pytest.raises(SchemaError, match=rf"{fr['depth'].split('/')[-1]}: could not decode depth"):
        WAIDataset(root, **KW)[0]


def test_truncated_image_is_refused_not_decoded_grey(tmp_path):
    # OpenCV decodes a JPEG cut short without an error (the missing rows grey): the loader checks the end marker,
    # as wai-validate does, and names the file
    root = tmp_path / "root"
    scene = _scene(root)
    fr = json.loads((scene / "scene_meta.json").read_text())["frames"][0]
    p = scene / fr["image"]
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 3 // 4])
    from wai.format.codecs import cv2

    assert cv2.imread(str(p)) is not None  # what a plain reader does with it
    with pytest.raises(SchemaError, match=rf"{p.name}: image file is truncated .*re-write or re-copy it"):
        WAIDataset(root, **KW)[0]
