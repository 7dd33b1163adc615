"""Fuzz harness: seeded mutations of each source's fake raw tree must end in a clear error, recorded drops or
failed scenes; never a non-WaiError, a crash, or a frame written from bad data (issue 15).

For every source a small fake raw tree is written once and converted once (the *baseline*). Each mutation
works on a hard-linked copy of the tree (a mutated file is replaced, never edited in place), then runs
``--check-raw --dry-run`` and a full conversion with ``RunOptions(workers=1, progress=False)``. The oracle:

* ``run_conversion`` may raise only a ``WaiError``; every failed scene's error must be a ``WaiError`` too;
* every written frame must equal the baseline's frame of the same name (pose, intrinsics, size, image bytes
  and every modality's decoded array). The only exceptions are mutations that no checker can detect by
  construction, which say so (``Mutation.undetectable``): a byte changed inside a JPEG's entropy-coded data
  (JPEG has no checksum) or inside a headerless float32 file (a Velodyne scan, an ETH3D depth map); those may
  change only the modalities they feed;
* ``--check-raw`` reports every defect conversion finds: when it reports nothing, conversion must fail no
  scene and drop no frame beyond the baseline's drops and the source's legitimate reasons (``benign_drops``,
  e.g. a KITTI-360 frame whose pose line was removed is dropped as ``no_pose``, as real data does).

The default suite runs ``DEFAULT_SEEDS`` mutations per source (three of each kind); the nightly-size run is
``pytest -m fuzz`` (``WAI_FUZZ_N`` mutations per source, default 200; ``WAI_FUZZ_SOURCES`` to restrict).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wai.converters import get_converter
from wai.errors import WaiError
from wai.format.codecs import cv2, decode
from wai.format.scene import load_scene
from wai.run import RunOptions, run_conversion
from wai.synthetic import get_fake

KINDS = ("truncate", "zero", "flip", "nanify", "drop_line", "dup_line", "swap_size", "break_format",
         "unreadable_dir")
#: Seeds of the default (fast) subset: seed i < len(DEFAULT_SEEDS) mutates with KINDS[i % len(KINDS)], so three
#: of each kind per source (about 25 s for the five sources on 2 cores); later seeds draw the kind at random.
DEFAULT_SEEDS = tuple(range(3 * len(KINDS)))
_TEXT_EXT = {".txt", ".yaml", ".json", ".pcd"}
_NUM_RE = re.compile(rb"(?<![A-Za-z_\d.])[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def _waierror_names() -> set[str]:
    out, todo = set(), [WaiError]
    while todo:
        c = todo.pop()
        out.add(c.__name__)
        todo.extend(c.__subclasses__())
    return out


# --- sources ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzSource:
    """How to build a small fake of one source and convert it."""

    make: Callable[[Path], Any]
    options: dict[str, Any]
    #: Drop reasons a valid (if unusual) raw tree may produce: not a defect check-raw must report.
    benign_drops: tuple[str, ...] = ()
    #: Text files whose writer always ends them with a newline, so the converter refuses one without it (a
    #: file cut inside its last number). Elsewhere such a cut is undetectable and marked so.
    final_newline: str = r"$^"


SOURCES: dict[str, FuzzSource] = {
    "kitti360": FuzzSource(
        lambda root: get_fake("kitti360")(root, n_frames=4, no_pose_index=2, n_val=1, lidar_channels=16,
                                          lidar_h_res_deg=1.0, scale=0.25),
        {"cameras": "00,01", "frames_per_scene": 2}, benign_drops=("no_pose", "no_semantics"),
        final_newline=r"data_poses/"),
    "opv2v": FuzzSource(
        lambda root: get_fake("opv2v")(root, n_scenes=1, n_agents=2, n_timestamps=2, lidar_channels=16,
                                       lidar_h_res_deg=2.0, cam_size=(96, 72)),
        {"width": 128, "height": 32, "also_pinhole": True}, final_newline=r"\.yaml$"),
    "eth3d": FuzzSource(
        lambda root: get_fake("eth3d")(root, n_scenes=2, n_images=3, w=96, h=64, points_per_image=30,
                                       real_shapes=True),
        {}, final_newline=r"dslr_calibration_"),
    "co3d": FuzzSource(lambda root: get_fake("co3d")(root, n_frames=3, real_shapes=True), {"min_quality": 0.2},
                       benign_drops=("no frame annotation",)),
    "vkitti2": FuzzSource(lambda root: get_fake("vkitti2")(root, n_frames=2, w=124, h=38), {}),
}


@dataclass
class Baseline:
    """The fake raw tree of a source and its unmutated conversion."""

    name: str
    raw: Path
    out: Path
    frames: dict[tuple[str, str], dict[str, Any]]  # frame key -> frame dict plus "_dir" (its scene dir)
    drops: Counter[str]  # drop reason -> frames dropped with it
    skipped: dict[str, str]  # scenes the listing skipped on purpose, with the reason
    files: list[Path]  # raw files (relative)
    dirs: list[Path]  # raw folders (relative)


def _frame_key(meta: dict[str, Any], frame: dict[str, Any]) -> tuple[str, str]:
    """Scene-independent identity of a frame: KITTI-360 scenes are cut by frame count, so their names move
    when a frame is dropped; key those by sequence."""
    extras = frame.get("extras") or {}
    group = extras.get("sequence") or (meta.get("source") or {}).get("sequence") or meta["scene_name"]
    if meta["dataset_name"] != "kitti360":
        group = meta["scene_name"]
    return str(group), str(frame["frame_name"])


def _collect(out: Path, res: Any) -> tuple[dict[tuple[str, str], dict[str, Any]], Counter[str]]:
    """Written frames (by ``_frame_key``) of the finished scenes, and how many frames each drop reason took."""
    frames: dict[tuple[str, str], dict[str, Any]] = {}
    for r in res.results:
        d = out / r.name
        if r.status != "finished" or not (d / "scene_meta.json").is_file():
            continue
        meta = load_scene(d).meta
        for f in meta["frames"]:
            frames[_frame_key(meta, f)] = {**f, "_dir": d, "_mods": meta["frame_modalities"]}
    drops: Counter[str] = Counter()
    for r in res.results:
        drops.update({str(k): int(v) for k, v in r.drop_reasons.items()})
    return frames, drops


def _convert(name: str, raw: Path, out: Path, check: bool = False) -> Any:
    cls = get_converter(name)
    conv = cls(raw, cls.Options(**SOURCES[name].options))
    return run_conversion(conv, out, RunOptions(workers=1, progress=False, check_raw=check, dry_run=check))


@cache
def baseline(name: str, tmp: Path) -> Baseline:
    raw = tmp / name / "raw"
    SOURCES[name].make(raw)
    out = tmp / name / "out"
    res = _convert(name, raw, out)
    assert res.ok and not res.empty, [r.error for r in res.failed]
    frames, drops = _collect(out, res)
    files = sorted(p.relative_to(raw) for p in raw.rglob("*") if p.is_file())
    dirs = sorted(p.relative_to(raw) for p in raw.rglob("*") if p.is_dir())
    return Baseline(name, raw, out, frames, drops, _skipped(res), files, dirs)


def _skipped(res: Any) -> dict[str, str]:
    return dict((res.manifest or {}).get("scenes_skipped_by_converter") or {})


# --- mutations ----------------------------------------------------------------------------------------


@dataclass
class Mutation:
    kind: str
    target: str
    detail: str = ""
    #: Modalities this mutation may change without any checker being able to tell (see the module doc).
    undetectable: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind} {self.target} {self.detail}".strip()


def _jpeg_structure(data: bytes) -> list[int]:
    """Byte offsets a JPEG checker can see: SOI, each marker and length field up to SOS, the frame header
    (SOFn), and EOI. (Table contents and entropy-coded data carry no checksum: a change there is undetectable.)"""
    out = [0, 1, len(data) - 2, len(data) - 1]
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = (data[pos + 2] << 8) | data[pos + 3]
        out += [pos, pos + 1, pos + 2, pos + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            out += list(range(pos + 4, pos + 10))
        if marker == 0xDA:
            break
        pos += 2 + length
    return sorted({i for i in out if 0 <= i < len(data)})


def _media_kind(p: Path, data: bytes | None = None) -> str:
    """What a raw file holds, by content (ETH3D depth maps are raw float32 named ``.JPG``)."""
    head = data[:8] if data is not None else p.read_bytes()[:8]
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if p.suffix.lower() in _TEXT_EXT:
        return "text"
    return "binary"


def _write(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def _load_text_payload(path: Path) -> tuple[bytes, Callable[[bytes], bytes]]:
    """The text inside a file (gzip'd JSON is decompressed) and the function that writes it back."""
    raw = path.read_bytes()
    if path.suffix == ".jgz":
        return gzip.decompress(raw), gzip.compress
    return raw, lambda b: b


def _numeric_spans(text: bytes) -> list[tuple[int, int]]:
    return [m.span() for m in _NUM_RE.finditer(text)]


def _swap_size(path: Path, data: bytes) -> bytes | None:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, w // 2), max(1, h // 2 + 1)), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png" if path.suffix.lower() == ".png" else ".jpg", small)
    return buf.tobytes() if ok else None


def mutate(base: Baseline, root: Path, seed: int) -> Mutation:
    """Apply mutation ``seed`` to the hard-linked copy ``root`` of ``base.raw``; return what was done."""
    rng = random.Random(f"{base.name}:{seed}")
    kind = KINDS[seed % len(KINDS)] if seed < len(DEFAULT_SEEDS) else rng.choice(KINDS)
    files = [f for f in base.files if (root / f).stat().st_size > 0 or kind != "truncate"]

    def pick(pred: Callable[[Path], bool]) -> Path:
        cands = [f for f in files if pred(f)] or files
        return rng.choice(cands)

    if kind == "unreadable_dir":
        dirs = [d for d in base.dirs if d.parts]
        d = rng.choice(dirs)
        shutil.rmtree(root / d)
        (root / d).symlink_to(root / d)  # a symlink loop: exists, cannot be listed
        return Mutation(kind, str(d))
    if kind == "swap_size":
        f = pick(lambda p: _media_kind(root / p) in ("png", "jpeg"))
        new = _swap_size(root / f, (root / f).read_bytes())
        if new is not None:
            _write(root / f, new)
            return Mutation(kind, str(f), "re-encoded at another size")
        kind = "truncate"
    if kind in ("nanify", "drop_line", "dup_line", "break_format"):
        f = pick(lambda p: _media_kind(root / p) in ("text", "gzip"))
        text, back = _load_text_payload(root / f)
        lines = text.splitlines(keepends=True)
        if kind == "nanify":
            spans = _numeric_spans(text)
            if spans:
                a, b = rng.choice(spans)
                if f.suffix == ".yaml":
                    rep = rng.choice([b".nan", b".inf", b"-.inf", b"1e308", b"-9e99"])
                elif f.suffix in (".json", ".jgz"):
                    rep = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e308", b"-9e99"])
                else:
                    rep = rng.choice([b"nan", b"inf", b"-inf", b"1e308", b"-9e99", b"99999999999999999999"])
                _write(root / f, back(text[:a] + rep + text[b:]))
                return Mutation(kind, str(f), f"bytes {a}:{b} {text[a:b]!r} -> {rep!r}")
            kind = "break_format"
        if kind in ("drop_line", "dup_line") and len(lines) > 1:
            k = rng.randrange(len(lines))
            if kind == "drop_line":
                new_lines = lines[:k] + lines[k + 1:]
            else:
                new_lines = lines[:k + 1] + lines[k:]
            _write(root / f, back(b"".join(new_lines)))
            return Mutation(kind, str(f), f"line {k + 1}")
        if kind in ("drop_line", "dup_line") and f.suffix in (".json", ".jgz"):
            obj = json.loads(text)
            lst = obj if isinstance(obj, list) else next((v for v in obj.values() if isinstance(v, list) and v), None)
            if lst:
                k = rng.randrange(len(lst))
                if kind == "drop_line":
                    del lst[k]
                else:
                    lst.insert(k, lst[k])
                _write(root / f, back(json.dumps(obj).encode()))
                return Mutation(kind, str(f), f"list entry {k}")
        # break_format (or nothing else applied)
        if f.suffix == ".jgz" and rng.random() < 0.5:
            raw = (root / f).read_bytes()
            cut = rng.randrange(1, len(raw))
            _write(root / f, raw[:cut])
            return Mutation("break_format", str(f), f"gzip truncated at {cut}")
        junk = rng.choice([b"{[: unclosed \x00", b"\xff\xfe\xfd", b"key: [1, 2\n  - x", b"\"", b"\n\n#\n"])
        k = rng.randrange(len(text) + 1)
        _write(root / f, back(text[:k] + junk + text[k:]))
        return Mutation("break_format", str(f), f"{junk!r} at byte {k}")
    # byte-level kinds on any file
    f = pick(lambda p: True)
    data = (root / f).read_bytes()
    mk = _media_kind(f, data)
    if kind == "truncate" and data:
        cut = rng.randrange(len(data))
        _write(root / f, data[:cut])
        und = ()
        in_last_line = b"\n" not in data[cut:].rstrip(b"\n")
        if mk == "text" and in_last_line and not re.search(SOURCES[base.name].final_newline, str(f)):
            und = ("*",)  # cut inside the last line of a file whose writer may omit the final newline
        return Mutation(kind, str(f), f"{len(data)} -> {cut} bytes", undetectable=und)
    if kind == "zero" or not data:
        if rng.random() < 0.5 or len(data) < 4:
            _write(root / f, b"")
            return Mutation("zero", str(f), "0 bytes")
        a = rng.randrange(len(data))
        b = min(len(data), a + rng.randint(1, 64))
        _write(root / f, data[:a] + bytes(b - a) + data[b:])
        und = ("depth", "sparse_depth") if mk == "binary" else ()
        if mk == "jpeg" and not any(a <= i < b for i in _jpeg_structure(data)):
            und = ("image",)  # tables or entropy-coded data: JPEG has no checksum
        return Mutation("zero", str(f), f"bytes {a}:{b} zeroed", undetectable=und)
    # flip
    buf = bytearray(data)
    und: tuple[str, ...] = ()
    positions = list(range(len(buf)))
    if mk == "jpeg":
        if rng.random() < 0.8:
            positions = _jpeg_structure(data)  # where a checker can see it
        else:
            und = ("image",)  # table or entropy-coded bytes: JPEG has no checksum
    elif mk == "binary":
        und = ("depth", "sparse_depth")  # headerless float32: any value is a valid float
    flips = []
    for _ in range(rng.randint(1, 4)):
        i = rng.choice(positions)
        if mk == "text":
            new = rng.choice(b"xyz!@%&*(){}|?\x80\xfe\x00")
        else:
            new = (buf[i] ^ (1 << rng.randrange(8))) & 0xFF
        flips.append(i)
        buf[i] = new
    _write(root / f, bytes(buf))
    return Mutation("flip", str(f), f"bytes {flips}", undetectable=und)


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=os.link, symlinks=True)


# --- oracle -------------------------------------------------------------------------------------------


def _equal_file(fmt: str, a: Path, b: Path) -> bool:
    if a.read_bytes() == b.read_bytes():
        return True
    if fmt == "image":
        return False
    return np.array_equal(decode(a, fmt), decode(b, fmt))


def _frame_diffs(base: Baseline, key: tuple[str, str], fr: dict[str, Any]) -> list[str]:
    """Which parts of a written frame differ from the baseline's frame."""
    ref = base.frames.get(key)
    if ref is None:
        return ["<frame not in the baseline>"]
    out = []
    for k in ("transform_matrix", "w", "h", "fl_x", "fl_y", "cx", "cy", "camera_model"):
        if fr.get(k) != ref.get(k):
            out.append(k)
    for name, spec in fr["_mods"].items():
        fk = spec.get("frame_key", name)
        if fk not in fr or fk not in ref:
            out.append(name)
            continue
        if not _equal_file(spec.get("format", "image"), fr["_dir"] / fr[fk], ref["_dir"] / ref[fk]):
            out.append(name)
    return out


@dataclass
class Outcome:
    mutation: Mutation
    result: str  # error | failed | dropped | unchanged | undetectable_diff
    problems: list[str] = field(default_factory=list)  # oracle violations (empty = pass)
    detail: str = ""


def run_one(base: Baseline, seed: int, work: Path) -> Outcome:
    """Mutate, check-raw, convert, and judge one seed."""
    names = _waierror_names()
    root = work / f"raw_{seed}"
    _copy_tree(base.raw, root)
    m = mutate(base, root, seed)
    problems: list[str] = []
    check_found = False
    try:
        _convert(base.name, root, work / f"chk_{seed}", check=True)
    except WaiError:
        check_found = True
    except Exception as e:  # noqa: BLE001 - the oracle records any other exception as a violation
        problems.append(f"--check-raw raised {type(e).__name__}: {e}")
    out = work / f"out_{seed}"
    try:
        res = _convert(base.name, root, out)
    except WaiError as e:
        return Outcome(m, "error", problems, str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001
        return Outcome(m, "error", [*problems, f"run_conversion raised {type(e).__name__}: {e}"])
    failed = [r for r in res.results if r.status == "failed"]
    for r in failed:
        typ = (r.error or "").split(":", 1)[0]
        if typ not in names:
            problems.append(f"scene {r.name} failed with a non-WaiError: {(r.error or '').splitlines()[0]}")
    frames, drops = _collect(out, res)
    any_diff = False
    for key, fr in frames.items():
        diffs = _frame_diffs(base, key, fr)
        if not diffs:
            continue
        any_diff = True
        if "*" not in m.undetectable and not set(diffs) <= set(m.undetectable):
            problems.append(f"frame {key} written from bad data (differs from the baseline in {diffs})")
    new_drops = {d for d, n in drops.items() if n > base.drops.get(d, 0)}
    suspicious = {d for d in new_drops if not d.startswith(SOURCES[base.name].benign_drops)}
    if not check_found and (failed or suspicious):
        what = [r.name for r in failed] + sorted(d[:160] for d in suspicious)
        problems.append(f"--check-raw reported nothing but conversion failed/dropped: {what}")
    new_skips = {k: v for k, v in _skipped(res).items() if base.skipped.get(k) != v}
    vanished = sorted(set(base.frames) - set(frames))
    if vanished and not (failed or new_drops or new_skips or check_found):
        problems.append(f"frames vanished without a failed scene, a drop, a skip or a --check-raw problem: "
                        f"{vanished[:4]}")
    if failed:
        result = "failed"
    elif new_drops:
        result = "dropped"
    elif any_diff:
        result = "undetectable_diff"
    else:
        result = "unchanged"
    shutil.rmtree(root, ignore_errors=True)
    return Outcome(m, result, problems)


def _run_source(name: str, seeds: list[int], tmp: Path) -> list[Outcome]:
    base = baseline(name, tmp / "base")
    work = tmp / f"work_{name}"
    work.mkdir(parents=True, exist_ok=True)
    return [run_one(base, s, work) for s in seeds]


def _report(name: str, outcomes: list[Outcome], seconds: float) -> str:
    counts = Counter(o.result for o in outcomes)
    kinds = Counter(o.mutation.kind for o in outcomes)
    return (f"{name}: {len(outcomes)} mutations in {seconds:.1f} s; outcomes {dict(sorted(counts.items()))}; "
            f"kinds {dict(sorted(kinds.items()))}")


def _assert_ok(name: str, outcomes: list[Outcome]) -> None:
    bad = [f"seed {i}: {o.mutation}: {p}" for i, o in enumerate(outcomes) for p in o.problems]
    assert not bad, f"{name}: {len(bad)} oracle violation(s):\n" + "\n".join(bad[:30])


@pytest.fixture(scope="module")
def fuzz_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_fuzz_default_subset(name: str, fuzz_tmp: Path) -> None:
    """Three mutations of each kind per source (the fast, fixed subset of the nightly run)."""
    t0 = time.perf_counter()
    outcomes = _run_source(name, list(DEFAULT_SEEDS), fuzz_tmp)
    print(_report(name, outcomes, time.perf_counter() - t0))
    _assert_ok(name, outcomes)


@pytest.mark.fuzz
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_fuzz_nightly(name: str, fuzz_tmp: Path) -> None:
    """``WAI_FUZZ_N`` (default 200) seeded mutations per source."""
    only = os.environ.get("WAI_FUZZ_SOURCES")
    if only and name not in only.split(","):
        pytest.skip(f"WAI_FUZZ_SOURCES={only}")
    n = int(os.environ.get("WAI_FUZZ_N", "200"))
    t0 = time.perf_counter()
    outcomes = _run_source(name, list(range(n)), fuzz_tmp)
    print(_report(name, outcomes, time.perf_counter() - t0))
    _assert_ok(name, outcomes)
