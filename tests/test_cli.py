"""CLI behaviour a newcomer meets first (issue 18): source names, ``--input`` one level off, exit codes, and
the ``wai/`` folder that shadows the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from wai.cli import command_suggestions, convert_main, import_shadow, report_main, validate_main
from wai.synthetic import get_fake
from wai.synthetic.raw_synthetic import make_fake

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake(tmp_path_factory.mktemp("synth"), n_scenes=2, n_frames=2).root


# --- item 6: source names ------------------------------------------------------------------------------------


def test_mistyped_source_gets_the_closest_names() -> None:
    res = CliRunner().invoke(convert_main, ["kitti36", "-i", "x", "-o", "y"])
    assert res.exit_code == 2
    assert "No such command 'kitti36'. Did you mean 'kitti360'" in res.output, res.output
    far = CliRunner().invoke(convert_main, ["xyzzy"])
    assert far.exit_code == 2 and "Did you mean" not in far.output
    assert "co3d, eth3d, kitti360, opv2v" in far.output  # what exists instead
    assert command_suggestions("KITTI-360", ["kitti360", "co3d"]) == ["kitti360"]
    assert command_suggestions("vkitty2", ["kitti360", "vkitti2"])[0] == "vkitti2"


def test_source_names_are_case_insensitive(synth_raw: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    upper = runner.invoke(convert_main, ["KITTI360", "--help"], prog_name="wai-convert")
    assert upper.exit_code == 0 and "Usage: wai-convert kitti360" in upper.output, upper.output
    assert "--building-only" in upper.output
    dry = runner.invoke(convert_main, ["Synthetic", "-i", str(synth_raw), "-o", str(tmp_path / "o"), "--dry-run"])
    assert dry.exit_code == 0 and "2 scene(s) would be converted" in dry.output, dry.output
    covis = runner.invoke(convert_main, ["COVISIBILITY", "--help"])
    assert covis.exit_code == 0 and "--target-size" in covis.output


# --- item 5: --input one level too deep ----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "below"), [("co3d", "car"), ("vkitti2", "Scene01")])
def test_input_one_level_too_deep_names_the_right_folder(source: str, below: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    get_fake(source)(tmp_path / "raw" / source)
    assert (tmp_path / "raw" / source / below).is_dir()
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(convert_main, [source, "-i", f"raw/{source}/{below}", "-o", "out", "--dry-run"])
    assert res.exit_code == 1, res.output
    assert f"raw/{source}/{below}: no {source} scenes found" in res.output
    assert f"did you mean --input raw/{source}?" in res.output, res.output
    # ... and the suggested --input works as printed
    ok = runner.invoke(convert_main, [source, "-i", f"raw/{source}", "-o", "out", "--dry-run"])
    assert ok.exit_code == 0 and "scene(s) would be converted" in ok.output, ok.output
    too_high = runner.invoke(convert_main, [source, "-i", "raw", "-o", "out", "--dry-run"])
    assert too_high.exit_code == 1 and f"did you mean --input raw/{source}?" in too_high.output


# --- item 9: the exit codes the README promises ---------------------------------------------------------------


def test_exit_codes_match_the_readme(synth_raw: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    readme = (REPO / "README.md").read_text()
    assert "**2** for usage errors" in readme and "no complete scene is left" in readme
    workers0 = runner.invoke(convert_main, ["synthetic", "-i", str(synth_raw), "-o", str(tmp_path / "o"), "-j", "0"])
    assert workers0.exit_code == 2 and "--workers 0" in workers0.output, workers0.output
    inside = runner.invoke(convert_main, ["synthetic", "-i", str(synth_raw), "-o", str(synth_raw / "out")])
    assert inside.exit_code == 2, inside.output
    missing_option = runner.invoke(convert_main, ["synthetic", "-i", str(synth_raw)])
    assert missing_option.exit_code == 2
    ok = runner.invoke(convert_main, ["synthetic", "-i", str(synth_raw), "-o", str(tmp_path / "o"), "-q", "-j", "1"])
    assert ok.exit_code == 0, ok.output
    assert runner.invoke(validate_main, [str(tmp_path / "o")]).exit_code == 0


# --- item 4: a wai/ folder that shadows the installed package -------------------------------------------------


def _shadowed_folder(tmp_path: Path) -> Path:
    """``tmp/wai`` shaped like a clone of this repository (no ``__init__.py`` at its top), a script next to it."""
    clone = tmp_path / "wai"
    (clone / "wai").mkdir(parents=True)
    (clone / "pyproject.toml").write_text("[project]\nname = 'wai'\n")
    (tmp_path / "script.py").write_text("from wai import FORMAT_VERSION\nprint(FORMAT_VERSION)\n")
    return clone


def test_shadow_detection_agrees_with_what_python_does(tmp_path: Path) -> None:
    clone = _shadowed_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=60)
    found = import_shadow(tmp_path, path=[p for p in sys.path[1:] if p and Path(p).resolve() != REPO])
    if found is not None:  # an editable install (scripts/setup.sh): the namespace package wins
        assert found == clone
        assert run.returncode == 1
        assert "cannot import name 'FORMAT_VERSION' from 'wai' (unknown location)" in run.stderr, run.stderr
        readme = (REPO / "README.md").read_text()
        assert "cannot import name 'FORMAT_VERSION' from 'wai' (unknown location)" in readme
    else:  # a regular install: the installed package still wins
        assert run.returncode == 0, run.stderr
    assert import_shadow(REPO) is None  # the repository's own wai/ is the real package
    assert import_shadow(tmp_path / "nothing_here") is None


def test_entry_points_warn_about_a_shadowing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    synth_raw: Path) -> None:
    clone = _shadowed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    # Simulate the editable install's sys.path (the repository root is not on it), whatever this run's is.
    monkeypatch.setattr(sys, "path", [sys.path[0], *[p for p in sys.path[1:] if p and Path(p).resolve() != REPO]])
    assert import_shadow() == clone
    res = CliRunner().invoke(validate_main, [str(tmp_path / "missing")])
    assert f"warning: {clone} is a folder without __init__.py" in res.output
    assert "unknown location" in res.output and "rename" in res.output
    res = CliRunner().invoke(report_main, [str(tmp_path / "missing")])
    assert "warning:" in res.output
    (clone / "__init__.py").write_text("")  # a regular package there is a different problem, not this one
    assert import_shadow() is None
    quiet = CliRunner().invoke(validate_main, [str(tmp_path / "missing")])
    assert "warning:" not in quiet.output


def test_demo_refuses_zero_workers_before_doing_anything(tmp_path: Path) -> None:
    from wai.cli import demo_main

    res = CliRunner().invoke(demo_main, [str(tmp_path / "demo_out"), "--workers", "0"])
    assert res.exit_code == 2 and "--workers 0" in res.output, res.output
    assert not (tmp_path / "demo_out").exists()
