"""EXIF orientation in JPEG and PNG files: find it, and drop it from a copy.

A wai pixel is a pixel of the stored grid: the size in the file's header, the one calibrations and COLMAP
models refer to. OpenCV's ``imread``/``imdecode`` apply an EXIF orientation tag by default (JPEG ``APP1 Exif``
segments and PNG ``eXIf`` chunks alike): a tag of 3 turns the image by 180 degrees and keeps its shape, so the
pixels no longer line up with the depth and the intrinsics, silently. wai therefore

* decodes with ``IMREAD_IGNORE_ORIENTATION`` everywhere (``wai.format.codecs.imdecode``, the loader), and
* copies a source image with every EXIF block that holds an orientation other than 1 (or one that cannot be
  read) removed (``without_orientation``), so that readers that honour the tag, MapAnything's ``cv2.imread``
  among them, see the same pixels as wai. Pixel data is never touched: the copy is lossless.

The validator reports an output image that still carries such a tag (``orientation_blocks``).
"""

from __future__ import annotations

import struct

#: The first bytes of every JPEG (start of image) and PNG file (also used by wai.format.codecs and the raw-media
#: checks of wai.converters._media).
JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ID = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_SHORT = 3
#: JPEG markers without a length field (TEM, RST0-7); also used by the raw-media checks (wai.converters._media)
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def tiff_orientation(tiff: bytes) -> int:
    """The orientation (1..8) in IFD0 of a TIFF-structured EXIF block; 1 when the tag is absent; 0 when the
    block cannot be read or the value is not 1..8 (a reader may still find a tag there)."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return 0
    e = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 0
    (n,) = struct.unpack(e + "H", tiff[ifd : ifd + 2])
    if ifd + 2 + 12 * n > len(tiff):
        return 0
    for k in range(n):
        off = ifd + 2 + 12 * k
        tag, typ, count = struct.unpack(e + "HHI", tiff[off : off + 8])
        if tag == _ORIENTATION_TAG:
            if typ != _SHORT or count != 1:
                return 0
            (value,) = struct.unpack(e + "H", tiff[off + 8 : off + 10])
            return value if 1 <= value <= 8 else 0
    return 1


def _jpeg_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, end, orientation)`` of each ``APP1 Exif`` segment before the image data of a JPEG."""
    out = []
    pos, n = 2, len(data)
    while pos + 4 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xDA or marker in (0xD8, 0xD9):  # SOS: entropy-coded data follows (or a malformed file)
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > n:
            break
        body = data[pos + 4 : end]
        if marker == 0xE1 and body.startswith(_EXIF_ID):
            out.append((pos, end, tiff_orientation(body[len(_EXIF_ID) :])))
        pos = end
    return out


def _png_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, end, orientation)`` of each ``eXIf`` chunk of a PNG."""
    out = []
    pos, n = 8, len(data)
    while pos + 12 <= n:
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > n:
            break
        if ctype == b"eXIf":
            out.append((pos, end, tiff_orientation(data[pos + 8 : end - 4])))
        if ctype == b"IEND":
            break
        pos = end
    return out


def orientation_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """``(start, end, orientation)`` of every EXIF block of a JPEG or PNG file's bytes (orientation 1 when the
    block has no orientation tag, 0 when it cannot be read); ``[]`` for other formats."""
    if data[:2] == JPEG_SOI:
        return _jpeg_blocks(data)
    if data[:8] == PNG_SIGNATURE:
        return _png_blocks(data)
    return []


def exif_orientation(data: bytes) -> int:
    """What an orientation-honouring reader applies: the first EXIF block's orientation (1 when there is no
    block or no tag; 0 when the block cannot be read)."""
    blocks = orientation_blocks(data)
    return blocks[0][2] if blocks else 1


def without_orientation(data: bytes) -> tuple[bytes, int]:
    """``data`` with every EXIF block removed whose orientation is not 1 (unreadable ones included), and how many
    were removed. Other segments and chunks, and the pixel data, are kept byte for byte."""
    drop = [(s, e) for s, e, o in orientation_blocks(data) if o != 1]
    if not drop:
        return data, 0
    parts, pos = [], 0
    for s, e in drop:
        parts.append(data[pos:s])
        pos = e
    parts.append(data[pos:])
    return b"".join(parts), len(drop)


__all__ = ["JPEG_SOI", "JPEG_STANDALONE", "PNG_SIGNATURE", "exif_orientation", "orientation_blocks", "tiff_orientation",
           "without_orientation"]
