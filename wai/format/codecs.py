"""File codecs: RGB images, depth EXR, binary masks and label maps.

This module is the one place that enables OpenEXR in OpenCV (``OPENCV_IO_ENABLE_OPENEXR``) before
``cv2`` is imported; every other module gets ``cv2`` from here (``from wai.format.codecs import cv2``).

Read functions return documented dtypes and shapes:

========================  ==========================================  ===============================
function                  returns                                     on disk
========================  ==========================================  ===============================
``read_image``            uint8 ``[H, W, 3]`` **RGB**                 JPEG or PNG, 8-bit
``read_depth``            float32 ``[H, W]``, metres, 0 = no data     single-channel EXR (half/float)
``read_mask``             bool ``[H, W]``                             8-bit PNG, 0 / 255 (``> 127``)
``read_labels``           uint8 or uint16 ``[H, W]`` ids              8- or 16-bit PNG
========================  ==========================================  ===============================
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402  (must follow the environment variable)
import numpy as np  # noqa: E402

from wai.errors import SceneNotFoundError, SchemaError  # noqa: E402
from wai.format.exif import JPEG_SOI, PNG_SIGNATURE  # noqa: E402

__all__ = [
    "cv2",
    "DEPTH_PRECISIONS",
    "FLOAT16_MAX",
    "encode_image",
    "encode_depth",
    "encode_mask",
    "encode_labels",
    "read_image",
    "read_depth",
    "read_mask",
    "read_labels",
    "decode",
    "imdecode",
    "imread_bytes_safe",
    "read_file_bytes",
]

DEPTH_PRECISIONS = ("float16", "float32")
#: Largest finite float16; depth beyond it cannot be stored in a half EXR.
FLOAT16_MAX = 65504.0
#: JPEG quality used for RGB (libjpeg-turbo q95: ~1.2 ms decode at 1242x375; see docs/performance.md).
JPEG_QUALITY = 95
#: PNG zlib level: 1 is 10-40x faster to encode than 9 for a few % more bytes (MapAnything uses 1 too).
PNG_LEVEL = 1
#: EXR compression. ZIP is what MapAnything writes and compresses sparse LiDAR depth best.
EXR_COMPRESSION = cv2.IMWRITE_EXR_COMPRESSION_ZIP


def _encode(ext: str, img: np.ndarray, params: list[int], what: str) -> bytes:
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise SchemaError(f"OpenCV could not encode {what} as {ext} (array {img.dtype} {img.shape})")
    return buf.tobytes()


def imwrite_bytes_safe(path: str | Path, img: np.ndarray, params: Sequence[int] = ()) -> Path:
    """``cv2.imwrite`` for any path: encoded by the path's extension (OpenCV channel order, as ``imwrite``)
    and written by Python, since ``cv2.imwrite(str(path))`` crashes the process on a name that is not valid
    UTF-8 (the fakes' writer; outputs go through ``SceneWriter``'s atomic writes)."""
    p = Path(path)
    p.write_bytes(_encode(p.suffix.lower(), np.asarray(img), list(params), str(p)))
    return p


def encode_image(rgb: np.ndarray, ext: str = ".jpg", quality: int = JPEG_QUALITY) -> bytes:
    """Encode an RGB uint8 ``[H, W, 3]`` image as JPEG or PNG bytes."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SchemaError(f"RGB image must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # ~100x a numpy channel flip + copy on 2048x576
    ext = ext.lower()
    if ext in (".jpg", ".jpeg"):
        return _encode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)], "RGB image")
    if ext == ".png":
        return _encode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL], "RGB image")
    raise SchemaError(f"unsupported image extension {ext!r}; expected .jpg or .png")


def encode_depth(depth: np.ndarray, precision: str = "float16") -> bytes:
    """Encode a depth map (metres, 0 = no data) as single-channel EXR bytes.

    Raises ``SchemaError`` for NaN/inf or negative values (converters must clean them first: NaN is
    never written) and, for ``float16``, for values above 65504.
    """
    if precision not in DEPTH_PRECISIONS:
        raise SchemaError(f"depth precision {precision!r}; expected one of {DEPTH_PRECISIONS}")
    d = np.asarray(depth)
    if d.ndim != 2:
        raise SchemaError(f"depth must be a 2-D [H, W] array, got shape {d.shape}")
    d = d.astype(np.float32, copy=False)
    if not np.all(np.isfinite(d)):
        raise SchemaError("depth contains NaN or inf; store 0 where there is no data")
    if d.size and d.min() < 0:
        raise SchemaError(f"depth contains negative values (min {float(d.min())}); 0 means no data")
    if precision == "float16" and d.size and d.max() > FLOAT16_MAX:
        raise SchemaError(f"depth {float(d.max())} exceeds float16 range; use --depth-precision float32")
    exr_type = cv2.IMWRITE_EXR_TYPE_HALF if precision == "float16" else cv2.IMWRITE_EXR_TYPE_FLOAT
    params = [cv2.IMWRITE_EXR_TYPE, exr_type, cv2.IMWRITE_EXR_COMPRESSION, EXR_COMPRESSION]
    return _encode(".exr", np.ascontiguousarray(d), params, "depth")


def encode_mask(mask: np.ndarray) -> bytes:
    """Encode a boolean ``[H, W]`` mask as an 8-bit PNG with values 0 and 255."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise SchemaError(f"mask must be 2-D [H, W], got shape {m.shape}")
    return _encode(".png", (m.astype(bool) * np.uint8(255)), [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL], "mask")


def encode_labels(labels: np.ndarray) -> bytes:
    """Encode a uint8 or uint16 ``[H, W]`` label map as PNG (ids unchanged)."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype not in (np.uint8, np.uint16):
        raise SchemaError(f"label map must be uint8/uint16 [H, W], got {lab.dtype} {lab.shape}")
    return _encode(".png", np.ascontiguousarray(lab), [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL], "label map")


def is_truncated(data: bytes, ext: str) -> bool:
    """True when a JPEG has no end-of-image marker after its last scan, or a PNG no ``IEND`` chunk at its end
    (files whose first bytes are not the extension's format are left to the decoder).

    ``cv2.imread`` decodes a JPEG file cut short without an error (the missing rows come out grey, with a warning
    on stderr), so readers check this before decoding; a truncated PNG or EXR fails to decode on its own.
    """
    if ext in (".jpg", ".jpeg") and data[:2] == JPEG_SOI:
        if data[-64:].rstrip(b"\x00").endswith(b"\xff\xd9"):  # the usual end: no need to scan the whole file
            return False
        sos = data.rfind(b"\xff\xda")
        return sos < 0 or data.rfind(b"\xff\xd9") < sos
    if ext == ".png" and data[:8] == PNG_SIGNATURE:
        iend = data.rfind(b"IEND")
        return iend < 0 or iend + 8 > len(data)
    return False  # not what the extension says (or another format): the decoder reports it


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of ``path``, read with Python's own file API (byte-safe paths; see ``read_file_bytes``)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return fh.read()
    except FileNotFoundError as e:
        raise SceneNotFoundError(f"missing {what} file: {p}") from e
    except IsADirectoryError as e:
        raise SchemaError(f"{p}: expected a {what} file, found a directory") from e
    except OSError as e:
        raise SchemaError(f"{p}: cannot read {what} ({e.strerror or e})") from e


def read_file_bytes(path: str | Path, what: str = "file") -> np.ndarray:
    """The bytes of ``path`` as a uint8 array, read with Python's own file API.

    Byte-safe: any path the OS accepts works, including names that are not valid UTF-8 (Python keeps such
    bytes as surrogate escapes, which ``cv2.imread(str(path))`` cannot take: it crashes the process).
    Raises ``SceneNotFoundError`` when the file is missing and ``SchemaError`` naming it when it cannot be read.
    """
    return np.frombuffer(read_bytes(path, what), dtype=np.uint8)


def imdecode(buf: np.ndarray | bytes, flags: int) -> np.ndarray | None:
    """``cv2.imdecode`` of encoded bytes, or None when OpenCV cannot decode them (empty or corrupt data)."""
    arr = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, (bytes, bytearray, memoryview)) else buf
    if arr.size == 0:
        return None
    try:
        # the stored pixel grid, whatever an EXIF orientation tag says (see wai.format.exif)
        return cv2.imdecode(arr, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:  # OpenCV raises (instead of returning None) on some malformed headers
        return None


def imread_bytes_safe(path: str | Path, flags: int, what: str = "image", where: str = "") -> np.ndarray | None:
    """Decode the file at ``path``, or None if OpenCV cannot decode it. Use this instead of
    ``cv2.imread(str(path))`` everywhere: any path works (see ``read_file_bytes``).

    JPEG and PNG are read by Python, checked complete (``is_truncated``: ``cv2.imread`` decodes a JPEG cut
    short without an error) and decoded from memory. OpenCV decodes EXR bytes only through a temporary file in
    ``$TMPDIR`` (0.3-0.8 ms more per map here): an EXR at an ASCII path goes to ``cv2.imread`` instead.
    Raises ``SceneNotFoundError`` when the file is missing and ``SchemaError`` when it is truncated, naming the
    file and ``where`` (e.g. the frame that points to it).
    """
    p = os.fspath(path)
    at = f" ({where})" if where else ""
    ext = os.path.splitext(p)[1].lower()
    if ext == ".exr" and p.isascii():
        try:
            img = cv2.imread(p, flags)
        except cv2.error:  # raised (instead of returning None) on some malformed headers
            img = None
        if img is None and not os.path.isfile(p):  # stat only on failure: this is the loader's hot path
            raise SceneNotFoundError(f"missing {what} file: {p}{at}")
        return img
    try:
        data = read_bytes(p, what)
    except SceneNotFoundError as e:
        raise SceneNotFoundError(f"missing {what} file: {p}{at}") from e
    if is_truncated(data, ext):
        raise SchemaError(f"{p}: {what} file is truncated ({len(data)} bytes, no end marker){at}; re-write or "
                          "re-copy it")
    return imdecode(data, flags)


def _imread(path: str | Path, flags: int, what: str) -> np.ndarray:
    p = Path(path)
    img = imread_bytes_safe(p, flags, what)
    if img is None:
        raise SchemaError(f"{p}: could not decode {what} (corrupt file or wrong extension)")
    return img


def imread_rgb(path: str | Path) -> np.ndarray | None:
    """uint8 ``[H, W, 3]`` RGB (grey and RGBA inputs are converted), or None if OpenCV cannot decode it.

    Decoded straight into RGB order (OpenCV >= 4.10), saving a full-image BGR->RGB copy per read.
    """
    return imread_bytes_safe(path, cv2.IMREAD_COLOR_RGB)


def read_image(path: str | Path) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB image (grey and RGBA inputs are converted)."""
    return _imread(path, cv2.IMREAD_COLOR_RGB, "image")


def read_depth(path: str | Path) -> np.ndarray:
    """float32 ``[H, W]`` depth from an EXR (the first channel if several)."""
    d = _imread(path, cv2.IMREAD_UNCHANGED, "depth")
    if d.ndim == 3:
        d = d[..., 0]
    return d.astype(np.float32, copy=False)


def read_mask(path: str | Path) -> np.ndarray:
    """bool ``[H, W]`` mask (``value > 127``)."""
    m = _imread(path, cv2.IMREAD_UNCHANGED, "mask")
    if m.ndim == 3:
        m = m[..., 0]
    return m > 127


def read_labels(path: str | Path) -> np.ndarray:
    """uint8 or uint16 ``[H, W]`` label ids."""
    lab = _imread(path, cv2.IMREAD_UNCHANGED, "label map")
    if lab.ndim == 3:
        lab = lab[..., 0]
    return lab


#: Modality ``format`` -> (reader, encoder). ``image`` encoders take the file extension.
READERS = {"image": read_image, "depth": read_depth, "binary": read_mask, "labels": read_labels}
FORMATS = ("image", "depth", "binary", "labels", "numpy")


def decode(path: str | Path, fmt: str) -> np.ndarray:
    """Read a modality file of the given ``format`` (``image``, ``depth``, ``binary``, ``labels``, ``numpy``)."""
    if fmt == "numpy":
        p = Path(path)
        if not p.is_file():
            raise SceneNotFoundError(f"missing numpy file: {p}")
        arr = np.load(p)
        return arr["arr_0"] if isinstance(arr, np.lib.npyio.NpzFile) else arr
    if fmt not in READERS:
        raise SchemaError(f"unknown modality format {fmt!r}; expected one of {FORMATS}")
    return READERS[fmt](path)
