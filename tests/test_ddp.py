"""End-to-end: ``examples/train_ddp.py`` under ``torchrun`` with 2 CPU processes (gloo) trains and checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "train_ddp.py"


def _summary(output: str) -> dict:
    lines = [ln for ln in output.splitlines() if ln.startswith("SUMMARY ")]
    assert lines, output[-3000:]
    return json.loads(lines[-1][len("SUMMARY "):])


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           "--out", str(tmp_path / "run"), "--steps", "10", "--workers", "1", "--backend", "gloo",
           "--synthetic-scenes", "2", "--synthetic-frames", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    s = _summary(out)
    assert s["world_size"] == 2 and s["backend"] == "gloo" and s["steps"] == 10
    steps = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith('{"step"')]
    losses = [x["loss"] for x in steps]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2, losses  # loss goes down
    assert s["images_per_s"] and s["images_per_s"] > 0
    ckpt = torch.load(s["checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["step"] == 10 and ckpt["model"]


def test_single_process_without_torchrun(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_ddp
    finally:
        sys.path.remove(str(SCRIPT.parent))
    env_keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.pop(k) for k in env_keys if k in os.environ}
    try:
        s = train_ddp.main(["--out", str(tmp_path / "single"), "--steps", "2", "--workers", "0",
                            "--synthetic-scenes", "1", "--synthetic-frames", "3", "--sampling", "sequential"])
    finally:
        os.environ.update(saved)
    assert s["world_size"] == 1 and s["steps"] == 2 and Path(s["checkpoint"]).is_file()
