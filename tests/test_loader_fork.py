"""Forked DataLoader workers must not deadlock when the parent process has used OpenCV's thread pool.

Seen in the full suite: a worker's ``cv2.setNumThreads(1)`` destroyed the pool it inherited from the parent and
waited forever on condition variables of threads that were not forked (py-spy: ``pthread_cond_destroy``
under ``WAIDataset._set_worker_threads``). The dataset now sets the count in the parent, before forking.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from wai.converters.synthetic import SyntheticConverter
    from wai.format.codecs import cv2
    from wai.loaders import WAIDataset
    from wai.run import RunOptions, run_conversion
    from wai.synthetic.raw_synthetic import make_fake

    raw = make_fake(sys.argv[1] + "/raw", n_scenes=1, n_frames=3).root
    run_conversion(SyntheticConverter(raw), sys.argv[1] + "/out", RunOptions(progress=False))
    cv2.setNumThreads(4)
    for _ in range(20):  # the parent's OpenCV pool is busy and alive when the workers fork
        cv2.resize(np.random.rand(800, 800).astype(np.float32), (400, 400))
    ds = WAIDataset(sys.argv[1] + "/out", num_views=2, resolution=(32, 24), sampling="sequential",
                    samples_per_epoch=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda b: b,
                                         multiprocessing_context="fork")
    n = sum(len(b) for b in loader)
    cv2.setNumThreads(4)  # the user changes OpenCV's threads after building the dataset: still safe
    for _ in range(20):
        cv2.resize(np.random.rand(800, 800).astype(np.float32), (400, 400))
    print(n, sum(len(b) for b in loader))
""")


def test_forked_workers_after_parent_used_opencv_threads(tmp_path: Path) -> None:
    script = tmp_path / "fork_loader.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "8 8"
