"""Covisibility by depth reprojection: values on known geometry, both camera models, storage, CLI, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from wai.errors import SceneNotFoundError, SchemaError
from wai.format.conventions import CYLINDRICAL
from wai.loaders.covisibility import (
    compute_covisibility,
    covisibility_filename,
    reduced_size,
    run_covisibility,
    write_covisibility,
)
from wai.synthetic.scenes import make_camera, write_scene, write_street_dataset
from wai.synthetic.world import look_at


@pytest.fixture(scope="module")
def wall_scene(tmp_path_factory):
    """Frames 0 and 1 see the same facade (+y side); 2 and 3 face the opposite side (-y)."""
    root = tmp_path_factory.mktemp("covis")
    cam = make_camera("PINHOLE", (64, 48))
    poses = [
        look_at([0.0, 0.0, 1.7], [1.0, 12.0, 3.0]),
        look_at([1.0, 0.3, 1.7], [0.5, 12.0, 3.5]),
        look_at([0.0, 0.0, 1.7], [0.0, -12.0, 3.0]),
        look_at([0.0, 0.0, 1.7], [0.5, -12.0, 3.0]),
    ]
    return write_scene(root, "wall", cam, poses)


def test_same_wall_high_facing_away_zero(wall_scene):
    m = compute_covisibility(wall_scene)
    assert m.shape == (4, 4) and m.dtype == np.float32
    assert m[0, 1] > 0.4 and m[1, 0] > 0.4
    assert m[2, 3] > 0.4 and m[3, 2] > 0.4
    for i, j in [(0, 2), (0, 3), (1, 2), (1, 3), (2, 0), (3, 1)]:
        assert m[i, j] < 0.01, (i, j, m[i, j])
    # The diagonal is about the valid-pixel fraction of the frame (full denominator).
    assert np.all(np.diag(m) > 0.8) and np.all(m <= 1.0)


def test_chunking_prefilter_and_spill_do_not_change_the_result(wall_scene):
    ref = compute_covisibility(wall_scene, frustum_check=False)
    alt = compute_covisibility(wall_scene, max_chunk_points=100, max_ram_bytes=0)
    np.testing.assert_array_equal(ref, alt)
    assert not list(wall_scene.glob(".tmp-*")), "temporary depth memmap left behind"
    valid = compute_covisibility(wall_scene, denominator="valid")
    assert np.all(valid >= ref - 1e-6) and np.all(valid <= 1.0)


def test_cylindrical_panoramas(tmp_path):
    cam = make_camera(CYLINDRICAL, (128, 32))
    eye = np.array([0.0, 0.0, 1.7])
    poses = [look_at(eye, eye + [1, 0, 0]),
             look_at(eye, eye + [0, 1, 0]),  # same centre, rotated 90 degrees: sees exactly the same points
             look_at(eye + [0.5, 0.2, 0], eye + [1.5, 0.2, 0]),
             look_at(eye + [70, 0, 0], eye + [71, 0, 0])]  # far down the street
    m = compute_covisibility(write_scene(tmp_path, "pano", cam, poses))
    assert abs(m[0, 1] - m[0, 0]) < 0.03 and abs(m[1, 0] - m[1, 1]) < 0.03, m
    assert m[0, 2] > 0.5 and m[2, 0] > 0.5, m
    assert m[0, 3] < 0.1 and m[3, 0] < 0.1, m
    (scene,) = write_street_dataset(tmp_path / "ds", n_scenes=1, n_frames=3, camera_model=CYLINDRICAL,
                                    size=(128, 32))
    m2 = compute_covisibility(scene)
    assert np.all(m2[~np.eye(3, dtype=bool)] > 0.1), m2  # 6 m apart on the same street


def test_reduced_size_and_resampling(wall_scene):
    assert reduced_size(640, 480, 224) == (224, 168)
    assert reduced_size(64, 48, 224) == (64, 48)  # never upsampled
    assert reduced_size(64, 48, (20, 10)) == (20, 10)
    small = compute_covisibility(wall_scene, target_size=32)
    assert small[0, 1] > 0.4 and small[0, 2] < 0.01


def test_written_file_is_wai_compatible(tmp_path):
    cam = make_camera("PINHOLE", (32, 24))
    poses = [look_at([0, 0, 1.7], [math.cos(a), 12.0, 3.0]) for a in (0.0, 0.5, 1.0)]
    scene = write_scene(tmp_path, "s", cam, poses)
    path = write_covisibility(scene)
    assert path == scene / "covisibility" / "v0" / covisibility_filename(3)
    assert path.name == "pairwise_covisibility--3x3.npy"
    m = np.load(path, mmap_mode="r")
    assert m.dtype == np.float32 and m.shape == (3, 3)
    wai_view = np.memmap(path, dtype=np.float32, mode="r", offset=128, shape=(3, 3))  # how WAI reads it
    np.testing.assert_array_equal(np.asarray(wai_view), np.asarray(m))
    meta = json.loads((scene / "scene_meta.json").read_text())
    assert meta["scene_modalities"]["pairwise_covisibility"] == {
        "scene_key": "covisibility/v0/pairwise_covisibility--3x3.npy", "format": "mmap"}
    log = json.loads((scene / "_process_log.json").read_text())
    assert log["covisibility"]["state"] == "finished" and log["conversion"]["state"] == "finished"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    mtime = path.stat().st_mtime_ns
    assert write_covisibility(scene) == path and path.stat().st_mtime_ns == mtime  # already done: skipped


def test_cli_command(tmp_path):
    from wai.cli import convert_main

    write_street_dataset(tmp_path, n_scenes=2, n_frames=2, size=(32, 24))
    res = CliRunner().invoke(convert_main, ["covisibility", str(tmp_path), "--target-size", "16"])
    assert res.exit_code == 0, res.output
    assert "2 scene(s) done" in res.output
    assert len(list(tmp_path.glob("*/covisibility/v0/pairwise_covisibility--2x2.npy"))) == 2


def test_errors(tmp_path):
    with pytest.raises(SceneNotFoundError, match="scene_meta.json"):
        compute_covisibility(tmp_path / "nope")
    with pytest.raises(SceneNotFoundError, match="no converted scenes"):
        run_covisibility(tmp_path)
    cam = make_camera("PINHOLE", (16, 12))
    scene = write_scene(tmp_path, "s", cam, [look_at([0, 0, 1.7], [0, 12, 3])])
    with pytest.raises(SchemaError, match="denominator"):
        compute_covisibility(scene, denominator="bogus")
    with pytest.raises(SchemaError, match="no frame modality 'normals'"):
        compute_covisibility(scene, depth_modality="normals")
