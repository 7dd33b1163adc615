"""Keep freed large buffers in the process for reuse (glibc), instead of returning them to the kernel.

A conversion allocates the same few full-frame arrays per frame (a 1408x376 float32 map is 2 MB). glibc
serves such sizes with fresh ``mmap`` pages or trims them off the heap when freed, so every frame pays page
faults to map and zero them again: measured here, the KITTI-360 occlusion filter (three full-frame arrays)
takes 3.5 ms per frame that way and 0.7 ms with the buffers kept. Raising glibc's mmap and trim thresholds
keeps them: freed memory is reused by the next frame, and peak RSS stays that of the largest frame.

Applied by ``convert_one`` in every process that converts scenes (``RunOptions.malloc_tuning``, default on;
``wai-convert --no-malloc-tuning``). A no-op where libc is not glibc (macOS, musl) or ``mallopt`` is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap and are reused once freed. 32 MB covers every per-frame array
#: up to a float32 map of 2896x2896 (ETH3D's full 6048x4032 DSLR maps are still mmap-ed, at ~100 MB each).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap is returned to the kernel only beyond this.
TRIM_THRESHOLD = 256 << 20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):  # musl / BSD libc: different malloc, leave it alone
            return False
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _applied:
        log.debug("mallopt refused the thresholds; freed buffers are returned to the kernel as usual")
    return _applied


__all__ = ["keep_freed_memory"]
