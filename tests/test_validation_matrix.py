"""The validator's detection matrix: corruption classes x kinds of data, on scenes from an independent writer.

Every clean scene (``tests/_validation_fixtures.py``, written without ``SceneWriter``) must validate with no
finding, and every corrupted copy must fail (exit code 1) with a finding that names the corrupted frame(s), or
a scene-wide finding for corruptions of every frame. The table in ``docs/validation.md`` (between the
``detection-matrix`` markers) is rendered from these results and checked here; regenerate it with
``WAI_UPDATE_DOCS=1 pytest tests/test_validation_matrix.py``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import _validation_fixtures as vf
import pytest

from wai.synthetic.world import World
from wai.validation import Report, validate

DOC = Path(__file__).resolve().parents[1] / "docs" / "validation.md"
BEGIN, END = "<!-- detection-matrix:begin -->", "<!-- detection-matrix:end -->"
#: Codes that say "poses and depth disagree"; one of them must fire for a scene-wide corruption.
GEOMETRY_CODES = ("pose_isolated", "depth_reprojection", "depth_scale_bias", "depth_kind")
#: The code shown in the docs cell: the first of these that the report holds.
PRIORITY = ("duplicate_image", "pose_isolated", "depth_kind", "depth_scale_bias", "depth_reprojection")
#: Cells that cannot be caught, with the reason printed in the docs (none today; pose and depth cells must
#: never be listed here).
UNDETECTABLE: dict[tuple[str, str], str] = {}
KIND_TITLES = {
    "dense_pinhole": "dense pinhole (synthetic)",
    "lidar_seq5": "LiDAR sequence, 5 frames (KITTI-360-like)",
    "lidar_seq50": "LiDAR sequence, 50 frames",
    "pano_agents": "cylindrical panoramas, 2 agents (OPV2V-like)",
    "co3d_orbit": "object orbit, relative scale (Co3D-like)",
    "eth3d_sparse": "sparse SfM depth (ETH3D-like)",
}
CLASS_TITLES = {
    "rotation_transposed_one": "one frame's rotation transposed",
    "world_to_camera_one": "one frame stored world-to-camera",
    "opengl_one": "one frame with OpenGL axes (y, z flipped)",
    "world_to_camera_all": "every frame stored world-to-camera",
    "opengl_all": "every frame with OpenGL axes",
    "depth_x1.1": "every depth map x1.1",
    "depth_centimetres": "depth in centimetres (x100)",
    "pinhole_range_as_z": "PINHOLE: range stored as z",
    "cylindrical_z_as_range": "CYLINDRICAL: z stored as range",
    "poses_swapped": "two frames' poses swapped",
    "image_replaced": "one frame's image replaced by another's",
}
NOT_APPLICABLE = {"pinhole_range_as_z": "no PINHOLE frames", "cylindrical_z_as_range": "no CYLINDRICAL frames"}


@dataclass
class Cell:
    """One corrupted scene's outcome."""

    report: Report
    touched: list[str]
    seconds: float

    def named(self) -> bool:
        """Whether the errors name the touched frame(s) (one finding per frame, or scene-wide findings)."""
        errs = self.report.errors
        if len(self.touched) > 2:  # every frame: a scene-wide geometric finding is the right answer
            return any(i.code in GEOMETRY_CODES for i in errs)
        return all(any(f"frames[{n}]" in i.field or f"frames[{n}]" in i.message for i in errs) for n in self.touched)

    def primary(self) -> str:
        codes = {i.code for i in self.report.errors}
        return next((c for c in PRIORITY if c in codes), sorted(codes)[0] if codes else "")


@dataclass
class Matrix:
    clean: dict[str, Report]
    cells: dict[tuple[str, str], Cell]
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    root = tmp_path_factory.mktemp("matrix")
    world = World.street(0)
    out = Matrix({}, {}, {})
    for kind in vf.KINDS:
        t0 = time.perf_counter()
        sd = vf.write_kind(kind, root / "clean", world)
        out.clean[kind] = validate(sd)
        for cls in vf.CLASSES_ALL:
            if not vf.applies(cls, kind):
                continue
            d = shutil.copytree(sd, root / cls / kind)
            touched = vf.corrupt(d, cls, kind)
            t1 = time.perf_counter()
            out.cells[(cls, kind)] = Cell(validate(d), touched, time.perf_counter() - t1)
        out.seconds[kind] = time.perf_counter() - t0
    return out


def render(m: Matrix) -> str:
    """The markdown table of docs/validation.md (rows: corruption classes, columns: kinds of data)."""
    head = "| corruption | " + " | ".join(KIND_TITLES[k] for k in vf.KINDS) + " |"
    rows = [head, "|---" * (len(vf.KINDS) + 1) + "|"]
    caught = total = 0
    for cls in vf.CLASSES_ALL:
        cells = []
        for kind in vf.KINDS:
            if not vf.applies(cls, kind):
                cells.append(f"n/a ({NOT_APPLICABLE[cls]})")
                continue
            total += 1
            c = m.cells[(cls, kind)]
            if c.report.exit_code == 1 and c.named():
                caught += 1
                cells.append(f"caught: `{c.primary()}`")
            else:
                cells.append(f"undetectable: {UNDETECTABLE.get((cls, kind), 'MISSED')}")
        rows.append(f"| {CLASS_TITLES[cls]} | " + " | ".join(cells) + " |")
    rows.append("")
    rows.append(f"{caught} of {total} cells caught; clean scenes of every kind: no finding.")
    return "\n".join(rows)


def test_clean_fixtures_have_no_finding(matrix: Matrix) -> None:
    for kind, rep in matrix.clean.items():
        assert rep.ok and rep.errors == [] and rep.warnings == [], (kind, [i.message for i in rep.issues])
        g = rep.geometry[kind]
        assert g["pairs"] >= 2 and g["agreement"] > 0.9 and g["unpaired"] == [], (kind, g["note"])
        assert not g["scale"]["failed"] and not g["scale"]["kind_failed"], (kind, g["scale"])


@pytest.mark.parametrize("cls", vf.CLASSES_ALL)
def test_every_cell_is_caught_and_names_the_frames(matrix: Matrix, cls: str) -> None:
    for kind in vf.KINDS:
        if not vf.applies(cls, kind) or (cls, kind) in UNDETECTABLE:
            continue
        c = matrix.cells[(cls, kind)]
        assert c.report.exit_code == 1, (cls, kind, c.report.geometry.get(kind))
        assert c.named(), (cls, kind, c.touched, [(i.code, i.field, i.message) for i in c.report.errors])
        if cls in vf.ONE_FRAME_POSE:  # the finding's field points at the frame itself
            assert any(i.field.startswith(f"frames[{c.touched[0]}]") for i in c.report.errors), (cls, kind)


def test_pose_and_depth_classes_have_no_undetectable_cell() -> None:
    pose_depth = {*vf.ONE_FRAME_POSE, *vf.ALL_FRAMES_POSE, *vf.DEPTH, "poses_swapped"}
    assert not [k for k in UNDETECTABLE if k[0] in pose_depth]


def test_matrix_in_docs_is_current(matrix: Matrix) -> None:
    table = render(matrix)
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC} lacks the {BEGIN} ... {END} block"
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    if os.environ.get("WAI_UPDATE_DOCS") == "1":
        DOC.write_text(text[:start] + "\n" + table + "\n" + text[end:])
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    assert text[start:end].strip() == table.strip(), (
        "docs/validation.md's detection matrix is out of date; regenerate it with "
        "WAI_UPDATE_DOCS=1 pytest tests/test_validation_matrix.py")


def test_matrix_runtime_stays_small(matrix: Matrix) -> None:
    # the whole module (writing 6 scenes, validating 65) is meant to stay near a minute on 2 slow cores
    assert sum(matrix.seconds.values()) < 240, matrix.seconds
