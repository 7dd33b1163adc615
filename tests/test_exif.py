"""EXIF orientation never turns wai's pixels away from their calibration, and never survives into a copy.

OpenCV applies an EXIF orientation tag by default: orientation 3 turns the image by 180 degrees at the same size,
so before this, a source JPEG carrying one was copied verbatim and read rotated by the loader and by
MapAnything's reader, against unrotated depth and intrinsics, silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wai.format import codecs, exif
from wai.format.codecs import cv2
from wai.format.conventions import PINHOLE
from wai.synthetic.exif_blocks import exif_tiff, jpeg_with_exif, png_with_exif


def _pattern(h: int = 40, w: int = 60) -> np.ndarray:
    """RGB with a white block in the top-left corner only: any turn or flip moves it."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 4, : w // 3] = 255
    return img


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img[..., ::-1])[1].tobytes()


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_orientation_is_read_from_jpeg_and_png(orientation: int, big_endian: bool) -> None:
    tiff = exif_tiff(orientation, big_endian=big_endian)
    assert exif.tiff_orientation(tiff) == orientation
    assert exif.exif_orientation(jpeg_with_exif(_jpeg(_pattern()), tiff)) == orientation
    assert exif.exif_orientation(png_with_exif(_png(_pattern()), tiff)) == orientation


def test_no_block_no_tag_and_unreadable_blocks() -> None:
    assert exif.exif_orientation(_jpeg(_pattern())) == 1
    assert exif.exif_orientation(jpeg_with_exif(_jpeg(_pattern()), exif_tiff(None))) == 1  # block without the tag
    assert exif.tiff_orientation(b"II*\x00\xff\xff\x00\x00") == 0  # IFD offset past the end
    assert exif.tiff_orientation(exif_tiff(9)) == 0  # not a valid orientation
    assert exif.exif_orientation(b"GIF89a") == 1  # neither JPEG nor PNG: no block


@pytest.mark.parametrize("kind", ["jpeg", "png"])
@pytest.mark.parametrize("orientation", [2, 3, 6])
def test_decoding_ignores_the_tag_and_the_copy_drops_it(kind: str, orientation: int) -> None:
    img = _pattern()
    plain = _jpeg(img) if kind == "jpeg" else _png(img)
    tagged = (jpeg_with_exif if kind == "jpeg" else png_with_exif)(plain, exif_tiff(orientation))
    honour = cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR_RGB)
    stored = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR_RGB)
    assert not np.array_equal(honour, stored)  # what OpenCV (and MapAnything's reader) does with the tag
    assert np.array_equal(codecs.imdecode(tagged, cv2.IMREAD_COLOR_RGB), stored)  # wai: the stored grid
    copy, n = exif.without_orientation(tagged)
    assert n == 1 and copy == plain  # the block removed, every other byte kept
    assert np.array_equal(cv2.imdecode(np.frombuffer(copy, np.uint8), cv2.IMREAD_COLOR_RGB), stored)


def test_orientation_1_blocks_are_kept() -> None:
    tagged = jpeg_with_exif(_jpeg(_pattern()), exif_tiff(1))
    assert exif.without_orientation(tagged) == (tagged, 0)


def _write_scene(root: Path, image: Path) -> Path:
    from wai.format.cameras import Camera
    from wai.format.scene import SceneWriter

    cam = Camera(PINHOLE, 60, 40, 50.0, 50.0, 29.5, 19.5)
    with SceneWriter(root, "s", "test") as w:
        w.add_frame("f0", cam, np.eye(4), image=image, depth=np.full((40, 60), 2.0, np.float32))
        w.add_frame("f1", cam, np.eye(4), image=image, depth=np.full((40, 60), 2.0, np.float32))
    return root / "s"


def test_scene_writer_copies_without_the_tag_and_records_it(tmp_path: Path) -> None:
    img = _pattern()
    src = tmp_path / "src.jpg"
    src.write_bytes(jpeg_with_exif(_jpeg(img), exif_tiff(3)))
    scene = _write_scene(tmp_path / "out", src)
    out = (scene / "images" / "f0.jpg").read_bytes()
    assert exif.exif_orientation(out) == 1 and out == _jpeg(img)
    # what MapAnything's reader sees (OpenCV honouring tags) is the stored grid the calibration refers to
    assert np.array_equal(cv2.imread(str(scene / "images" / "f0.jpg"), cv2.IMREAD_COLOR_RGB),
                          cv2.imdecode(np.frombuffer(_jpeg(img), np.uint8), cv2.IMREAD_COLOR_RGB))
    log = json.loads((scene / "_process_log.json").read_text())
    assert log["conversion"]["summary"]["exif_orientation_removed"] == 2


def test_loader_reads_the_stored_grid_of_a_tagged_image(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from wai.loaders import WAIDataset
    from wai.synthetic.scenes import write_scene_lists

    img = _pattern()
    src = tmp_path / "src.jpg"
    src.write_bytes(_jpeg(img))
    scene = _write_scene(tmp_path / "root", src)
    write_scene_lists(tmp_path / "root", {"train": ["s"]})
    kw = dict(num_views=2, resolution=(60, 40), sampling="sequential")
    ref = WAIDataset(tmp_path / "root", **kw)[0]
    for name in ("f0", "f1"):  # a dataset written elsewhere, with the tag in place
        p = scene / "images" / f"{name}.jpg"
        p.write_bytes(jpeg_with_exif(p.read_bytes(), exif_tiff(3)))
    got = WAIDataset(tmp_path / "root", **kw)[0]
    for a, b in zip(ref, got):
        assert torch.equal(a["img"], b["img"])


def test_validator_reports_a_tagged_output_image(tmp_path: Path) -> None:
    from wai.validation import validate

    src = tmp_path / "src.jpg"
    src.write_bytes(_jpeg(_pattern()))
    scene = _write_scene(tmp_path / "out", src)
    assert not [i for i in validate(scene, geometry=False).errors if i.code == "exif_orientation"]
    p = scene / "images" / "f0.jpg"
    p.write_bytes(jpeg_with_exif(p.read_bytes(), exif_tiff(6)))
    errs = [i for i in validate(scene, geometry=False).errors if i.code == "exif_orientation"]
    assert len(errs) == 1 and "orientation 6" in errs[0].message and "MapAnything" in errs[0].message
    # a block whose orientation cannot be read: a warning (a reader may or may not find a tag in it)
    p.write_bytes(jpeg_with_exif(_jpeg(_pattern()), exif_tiff(9)))
    rep = validate(scene, geometry=False)
    assert not [i for i in rep.errors if i.code == "exif_orientation"]
    warns = [i for i in rep.warnings if i.code == "exif_orientation"]
    assert len(warns) == 1 and "unreadable" in warns[0].message


def test_eth3d_source_image_with_a_tag_converts_to_the_stored_grid(tmp_path: Path) -> None:
    pytest.importorskip("pycolmap")
    from wai.converters import get_converter
    from wai.run import RunOptions, run_conversion
    from wai.synthetic.fake_eth3d import make_fake

    fake = make_fake(tmp_path / "raw", n_scenes=1, n_images=3)
    scene_dir = next(p for p in fake.root.iterdir() if p.is_dir())
    imgs = sorted((scene_dir / "images" / "dslr_images_undistorted").glob("*.JPG"))
    assert exif.exif_orientation(imgs[0].read_bytes()) == 1  # the fake's camera block (a real DSLR writes one)
    data = imgs[0].read_bytes()
    # the same camera block with orientation 3 (a camera held upside down)
    imgs[0].write_bytes(data.replace(exif_tiff(1), exif_tiff(3)))
    assert exif.exif_orientation(imgs[0].read_bytes()) == 3
    out = tmp_path / "out"
    cls = get_converter("eth3d")
    res = run_conversion(cls(fake.root, cls.Options()), out, RunOptions(workers=1, progress=False))
    assert res.ok, [r.error for r in res.failed]
    meta = json.loads((out / scene_dir.name / "scene_meta.json").read_text())
    fr = next(f for f in meta["frames"] if Path(f["image"]).stem == imgs[0].stem)
    written = (out / scene_dir.name / fr["image"]).read_bytes()
    assert exif.exif_orientation(written) == 1
    assert np.array_equal(cv2.imread(str(out / scene_dir.name / fr["image"]), cv2.IMREAD_COLOR_RGB),
                          codecs.imdecode(data, cv2.IMREAD_COLOR_RGB))
