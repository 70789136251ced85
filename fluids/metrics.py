"""In-loop fluid metrics, CSV streaming and plots.

Every metric is computed in float64 from the state's tensors (the state itself stays float32 or
float64). Definitions (``D_c = (u[i+1,j]-u[i,j]+v[i,j+1]-v[i,j])`` = ``dx * div u`` in fluid cell
``c``, ``U = max |face velocity|``):

* ``div_max_rel`` = ``max_c |D_c| / U`` (relative divergence, dimensionless)
* ``div_l2`` = ``sqrt(mean_c D_c^2) / U``
* ``kinetic_energy`` = ``dx^2/2 (sum_u-faces u^2 + sum_v-faces v^2)`` (periodic duplicate faces once)
* ``enstrophy`` = ``dx^2/2 sum_corners omega^2`` (interior/wrapped corners, :func:`vorticity_torch`)
* ``scalar_mass`` = ``dx^2 sum_c s_c`` of the first scalar (0 without scalars); ``mass_<name>`` each.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from lawful.kernels.mac_operators import vorticity_torch

__all__ = ["divergence_metrics", "state_metrics", "MetricsWriter", "plot_metrics", "read_metrics_csv",
           "check_writable"]


def divergence_metrics(state) -> tuple[float, float]:
    """``(div_max_rel, div_l2)`` of ``state`` (see module docstring)."""
    u = state.u.double()
    v = state.v.double()
    d = (u[1:] - u[:-1]) + (v[:, 1:] - v[:, :-1])
    fluid = ~state.solid
    d = d[fluid]
    scale = max(float(u.abs().max()), float(v.abs().max()))
    if scale == 0.0 or d.numel() == 0:
        return 0.0, 0.0
    return float(d.abs().max()) / scale, float(torch.sqrt((d * d).mean())) / scale


def state_metrics(state) -> dict:
    """All per-state metrics as a dict of floats (see module docstring)."""
    px, py = state.boundary.periodic_axes
    u = state.u.double()
    v = state.v.double()
    uu = u[:-1] if px else u
    vv = v[:, :-1] if py else v
    dx2 = state.dx * state.dx
    out = {}
    out["div_max_rel"], out["div_l2"] = divergence_metrics(state)
    out["kinetic_energy"] = 0.5 * dx2 * float((uu * uu).sum() + (vv * vv).sum())
    w = vorticity_torch(u, v, state.dx, (px, py))
    out["enstrophy"] = 0.5 * dx2 * float((w * w).sum())
    out["max_velocity"] = max(float(u.abs().max()), float(v.abs().max()))
    masses = [dx2 * float(state.scalars[k].double().sum()) for k in range(state.scalars.shape[0])]
    out["scalar_mass"] = masses[0] if masses else 0.0
    for name, m in zip(state.scalar_names, masses):
        out[f"mass_{name}"] = m
    return out


def check_writable(path, what: str = "output") -> Path:
    """Check, before any work, that a file can be written at ``path``: not a directory, its folder
    exists or can be made, and a file can be created there (probed with a temporary file that is
    removed). Raises :class:`~lawful.kernels.errors.InputError` naming the path and the fix.
    Returns ``Path(path)``; an existing file at ``path`` is left untouched."""
    import tempfile

    from lawful.kernels.errors import InputError

    try:
        p = Path(path)
    except TypeError:
        raise InputError(f"{what} path {path!r} must be a str or os.PathLike.") from None
    if p.is_dir():
        raise InputError(f"{what} path {str(p)!r} is a directory: give a file name (e.g. {str(p / 'metrics.csv')!r}).")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=f".{p.name}.", suffix=".probe"):
            pass
        if p.exists() and not os.access(p, os.W_OK):
            raise PermissionError(f"{p} is read-only")
    except OSError as exc:
        raise InputError(f"{what} path {str(p)!r} is not writable ({exc.strerror or exc}): choose a folder you "
                         "can write to.") from None
    return p


class MetricsWriter:
    """Stream one CSV row per step, flushed after each row (the columns are fixed by the first row).

    Use as a context manager or call :meth:`close`. The file is a log written as the run goes;
    a partially written file after a crash holds every completed step. The path is checked when
    the writer is made (:func:`check_writable`: not a directory, writable), but the file is only
    opened (and an existing one replaced) at the first :meth:`write`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_writable(path, "metrics CSV")
        self._fh = None
        self._writer = None

    def write(self, record: dict) -> None:
        """Append ``record`` (a flat dict of numbers) and flush."""
        if self._fh is None:
            self._fh = open(self.path, "w", newline="")
        if self._writer is None:
            self._writer = csv.DictWriter(self._fh, fieldnames=list(record.keys()), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(record)
        self._fh.flush()

    def close(self) -> None:
        """Close the file (nothing was created if nothing was written)."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_metrics_csv(path) -> list[dict]:
    """Read a metrics CSV back as a list of dicts of floats."""
    with open(path, newline="") as fh:
        return [{k: float(x) for k, x in row.items()} for row in csv.DictReader(fh)]


_PLOTTED = ("div_max_rel", "div_l2", "kinetic_energy", "enstrophy", "scalar_mass", "pressure_iters",
            "pressure_residual", "wall_s")


def plot_metrics(records, path: str | os.PathLike, title: str | None = None) -> Path:
    """Plot each metric against time (one panel each; divergences and residuals on log axes) into
    ``path`` (PNG, written atomically). ``records``: list of dicts, or a CSV path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if isinstance(records, (str, os.PathLike)):
        records = read_metrics_csv(records)
    keys = [k for k in _PLOTTED if records and k in records[0]]
    t = [r.get("t", i) for i, r in enumerate(records)]
    ncol = 4
    nrow = max(1, -(-len(keys) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        y = [r[k] for r in records]
        ax.plot(t, y, lw=1)
        if k.startswith("div") or k == "pressure_residual":
            if any(val > 0 for val in y):
                ax.set_yscale("log")
        ax.set_title(k)
        ax.set_xlabel("t")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return path
