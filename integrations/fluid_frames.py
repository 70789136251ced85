"""Vorticity snapshots of a fluid state as PNG files (kept for the demo; drawn by :mod:`fluid_viz`)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["save_vorticity_png"]


def save_vorticity_png(state, path: str | os.PathLike, title: str | None = None, vmax: float | None = None) -> Path:
    """Write the corner vorticity of ``state`` (1/time units of the grid) as a PNG; return its path.

    Drawn by :func:`lawful.integrations.fluid_viz.save_field_png` (colour bar, obstacle, axes in
    cells). ``vmax`` fixes the symmetric colour range (default: this frame's 99.5th percentile).
    """
    from lawful.integrations.fluid_viz import save_field_png

    return save_field_png(state, path, "vorticity", title=title or f"vorticity, step {state.step}",
                          clim=None if vmax is None else (-float(vmax), float(vmax)))
