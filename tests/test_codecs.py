"""Codecs: round trips, documented dtypes, the float16 EXR error bound (keeps EXR support tested in CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wai.errors import SceneNotFoundError, SchemaError
from wai.format import atomic, codecs
from wai.format.codecs import cv2


def _save(tmp: Path, name: str, data: bytes) -> Path:
    return atomic.write_bytes(tmp / name, data)


def test_exr_float16_round_trip_error_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = (rng.random((37, 53)) * 100).astype(np.float32)
    d[0, 0] = 0.0
    p = _save(tmp_path, "d.exr", codecs.encode_depth(d, "float16"))
    r = codecs.read_depth(p)
    assert r.dtype == np.float32 and r.shape == d.shape
    # half precision: relative error <= 2^-11 (round to nearest)
    assert np.all(np.abs(r - d) <= np.abs(d) * 2.0**-11 + 1e-12)
    assert r[0, 0] == 0.0
    # and MapAnything's reader call works on it
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2 and raw.dtype == np.float32


def test_exr_float32_exact(tmp_path: Path) -> None:
    d = np.random.default_rng(1).random((20, 30)).astype(np.float32) * 700
    p = _save(tmp_path, "d.exr", codecs.encode_depth(d, "float32"))
    np.testing.assert_array_equal(codecs.read_depth(p), d)


def test_depth_rejects_bad_values() -> None:
    d = np.ones((4, 4), np.float32)
    d[1, 1] = np.nan
    with pytest.raises(SchemaError, match="NaN or inf"):
        codecs.encode_depth(d)
    with pytest.raises(SchemaError, match="negative"):
        codecs.encode_depth(-np.ones((2, 2)))
    with pytest.raises(SchemaError, match="float16 range"):
        codecs.encode_depth(np.full((2, 2), 70000.0), "float16")
    with pytest.raises(SchemaError, match="2-D"):
        codecs.encode_depth(np.ones((2, 2, 2)))


def test_image_round_trip_rgb_order(tmp_path: Path) -> None:
    img = np.zeros((10, 12, 3), np.uint8)
    img[..., 0] = 200  # red
    p = _save(tmp_path, "i.png", codecs.encode_image(img, ".png"))
    r = codecs.read_image(p)
    np.testing.assert_array_equal(r, img)
    assert cv2.imread(str(p))[0, 0, 2] == 200  # on disk it is a normal (BGR-read) PNG
    j = codecs.read_image(_save(tmp_path, "i.jpg", codecs.encode_image(img, ".jpg")))
    assert j.dtype == np.uint8 and np.abs(j.astype(int) - img).max() <= 3


def test_mask_and_labels(tmp_path: Path) -> None:
    m = np.zeros((5, 6), bool)
    m[2:, 3:] = True
    p = _save(tmp_path, "m.png", codecs.encode_mask(m))
    assert set(np.unique(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)).tolist()) == {0, 255}
    np.testing.assert_array_equal(codecs.read_mask(p), m)
    for dt in (np.uint8, np.uint16):
        lab = (np.arange(30).reshape(5, 6) * (1000 if dt == np.uint16 else 7)).astype(dt)
        r = codecs.read_labels(_save(tmp_path, f"l{dt.__name__}.png", codecs.encode_labels(lab)))
        assert r.dtype == dt
        np.testing.assert_array_equal(r, lab)
    with pytest.raises(SchemaError, match="uint8/uint16"):
        codecs.encode_labels(np.zeros((2, 2), np.int32))


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SceneNotFoundError, match="missing depth file: .*nope.exr"):
        codecs.read_depth(tmp_path / "nope.exr")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SchemaError, match="bad.png: could not decode"):
        codecs.read_image(bad)


def test_is_truncated_follows_the_validators_rule(tmp_path: Path) -> None:
    img = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    jpg = codecs.encode_image(img, ".jpg")
    png = codecs.encode_image(img, ".png")
    for ok in (jpg, jpg + b"\x00" * 100, jpg + b"trailing data after EOI", png):
        assert not codecs.is_truncated(ok, ".png" if ok.startswith(b"\x89PNG") else ".jpg")
    for cut in (jpg[:-1], jpg[: len(jpg) // 2], jpg[:-2] + b"\x00" * 80):
        assert codecs.is_truncated(cut, ".jpg")
    assert codecs.is_truncated(png[:-12], ".png")
    assert not codecs.is_truncated(b"not a png", ".png")  # another format: left to the decoder
    # what makes the check necessary: cv2.imread (the loader's reader before, MapAnything's) decodes a JPEG file
    # cut short without an error, its missing rows grey (cv2.imdecode happens to refuse it)
    big = codecs.encode_image(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8), ".jpg")
    cut = _save(tmp_path, "cut.jpg", big[: len(big) * 3 // 4])
    assert codecs.is_truncated(cut.read_bytes(), ".jpg")
    assert codecs.cv2.imread(str(cut), codecs.cv2.IMREAD_COLOR) is not None
