"""The canonical scene format: schema, conventions, camera models, codecs, scene writer and reader."""

from wai.format.cameras import Camera, project_world_points
from wai.format.scene import (
    Modality,
    Scene,
    SceneWriter,
    is_complete,
    load_frame,
    load_scene,
    scene_state,
)
from wai.format.schema import Frame, ModalitySpec, SceneMeta

__all__ = [
    "Camera",
    "Frame",
    "Modality",
    "ModalitySpec",
    "Scene",
    "SceneMeta",
    "SceneWriter",
    "is_complete",
    "load_frame",
    "load_scene",
    "project_world_points",
    "scene_state",
]
