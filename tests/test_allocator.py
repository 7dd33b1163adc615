"""The converting processes keep freed frame buffers: re-allocating one costs no page faults."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
import numpy as np
from wai.run.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
def frame():  # what a converter does per frame: a few frame-sized (2 MB) temporaries, filled, then freed
    a, b, c = (np.ones((376, 1408), np.float32) for _ in range(3))
    del a, b, c
frame()  # the first frame maps its pages in any case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    frame()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "again": keep_freed_memory() if applied else None, "faults": faults}))
"""


def _probe(tuned: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if tuned else "0"], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_frame_buffers_are_reused_without_page_faults() -> None:
    tuned, plain = _probe(True), _probe(False)
    assert tuned["applied"] is True and tuned["again"] is True  # idempotent
    # 50 x 3 x 2 MB = 76,800 pages: untuned glibc maps and faults them in again every time; tuned reuses them.
    assert plain["faults"] > 10_000, plain
    assert tuned["faults"] < 500, tuned
