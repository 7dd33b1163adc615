"""The scene metadata schema (``scene_meta.json``) as frozen dataclasses.

Every field carries its documentation (dtype, unit, frame, path semantics) in ``metadata["doc"]`` and
its JSON type in ``metadata["schema"]``; ``json_schema()`` renders ``scene_meta.schema.json`` from them
(a test keeps the shipped file in sync) and ``docs/format.md`` documents every field (also tested).

``check_meta(d)`` reports *every* structural problem of a raw dict (used by the validator);
``SceneMeta.from_dict`` raises ``SchemaError`` listing them.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from wai.errors import SchemaError
from wai.format.conventions import CAMERA_MODELS, DEPTH_TYPE_OF_MODEL, SCALE_TYPES

MODALITY_FORMATS = ("image", "depth", "binary", "labels", "numpy")
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
SCHEMA_PATH = Path(__file__).with_name("scene_meta.schema.json")

_MAT4 = {"type": "array", "minItems": 4, "maxItems": 4,
         "items": {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "number"}}}


def _f(doc: str, schema: dict[str, Any], default: Any = MISSING, key: str | None = None) -> Any:
    meta = {"doc": doc, "schema": schema, "key": key}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def json_key(f: Any) -> str:
    """JSON key of a dataclass field (``applied_transforms`` is stored as ``_applied_transforms``)."""
    return f.metadata.get("key") or f.name


@dataclass(frozen=True)
class ModalitySpec:
    """One entry of ``frame_modalities``: where a per-frame file is referenced and how it is encoded."""

    frame_key: str = _f("key in each frame dict whose value is the file path, relative to the scene root",
                        {"type": "string"})
    format: str = _f("codec: `image` (8-bit RGB JPEG/PNG), `depth` (single-channel EXR, metres, 0 = no data), "
                     "`binary` (PNG 0/255), `labels` (8/16-bit PNG of ids), `numpy` (.npy/.npz)",
                     {"type": "string", "enum": list(MODALITY_FORMATS)})
    labels: str | None = _f("for `labels`: name of the id table in `label_tables` (e.g. `kitti360`)",
                            {"type": ["string", "null"]}, default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``labels`` omitted when unset)."""
        d: dict[str, Any] = {"frame_key": self.frame_key, "format": self.format}
        if self.labels is not None:
            d["labels"] = self.labels
        return d


@dataclass(frozen=True)
class Frame:
    """One image of a scene. Modality paths and extras are stored flat in the frame dict (WAI)."""

    frame_name: str = _f("unique name inside the scene, `[A-Za-z0-9_.-]`", {"type": "string", "pattern": NAME_PATTERN})
    file_path: str = _f("relative path of the RGB image (Nerfstudio/WAI key; equals `image`)", {"type": "string"})
    image: str = _f("relative path of the RGB image (the `image` modality's `frame_key`)", {"type": "string"})
    transform_matrix: list[list[float]] = _f(
        "4x4 camera-to-world pose, OpenCV camera axes (x right, y down, z forward), scene world frame, metres "
        "(or scene units when `scale_type` is `relative`); rotation proper (det +1)", _MAT4)
    w: int = _f("image width in pixels", {"type": "integer", "minimum": 1})
    h: int = _f("image height in pixels", {"type": "integer", "minimum": 1})
    fl_x: float = _f("focal length along x in pixels (CYLINDRICAL: pixels per radian of azimuth)",
                     {"type": "number", "exclusiveMinimum": 0})
    fl_y: float = _f("focal length along y in pixels (CYLINDRICAL: pixels per unit of y/rho)",
                     {"type": "number", "exclusiveMinimum": 0})
    cx: float = _f("principal point x in pixels, pixel centres at integer coordinates (OpenCV)", {"type": "number"})
    cy: float = _f("principal point y in pixels, pixel centres at integer coordinates (OpenCV)", {"type": "number"})
    camera_model: str | None = _f("overrides the scene's `camera_model` for this frame",
                                  {"type": "string", "enum": list(CAMERA_MODELS)}, default=None)
    modalities: dict[str, str] = _f("modality frame keys (e.g. `depth`) -> relative path; stored flat in the frame",
                                    {"type": "object"}, default={})
    extras: dict[str, Any] = _f("free-form JSON extras stored flat (e.g. `timestamp`, `agent_id`); ignored by "
                                "the loader", {"type": "object"}, default={})

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON dict as WAI stores it."""
        d: dict[str, Any] = {
            "frame_name": self.frame_name, "file_path": self.file_path, "image": self.image,
            "transform_matrix": [[float(x) for x in row] for row in self.transform_matrix],
            "w": int(self.w), "h": int(self.h), "fl_x": float(self.fl_x), "fl_y": float(self.fl_y),
            "cx": float(self.cx), "cy": float(self.cy),
        }
        if self.camera_model is not None:
            d["camera_model"] = self.camera_model
        d.update(self.modalities)
        d.update(self.extras)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], modality_keys: set[str]) -> Frame:
        """Split a flat frame dict into fields, modality paths and extras."""
        known = {f.name for f in fields(cls)} - {"modalities", "extras"}
        kw = {k: d[k] for k in known if k in d}
        mods = {k: v for k, v in d.items() if k in modality_keys and k not in known}
        extras = {k: v for k, v in d.items() if k not in known and k not in modality_keys}
        return cls(**kw, modalities=mods, extras=extras)


@dataclass(frozen=True)
class SceneMeta:
    """Top level of ``scene_meta.json``."""

    scene_name: str = _f("equals the scene folder name, `[A-Za-z0-9_.-]`", {"type": "string", "pattern": NAME_PATTERN})
    dataset_name: str = _f("source dataset, e.g. `opv2v`, `kitti360`, `eth3d`, `co3d`, `vkitti2`", {"type": "string"})
    version: str = _f("WAI format version this is read-compatible with: `0.1`", {"type": "string"})
    format_version: str = _f("version of the wai contract: `1.0`", {"type": "string"})
    last_modified: str = _f("ISO 8601 time of writing (UTC)", {"type": "string"})
    camera_convention: str = _f("always `opencv` (x right, y down, z forward)", {"type": "string", "enum": ["opencv"]})
    camera_model: str = _f("default camera model of the frames: `PINHOLE` or `CYLINDRICAL`",
                           {"type": "string", "enum": list(CAMERA_MODELS)})
    shared_intrinsics: bool = _f("WAI meaning; always false here: intrinsics are stored per frame", {"type": "boolean"})
    scale_type: str = _f("`metric` (metres) or `relative` (unknown global scale, e.g. Co3D)",
                         {"type": "string", "enum": list(SCALE_TYPES)})
    depth_type: str = _f("`z` (planar depth, PINHOLE) or `range` (Euclidean distance, CYLINDRICAL)",
                         {"type": "string", "enum": sorted(set(DEPTH_TYPE_OF_MODEL.values()))})
    frames: list[Frame] = _f("one dict per frame, deterministic order (time, then camera/agent)",
                             {"type": "array", "items": {"type": "object"}})
    frame_modalities: dict[str, ModalitySpec] = _f(
        "modality name -> `{frame_key, format[, labels]}`; `image` is always present", {"type": "object"})
    scene_modalities: dict[str, Any] = _f("scene-level files, e.g. `pairwise_covisibility` -> "
                                          "`{scene_key, format: mmap}`; may be empty", {"type": "object"}, default={})
    applied_transforms: dict[str, list[list[float]]] = _f(
        "name -> 4x4 of every transform applied to source poses or world (e.g. `world_from_source`)",
        {"type": "object", "additionalProperties": _MAT4}, default={}, key="_applied_transforms")
    source: dict[str, Any] = _f("provenance: source dataset, raw relative paths, converter name and version, options",
                                {"type": "object"}, default={})
    filters: dict[str, Any] | None = _f("optional: what was filtered and with which thresholds",
                                        {"type": ["object", "null"]}, default=None)
    label_tables: dict[str, dict[str, str]] = _f(
        "optional: id table name -> {id (as string) -> class name} for `labels` modalities", {"type": "object"},
        default={})

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the whole scene."""
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "frames":
                v = [fr.to_dict() for fr in v]
            elif f.name == "frame_modalities":
                v = {k: m.to_dict() for k, m in v.items()}
            elif f.name == "filters" and v is None:
                continue
            d[json_key(f)] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "scene_meta.json") -> SceneMeta:
        """Parse a raw dict; raises ``SchemaError`` listing every structural problem."""
        problems = check_meta(d)
        if problems:
            listing = "; ".join(f"{k}: {m}" for k, m in problems[:10])
            more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
            raise SchemaError(f"{source}: {listing}{more}")
        mods = {k: ModalitySpec(**v) for k, v in d["frame_modalities"].items()}
        keys = {m.frame_key for m in mods.values()}
        kw: dict[str, Any] = {}
        for f in fields(cls):
            k = json_key(f)
            if k in d:
                kw[f.name] = d[k]
        kw["frame_modalities"] = mods
        kw["frames"] = [Frame.from_dict(fr, keys) for fr in d["frames"]]
        return cls(**kw)


_PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict,
             "array": list, "null": type(None)}


def _type_ok(v: Any, schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    if types is None:
        return True
    types = [types] if isinstance(types, str) else types
    for t in types:
        if t in ("integer", "number") and isinstance(v, bool):
            continue
        if isinstance(v, _PY_TYPES[t]):
            return True
    return False


def _check_value(path: str, v: Any, schema: dict[str, Any]) -> list[tuple[str, str]]:
    import re

    if not _type_ok(v, schema):
        return [(path, f"expected {schema['type']}, got {type(v).__name__} {v!r:.60}")]
    out: list[tuple[str, str]] = []
    if "enum" in schema and v not in schema["enum"]:
        out.append((path, f"{v!r} is not one of {schema['enum']}"))
    if "pattern" in schema and isinstance(v, str) and not re.match(schema["pattern"], v):
        out.append((path, f"{v!r} may only contain letters, digits, '_', '.', '-'"))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not math.isfinite(v):
            out.append((path, f"{v} is not finite"))
        elif "minimum" in schema and v < schema["minimum"]:
            out.append((path, f"{v} < {schema['minimum']}"))
        elif "exclusiveMinimum" in schema and v <= schema["exclusiveMinimum"]:
            out.append((path, f"{v} must be > {schema['exclusiveMinimum']}"))
    if schema is _MAT4 or schema.get("items", {}).get("type") == "array":
        ok = isinstance(v, list) and len(v) == 4 and all(
            isinstance(r, list) and len(r) == 4 and all(_type_ok(x, {"type": "number"}) for x in r) for r in v)
        if not ok:
            out.append((path, "expected a 4x4 nested list of numbers"))
    return out


def _check_fields(cls: type, d: dict[str, Any], prefix: str, skip: set[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for f in fields(cls):
        if f.name in skip:
            continue
        k = json_key(f)
        required = f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]
        if k not in d:
            if required:
                out.append((f"{prefix}{k}", "missing required key"))
            continue
        out.extend(_check_value(f"{prefix}{k}", d[k], f.metadata["schema"]))
    return out


def check_meta(d: Any) -> list[tuple[str, str]]:
    """Every structural problem of a raw ``scene_meta`` dict as ``(field path, message)`` pairs."""
    if not isinstance(d, dict):
        return [("", f"top level must be a JSON object, got {type(d).__name__}")]
    out = _check_fields(SceneMeta, d, "", {"frames", "frame_modalities"})
    mods = d.get("frame_modalities")
    if not isinstance(mods, dict):
        out.append(("frame_modalities", "missing or not an object"))
        mods = {}
    for name, spec in mods.items():
        if not isinstance(spec, dict):
            out.append((f"frame_modalities.{name}", "expected {frame_key, format}"))
            continue
        out.extend(_check_fields(ModalitySpec, spec, f"frame_modalities.{name}.", set()))
        extra = set(spec) - {"frame_key", "format", "labels"}
        if extra:
            out.append((f"frame_modalities.{name}", f"unknown keys {sorted(extra)}"))
    if mods and "image" not in mods:
        out.append(("frame_modalities.image", "missing: every scene has an `image` modality"))
    frames = d.get("frames")
    if not isinstance(frames, list):
        out.append(("frames", "missing or not a list"))
        return out
    for i, fr in enumerate(frames):
        name = fr.get("frame_name", i) if isinstance(fr, dict) else i
        p = f"frames[{name}]."
        if not isinstance(fr, dict):
            out.append((p[:-1], "expected an object"))
            continue
        out.extend(_check_fields(Frame, fr, p, {"modalities", "extras"}))
        for mname, spec in mods.items():
            if isinstance(spec, dict) and spec.get("frame_key") not in fr:
                out.append((f"{p}{spec.get('frame_key')}", f"missing path of modality `{mname}`"))
    return out


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``scene_meta.json`` rendered from the dataclasses."""

    def obj(cls: type, skip: set[str]) -> dict[str, Any]:
        props: dict[str, Any] = {}
        req: list[str] = []
        for f in fields(cls):
            if f.name in skip:
                continue
            props[json_key(f)] = {**f.metadata["schema"], "description": f.metadata["doc"]}
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                req.append(json_key(f))
        return {"type": "object", "properties": props, "required": req}

    frame = obj(Frame, {"modalities", "extras"})
    frame["additionalProperties"] = True
    top = obj(SceneMeta, set())
    top["properties"]["frames"]["items"] = frame
    top["properties"]["frame_modalities"]["additionalProperties"] = {**obj(ModalitySpec, set()),
                                                                     "additionalProperties": False}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://wai.dev/schema/scene_meta-1.0.json", "title": "wai scene_meta.json (format 1.0)", **top}


def all_documented_fields() -> dict[str, str]:
    """``{json key: doc}`` of every field of the three dataclasses (for the docs test)."""
    out: dict[str, str] = {}
    for cls in (SceneMeta, Frame, ModalitySpec):
        for f in fields(cls):
            out[json_key(f)] = f.metadata["doc"]
    return out


if __name__ == "__main__":  # python -m wai.format.schema  -> regenerate the shipped schema file
    SCHEMA_PATH.write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA_PATH}")
