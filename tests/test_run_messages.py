"""Messages of the run machinery for --input one level off (issue 18, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wai.converters import get_converter
from wai.errors import WaiError
from wai.run import RunOptions, run_conversion
from wai.synthetic import get_fake


def test_kitti360_input_one_level_too_deep_suggests_the_root(tmp_path: Path) -> None:
    root = get_fake("kitti360")(tmp_path / "raw" / "KITTI-360", n_frames=2, n_val=1, lidar_channels=8).root
    cls = get_converter("kitti360")
    with pytest.raises(WaiError, match=rf"expected KITTI-360 root.*did you mean --input {root}\?"):
        run_conversion(cls(root / "data_2d_raw"), tmp_path / "out", RunOptions(progress=False, dry_run=True))


def test_cameras_accept_both_spellings(tmp_path: Path) -> None:
    from wai.converters.kitti360 import Kitti360Converter, Kitti360Options
    from wai.converters.vkitti2 import VKitti2Converter, VKitti2Options

    k = get_fake("kitti360")(tmp_path / "k", n_frames=2, n_val=1, lidar_channels=8).root
    assert Kitti360Converter(k, Kitti360Options(cameras="0,1")).cams == ["00", "01"]
    assert Kitti360Converter(k, Kitti360Options(cameras="00,01")).cams == ["00", "01"]
    v = get_fake("vkitti2")(tmp_path / "v").root
    assert VKitti2Converter(v, VKitti2Options(cameras="00,01"))._cameras() == [0, 1]
    assert VKitti2Converter(v, VKitti2Options(cameras="0,1"))._cameras() == [0, 1]
