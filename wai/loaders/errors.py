"""Errors of the loaders."""

from __future__ import annotations

from wai.errors import WaiError


class LoaderConfigError(WaiError, ValueError):
    """An invalid loader, sampler or dataset option (names the option and what is allowed)."""
