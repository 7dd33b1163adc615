"""Schema: JSON round trip, shipped JSON Schema in sync, docs cover every field, structural checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wai.errors import SchemaError
from wai.format import SceneMeta, SceneWriter
from wai.format.cameras import Camera
from wai.format.schema import SCHEMA_PATH, all_documented_fields, check_meta, json_schema

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def scene(tmp_path: Path) -> Path:
    cam = Camera.pinhole(8, 6, 5, 5, 3.5, 2.5)
    with SceneWriter(tmp_path, "s", "test", source={"x": 1}) as w:
        w.add_transform("world_from_source", np.diag([1.0, -1.0, 1.0, 1.0]))
        for i in range(2):
            w.add_frame(f"f{i}", cam, np.eye(4), image=np.zeros((6, 8, 3), np.uint8),
                        depth=np.ones((6, 8)), extras={"timestamp": i})
    return tmp_path / "s"


def test_shipped_schema_in_sync() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), "run: python -m wai.format.schema"


def test_round_trip(scene: Path) -> None:
    d = json.loads((scene / "scene_meta.json").read_text())
    meta = SceneMeta.from_dict(d)
    assert meta.frames[1].extras == {"timestamp": 1}
    assert meta.frames[0].modalities == {"depth": "depth/f0.exr"}
    assert meta.to_dict() == d


def test_jsonschema_accepts_written_scene(scene: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads((scene / "scene_meta.json").read_text()), json_schema())


def test_docs_document_every_field() -> None:
    text = (ROOT / "docs" / "format.md").read_text()
    missing = [k for k in all_documented_fields() if f"`{k}`" not in text]
    assert not missing, f"docs/format.md lacks {missing}"


def test_check_meta_reports_every_problem(scene: Path) -> None:
    d = json.loads((scene / "scene_meta.json").read_text())
    d.pop("scale_type")
    d["frames"][0]["w"] = "8"
    d["frames"][1]["transform_matrix"] = [[1, 0, 0]]
    d["camera_model"] = "FISHEYE"
    problems = dict(check_meta(d))
    assert set(problems) >= {"scale_type", "frames[f0].w", "frames[f1].transform_matrix", "camera_model"}
    with pytest.raises(SchemaError, match="scale_type: missing required key"):
        SceneMeta.from_dict(d)
