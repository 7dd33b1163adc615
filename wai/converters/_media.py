"""Verification of raw media files before a converter trusts them.

Every image a converter copies verbatim into the output, or decodes, is checked here first, at near-zero
cost, without decoding pixels:

* **PNG**: the 8-byte signature, an ``IHDR`` chunk (width, height, bit depth, colour type), then every chunk
  walked to an ``IEND`` chunk that ends the file, each chunk's CRC-32 checked (so truncation, a zeroed
  region and any flipped byte are caught; CRC-32 runs at several GB/s, see docs/sources/*.md for the
  measured cost per frame);
* **JPEG**: the ``SOI`` marker, the marker segments up to the first ``SOS`` (each length inside the file),
  the frame header ``SOFn`` (precision, height, width, components), and the ``EOI`` marker at the end of
  the file (optionally followed by zero padding). Only the header segments and the last bytes are read.
  A JPEG has no checksum: a byte flipped inside the entropy-coded data cannot be detected without a
  reference and is documented as such.

``verify_image`` adds the calibration check: the size in the header must equal the size the source's
calibration states, and the channel count / bit depth must be what the source writes. Errors are
``SourceLayoutError`` naming the file and, for a size mismatch, the calibration that disagrees.

Decoding goes through ``decode_image`` (bytes read by Python, decoded from memory with ``cv2.imdecode``),
never ``cv2.imread(str(path))``, which crashes on paths that are not valid UTF-8.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from wai.errors import SourceLayoutError, SourceNotFoundError, layout_error
from wai.format.codecs import imdecode
from wai.format.exif import JPEG_SOI, JPEG_STANDALONE, PNG_SIGNATURE

JPEG_EOI = b"\xff\xd9"
#: Largest image side accepted from a header (pixels). The largest real source image is 6220x4141 (ETH3D).
MAX_IMAGE_SIDE = 32768
#: Largest image file read into memory for verification (bytes).
MAX_IMAGE_BYTES = 1 << 30
#: PNG colour type -> channels after decoding (palette images decode to colour).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
#: JPEG start-of-frame markers (SOF0-SOF15 without DHT C4, JPG C8, DAC CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: How far the JPEG header walk may go before the first SOS (APPn segments are at most 64 KiB each).
_MAX_JPEG_HEADER = 4 << 20


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says (nothing decoded)."""

    fmt: str  # "png" or "jpeg"
    width: int  # pixels
    height: int  # pixels
    channels: int  # decoded channels: PNG from the colour type, JPEG the number of components
    bit_depth: int  # PNG bit depth, JPEG sample precision

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.width, self.height


def _open_error(path: Path, e: OSError, what: str) -> SourceLayoutError | SourceNotFoundError:
    if isinstance(e, FileNotFoundError):
        return SourceNotFoundError(f"missing {what}: expected a file at {path}")
    return layout_error(path, f"cannot read {what} ({e.strerror or e})")


def _check_side(path: Path, what: str, w: int, h: int) -> None:
    if not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE):
        raise layout_error(path, f"{what} header says {w}x{h} pixels; expected 1..{MAX_IMAGE_SIDE} per side "
                                 "(corrupt header?)")


def png_header(path: str | Path, what: str = "PNG image", check_crc: bool = True) -> ImageHeader:
    """Header of a complete PNG: signature, IHDR, every chunk to an IEND that ends the file, CRCs.

    Raises ``SourceNotFoundError`` when the file is missing and ``SourceLayoutError`` naming the file
    (and the byte offset) for anything else.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_IMAGE_BYTES:
                raise layout_error(p, f"{what} is {size} bytes, above the {MAX_IMAGE_BYTES} byte cap")
            data = fh.read()
    except OSError as e:
        raise _open_error(p, e, what) from e
    if len(data) == 0:
        raise layout_error(p, f"{what} is empty (0 bytes)")
    if data[:8] != PNG_SIGNATURE:
        raise layout_error(p, f"{what} is not a PNG file (no PNG signature)")
    pos, n = 8, len(data)
    header: ImageHeader | None = None
    n_idat = 0
    while True:
        if pos + 12 > n:
            raise layout_error(p, f"{what} is truncated: {n} bytes, no IEND chunk (chunk header at byte {pos} "
                                  "is incomplete)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            raise layout_error(p, f"{what} is truncated or corrupt: chunk {ctype!r} at byte {pos} claims {length} "
                                  f"bytes, the file has {n - pos - 12} left")
        if check_crc:
            crc = struct.unpack(">I", data[end - 4 : end])[0]
            if zlib.crc32(data[pos + 4 : end - 4]) != crc:
                raise layout_error(p, f"{what} is corrupt: CRC mismatch in chunk {ctype!r} at byte {pos}")
        if header is None:
            if ctype != b"IHDR" or length != 13:
                raise layout_error(p, f"{what} is corrupt: the first chunk is {ctype!r}, expected IHDR")
            w, h, depth, colour = struct.unpack(">IIBB", data[pos + 8 : pos + 18])
            _check_side(p, what, w, h)
            if colour not in _PNG_DEPTHS or depth not in _PNG_DEPTHS[colour]:
                raise layout_error(p, f"{what} is corrupt: IHDR colour type {colour} with bit depth {depth}")
            header = ImageHeader("png", int(w), int(h), _PNG_CHANNELS[colour], int(depth))
        elif ctype == b"IDAT":
            n_idat += 1
        elif ctype == b"IEND":
            if end != n:
                raise layout_error(p, f"{what} has {n - end} bytes after its IEND chunk (damaged or concatenated)")
            break
        pos = end
    if n_idat == 0:
        raise layout_error(p, f"{what} is corrupt: no IDAT (image data) chunk")
    return header


def jpeg_header(path: str | Path, what: str = "JPEG image") -> ImageHeader:
    """Header of a complete JPEG: SOI, marker segments to the first SOS (with a SOFn frame header before it),
    and EOI at the end of the file (trailing zero bytes allowed). Reads only the header and the tail."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise layout_error(p, f"{what} is empty (0 bytes)")
            head = fh.read(min(size, 1 << 16))
            if head[:2] != JPEG_SOI:
                raise layout_error(p, f"{what} is not a JPEG file (no SOI marker)")
            header = _jpeg_segments(p, what, fh, head, size)
            tail_len = min(size, 4096)
            fh.seek(size - tail_len)
            tail = fh.read(tail_len).rstrip(b"\x00")
    except OSError as e:
        raise _open_error(p, e, what) from e
    if not tail.endswith(JPEG_EOI):
        raise layout_error(p, f"{what} is truncated or corrupt: it does not end with the JPEG EOI marker "
                              f"(FF D9); last bytes {tail[-4:].hex(' ')}")
    return header


def _jpeg_segments(p: Path, what: str, fh: BinaryIO, head: bytes, size: int) -> ImageHeader:
    """Walk the marker segments from byte 2 to the first SOS; return the SOFn header."""
    buf = bytearray(head)
    pos = 2
    header: ImageHeader | None = None

    def need(k: int) -> None:
        while len(buf) < k:
            more = fh.read(max(k - len(buf), 1 << 16))
            if not more:
                raise layout_error(p, f"{what} is truncated: its header ends at byte {len(buf)} "
                                      f"(file size {size})")
            buf.extend(more)

    while True:
        if pos > _MAX_JPEG_HEADER:
            raise layout_error(p, f"{what} is corrupt: no SOS marker in the first {_MAX_JPEG_HEADER} bytes")
        need(pos + 2)
        if buf[pos] != 0xFF:
            raise layout_error(p, f"{what} is corrupt: expected a marker (FF xx) at byte {pos}, got "
                                  f"{bytes(buf[pos:pos + 2]).hex(' ')}")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0x00):
            raise layout_error(p, f"{what} is corrupt: unexpected marker FF {marker:02X} at byte {pos} "
                                  "before the image data")
        need(pos + 4)
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2 or pos + 2 + length > size:
            raise layout_error(p, f"{what} is truncated or corrupt: segment FF {marker:02X} at byte {pos} "
                                  f"claims {length} bytes, the file has {size - pos - 2} left")
        if marker in _SOF_MARKERS:
            need(pos + 10)
            precision = buf[pos + 4]
            h = (buf[pos + 5] << 8) | buf[pos + 6]
            w = (buf[pos + 7] << 8) | buf[pos + 8]
            comps = buf[pos + 9]
            _check_side(p, what, w, h)
            if comps not in (1, 3, 4) or precision not in (8, 12, 16) or length != 8 + 3 * comps:
                raise layout_error(p, f"{what} is corrupt: frame header with {comps} components, "
                                      f"precision {precision}, length {length}")
            header = ImageHeader("jpeg", w, h, comps, precision)
        if marker == 0xDA:  # SOS: entropy-coded data follows
            if header is None:
                raise layout_error(p, f"{what} is corrupt: image data (SOS) before any frame header (SOFn)")
            return header
        pos += 2 + length


def image_header(path: str | Path, what: str = "image", check_crc: bool = True) -> ImageHeader:
    """``png_header`` or ``jpeg_header`` by the file's magic bytes (not its extension)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            magic = fh.read(8)
    except OSError as e:
        raise _open_error(p, e, what) from e
    if magic.startswith(PNG_SIGNATURE[:4]):
        return png_header(p, what, check_crc=check_crc)
    if magic.startswith(JPEG_SOI):
        return jpeg_header(p, what)
    if not magic:
        raise layout_error(p, f"{what} is empty (0 bytes)")
    raise layout_error(p, f"{what} is neither PNG nor JPEG (first bytes {magic[:4].hex(' ')})")


def verify_image(path: str | Path, what: str, *, fmt: str | None = None, size: tuple[int, int] | None = None,
                 size_source: str = "", channels: tuple[int, ...] | None = None,
                 bit_depth: tuple[int, ...] | None = None) -> ImageHeader:
    """Check an image file before it is copied or decoded; return its header.

    ``fmt``: ``"png"`` or ``"jpeg"`` (what the source writes; None accepts both). ``size``: the
    ``(width, height)`` the calibration states, named by ``size_source`` in the error. ``channels`` /
    ``bit_depth``: accepted values. Every error is a ``SourceLayoutError`` naming the file.
    """
    p = Path(path)
    if fmt == "png":
        hdr = png_header(p, what)
    elif fmt == "jpeg":
        hdr = image_header(p, what)
        if hdr.fmt != "jpeg":
            raise layout_error(p, f"{what} is a {hdr.fmt.upper()} file; the source writes JPEG here")
    else:
        hdr = image_header(p, what)
    if fmt == "png" and hdr.fmt != "png":
        raise layout_error(p, f"{what} is a {hdr.fmt.upper()} file; the source writes PNG here")
    if size is not None and hdr.size != (int(size[0]), int(size[1])):
        src = f" {size_source}" if size_source else " the calibration"
        raise layout_error(p, f"{what} is {hdr.width}x{hdr.height} pixels, but{src} says "
                              f"{int(size[0])}x{int(size[1])}")
    if channels is not None and hdr.channels not in channels:
        raise layout_error(p, f"{what} has {hdr.channels} channel(s); expected {' or '.join(map(str, channels))}")
    if bit_depth is not None and hdr.bit_depth not in bit_depth:
        raise layout_error(p, f"{what} has {hdr.bit_depth}-bit samples; expected "
                              f"{' or '.join(map(str, bit_depth))}-bit")
    return hdr


def decode_image(path: str | Path, flags: int, what: str) -> np.ndarray:
    """Decode an image file read by Python (byte-safe paths); ``SourceLayoutError`` naming it if undecodable."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise _open_error(p, e, what) from e
    img = imdecode(data, flags)
    if img is None:
        raise layout_error(p, f"cannot decode {what} ({len(data)} bytes)")
    return img


__all__ = ["ImageHeader", "MAX_IMAGE_SIDE", "decode_image", "image_header", "jpeg_header", "png_header",
           "verify_image"]
