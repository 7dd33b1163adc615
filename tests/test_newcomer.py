"""A newcomer's first hour (issue 18), end to end on the demo's output.

One demo run (three cheap sources, one worker) in a temporary folder; then: its per-part timings, the commands
it prints run as printed (exit 0, in a shell with this process's PATH), the README's "Try it on the demo's
output" section runs (shell commands after ``source .venv/bin/activate``, and the Python example in-process),
``docs/format.md``'s reading example runs, and the report labels Co3D's relative depth as unitless.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wai.demo import DemoResult, demo, installed_command

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["co3d", "eth3d", "vkitti2"]  # what the README's examples read; the cheapest fakes
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("newcomer")
    out = io.StringIO()
    old = Path.cwd()
    os.chdir(base)
    try:
        with contextlib.redirect_stdout(out):
            res = demo("demo_out", workers=1, sources=SOURCES)
    finally:
        os.chdir(old)
    return {"base": base, "res": res, "text": out.getvalue()}


def _section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n## ", 1)[0]


def _blocks(text: str, lang: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(text) if m.group(1) == lang]


def _activated_env() -> dict[str, str]:
    """This process's environment after ``source .venv/bin/activate`` (the README's set-up)."""
    env = dict(os.environ)
    bindir = Path(sys.executable).absolute().parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def test_demo_reports_each_part_separately(ran: dict[str, Any]) -> None:
    res: DemoResult = ran["res"]
    text = ran["text"]
    assert not res.failures and "demo OK: 3 source(s)" in text, text
    line = re.compile(r"^\[(\w+)\] ok: (\d+) scene\(s\), \d+ frames; fake raw data \d+\.\d s, conversion \d+\.\d s"
                      r"(?: \(incl\. starting 1 worker process\(es\)\))?, covisibility \d+\.\d s, "
                      r"validation \d+\.\d s; validation: 0 error\(s\), \d+ warning\(s\)$", re.M)
    found = {m.group(1): int(m.group(2)) for m in line.finditer(text)}
    assert set(found) == set(SOURCES), text
    assert text.count("incl. starting") == 1  # only the first conversion pays the workers' start-up
    for name in SOURCES:
        t = res.timings[name]
        assert t.fakes > 0 and t.conversion > 0 and t.covisibility > 0 and t.validation > 0
        root = ran["base"] / "demo_out" / "converted" / name
        scenes = [p.parent for p in root.glob("*/scene_meta.json")]
        assert len(scenes) == found[name]
        assert all(list((s / "covisibility" / "v0").glob("pairwise_covisibility--*.npy")) for s in scenes)


def test_printed_commands_run_as_printed(ran: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    text = ran["text"]
    monkeypatch.chdir(ran["base"])  # where the demo ran
    tail = text.split("next, from this directory:\n", 1)[1]
    cmds = [ln[2:] for ln in tail.splitlines() if ln.startswith("  ")]
    assert len(cmds) == 4 and "wai-validate demo_out/converted/co3d" in cmds[0], cmds
    assert cmds[0].startswith(installed_command("wai-validate") + " ")
    assert any(" -c " in c and "WAIDataset" in c for c in cmds)  # the loader one-liner
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a fresh shell: nothing activated
    for cmd in cmds:
        run = subprocess.run(cmd, shell=True, cwd=ran["base"], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{cmd}\n{run.stdout}\n{run.stderr}"
    assert "4 views" in run.stdout
    if not installed_command("wai-validate").startswith("wai-"):
        assert "source " in text and "/activate" in text  # how to put them on PATH


def test_readme_try_it_section_runs(ran: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    section = _section((REPO / "README.md").read_text(), "## Try it on the demo's output")
    (bash,), (code,) = _blocks(section, "bash"), _blocks(section, "python")
    env = _activated_env()
    for cmd in [c for c in bash.splitlines() if c.strip() and not c.startswith("#")]:
        run = subprocess.run(cmd, shell=True, cwd=ran["base"], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{cmd}\n{run.stdout}\n{run.stderr}"
    monkeypatch.chdir(ran["base"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # the README's code, as is
    expected = re.search(r"print\(.*\)  # (.*)$", code, re.M)
    assert expected is not None and out.getvalue().strip() == expected.group(1).strip()


def test_format_md_reading_example_runs(ran: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    section = _section((REPO / "docs" / "format.md").read_text(), "## Reading scenes")
    (code,) = _blocks(section, "python")
    monkeypatch.chdir(ran["base"])
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "docs/format.md", "exec"), {"__name__": "format_example"})
    from wai.format import load_scene

    scene = load_scene(ran["base"] / "demo_out" / "converted" / "eth3d" / "courtyard")
    with pytest.raises(TypeError):
        scene["frames"]  # what format.md warns about  # noqa: B018


def test_report_labels_relative_depth_unitless(ran: dict[str, Any]) -> None:
    md = (ran["base"] / "demo_out" / "report.md").read_text()
    depth = md.split("## Depth", 1)[1].split("\n## ", 1)[0]
    rows = {r.split("|")[1].strip(): r.split("|")[-2].strip() for r in depth.splitlines()
            if r.startswith("| ") and not r.startswith("| dataset")}
    assert rows == {"co3d": "unitless", "eth3d": "m", "vkitti2": "m"}, depth


def test_installed_command_prefers_what_a_fresh_shell_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = Path(sys.executable).absolute().parent
    if not (bindir / "wai-validate").exists():
        pytest.skip("wai's entry points are not installed next to this interpreter")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    monkeypatch.chdir(bindir.parent.parent)  # e.g. the repository folder holding .venv/
    assert installed_command("wai-validate") == f"{bindir.parent.name}/bin/wai-validate"
    monkeypatch.chdir(tmp_path)  # elsewhere: the absolute path
    assert installed_command("wai-validate") == str(bindir / "wai-validate")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin")  # activated
    assert installed_command("wai-validate") == "wai-validate"
    other = tmp_path / "python"  # another interpreter first on PATH: python is not bare
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{bindir}")
    assert installed_command("python") != "python"
