"""Vorticity snapshots of a fluid state as PNG files (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["save_vorticity_png"]


def save_vorticity_png(state, path: str | os.PathLike, title: str | None = None, vmax: float | None = None) -> Path:
    """Write the corner vorticity of ``state`` (1/time units of the grid) as a PNG; return its path.

    Solid cells are drawn grey. ``vmax`` fixes the symmetric colour range (default: 99th percentile).
    """
    import numpy as np

    from lawful.integrations.report import figure, save_figure

    from lawful.kernels.mac_operators import vorticity_torch

    px, py = state.boundary.periodic_axes
    w = vorticity_torch(state.u.double(), state.v.double(), state.dx, (px, py)).cpu().numpy()
    if vmax is None:
        vmax = float(np.percentile(np.abs(w), 99)) or 1.0
    nx, ny = state.u.shape[0] - 1, state.v.shape[1] - 1
    fig, ax = figure(1, width=min(12, 3 + 6 * nx / ny))
    ax.imshow(w.T, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=(0, nx, 0, ny))
    solid = state.solid.cpu().numpy()
    if solid.any():
        ax.imshow(np.ma.masked_where(~solid.T, solid.T), origin="lower", cmap="Greys", vmin=0, vmax=2,
                  extent=(0, nx, 0, ny))
    ax.set_title(title or f"vorticity, step {state.step}")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)
