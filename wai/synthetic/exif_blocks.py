"""EXIF blocks for fake source images: a camera's IFD0 (make, model, orientation) as a JPEG ``APP1 Exif``
segment or a PNG ``eXIf`` chunk, in either TIFF byte order. Used by the fakes (real DSLR JPEGs carry one) and
by the tests of ``wai.format.exif``."""

from __future__ import annotations

import struct
import zlib

_ASCII, _SHORT = 2, 3


def exif_tiff(orientation: int | None = 1, make: str = "NIKON CORPORATION", model: str = "NIKON D3X",
              big_endian: bool = False) -> bytes:
    """A TIFF-structured EXIF block: IFD0 with Make, Model and (unless None) Orientation, tags in order."""
    e = ">" if big_endian else "<"
    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value bytes
    for tag, text in ((0x010F, make), (0x0110, model)):
        raw = text.encode("ascii") + b"\x00"
        entries.append((tag, _ASCII, len(raw), raw))
    if orientation is not None:
        entries.append((0x0112, _SHORT, 1, struct.pack(e + "H", orientation)))
    ifd_size = 2 + 12 * len(entries) + 4
    data_off = 8 + ifd_size
    ifd, extra = struct.pack(e + "H", len(entries)), b""
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            field = struct.pack(e + "I", data_off + len(extra))
            extra += value
        ifd += struct.pack(e + "HHI", tag, typ, count) + field
    ifd += struct.pack(e + "I", 0)
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", 8)
    return head + ifd + extra


def jpeg_with_exif(jpeg: bytes, tiff: bytes) -> bytes:
    """``jpeg`` with an ``APP1 Exif`` segment holding ``tiff`` right after SOI (where cameras put it)."""
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def png_with_exif(png: bytes, tiff: bytes) -> bytes:
    """``png`` with an ``eXIf`` chunk holding ``tiff`` right after IHDR."""
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + chunk + png[ihdr_end:]


__all__ = ["exif_tiff", "jpeg_with_exif", "png_with_exif"]
