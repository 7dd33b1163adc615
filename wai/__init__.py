"""wai: raw 3D-vision datasets -> one canonical multi-view scene format (MapAnything WAI compatible)."""

__version__ = "0.1.0"

#: Version of the on-disk contract written by this library (``scene_meta.format_version``).
FORMAT_VERSION = "1.0"
#: The MapAnything WAI version our scenes are read-compatible with (``scene_meta.version``).
WAI_VERSION = "0.1"
