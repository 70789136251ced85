"""In-loop fluid metrics, CSV streaming and plots.

Every metric is computed in float64 from the state's tensors (the state itself stays float32 or
float64). Definitions (``D_c = (u[i+1,j]-u[i,j]+v[i,j+1]-v[i,j])`` = ``dx * div u`` in fluid cell
``c``, ``U = max |face velocity|``):

* ``div_max_rel`` = ``max_c |D_c| / U`` (relative divergence, dimensionless)
* ``div_l2`` = ``sqrt(mean_c D_c^2) / U``
* ``kinetic_energy`` = ``dx^2/2 (sum_u-faces u^2 + sum_v-faces v^2)`` (periodic duplicate faces once)
  over the faces of the fluid, the trapezoid rule for ``1/2 int |u|^2 dA``: the faces on a
  non-periodic side (inflow and outflow faces; zero on walls) count half, as they close half a
  cell (counted whole, a uniform channel read 1/nx high: +3.1 % at nx = 32), and faces with a solid
  cell on every side (inside an obstacle, which carries a rotating body's rigid velocity there) are
  left out
* ``enstrophy`` = ``dx^2/2 sum_corners w_c omega_c^2`` over every corner not inside a solid body
  (a spinning body's own vorticity 2 omega was 99 % of the column), the trapezoid rule for
  ``1/2 int omega^2 dA`` (:func:`corner_vorticity`): the wall corners, with the wall's ghost
  (no-slip: ``omega = 2 (q - U_wall) / dx``), weigh 1/2, so ``dKE/dt = -2 nu enstrophy`` holds in
  a viscous decay beside walls (the interior corners alone read 5 % low in a no-slip box at 32^2)
* ``scalar_mass`` = ``dx^2 sum_c s_c`` of the first scalar (0 without scalars); ``mass_<name>`` each.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch

from lawful.kernels.errors import InputError

__all__ = ["divergence_metrics", "state_metrics", "corner_vorticity", "MetricsWriter", "plot_metrics", "read_metrics_csv",
           "read_metrics_thinned", "metrics_panels", "analytic_kinetic_energy", "check_writable"]


def divergence_metrics(state) -> tuple[float, float]:
    """``(div_max_rel, div_l2)`` of ``state`` (see module docstring). The solid cells' divergence
    is zeroed rather than selected out (a boolean selection cost half of the 0.2-0.5 ms this took
    at 128^2): the same maximum, and the same sum of squares over the fluid cells divided by their
    count. A corrected solver step forms its ``div_max_rel_projected`` (this ``div_max_rel``, to
    float64 rounding) in one Taichi launch instead (:func:`lawful.kernels.mac_checks.snapshot_stats`)."""
    u = state.u.double()
    v = state.v.double()
    d = (u[1:] - u[:-1]) + (v[:, 1:] - v[:, :-1])
    n_fluid = d.numel()
    solid = state.solid
    if bool(solid.any()):
        d = d.masked_fill(solid, 0.0)
        n_fluid -= int(solid.sum())
    scale = max(float(u.abs().max()), float(v.abs().max()))
    if scale == 0.0 or n_fluid == 0:
        return 0.0, 0.0
    flat = d.reshape(-1)
    return float(flat.abs().max()) / scale, math.sqrt(float(torch.dot(flat, flat)) / n_fluid) / scale


def _pairs(solid: torch.Tensor, axis: int, periodic: bool, faces: bool) -> torch.Tensor:
    """Along ``axis``, whether both cells beside each face (``faces``: every face, the periodic
    duplicate dropped; beyond a wall counts as solid) or each interior/wrapped corner line are solid."""
    if periodic:
        return torch.roll(solid, 1, axis) & solid
    if faces:
        pad = torch.ones_like(solid.narrow(axis, 0, 1))
        solid = torch.cat([pad, solid, pad], axis)
    n = solid.shape[axis]
    return solid.narrow(axis, 0, n - 1) & solid.narrow(axis, 1, n - 1)


def _inside_solid(solid: torch.Tensor, px: bool, py: bool):
    """Masks of the u faces, v faces (periodic duplicates dropped) and corners
    (:func:`corner_vorticity`'s, every corner; beyond a wall counts as solid) with a solid cell on
    every side: inside an obstacle."""
    solid = solid.to(torch.bool)
    in_u = _pairs(solid, 0, px, True)
    in_v = _pairs(solid, 1, py, True)
    in_corner = _pairs(_pairs(solid, 0, px, True), 1, py, True)
    return in_u, in_v, in_corner


def corner_vorticity(u: torch.Tensor, v: torch.Tensor, dx: float, boundary) -> tuple[torch.Tensor, torch.Tensor]:
    """``(omega, weight)`` at every cell corner: ``(nx+1, ny+1)`` (periodic axes: ``nx`` / ``ny``,
    the wrapped duplicate dropped), ``omega = dv/dx - du/dy`` (1/time) and the corner's share of a
    cell area (dimensionless). On a non-periodic side the derivative across it reads the ghost of
    the solver's viscous stencil (``Boundary.ghost_coefficients``: ``2 U_wall - q`` beyond a no-slip
    wall, so ``omega = 2 (q - U_wall) / dx`` there; ``q`` beyond free-slip and outflow sides), the
    corners on the side weigh 1/2 (half their dual cell is in the domain) and the corners where two
    non-periodic sides meet 0 (no free face's stencil reaches them; the lid's corners of a cavity
    would add a constant ``U^2/2`` each). With these weights a viscous decay obeys the discrete
    energy budget ``dKE/dt = -2 nu * enstrophy`` beside walls as on a periodic domain; the interior
    corners alone (:func:`~lawful.kernels.mac_operators.vorticity_torch`) left out the wall
    vorticity, 5 % of a decaying no-slip box mode at 32^2."""
    px, py = boundary.periodic_axes
    a = boundary.ghost_coefficients()      # (y_lo, y_hi) act on u, (x_lo, x_hi) on v
    if px:
        dvdx = v - torch.roll(v, 1, 0)                                               # (nx, ny+1)
    else:
        vp = torch.cat([a[4] * v[:1] + a[5], v, a[6] * v[-1:] + a[7]], 0)
        dvdx = vp[1:] - vp[:-1]                                                      # (nx+1, ny+1)
    if py:
        dudy = u - torch.roll(u, 1, 1)                                               # (nx+1, ny)
    else:
        up = torch.cat([a[0] * u[:, :1] + a[1], u, a[2] * u[:, -1:] + a[3]], 1)
        dudy = up[:, 1:] - up[:, :-1]                                                # (nx+1, ny+1)
    if px:
        dudy = dudy[:-1]
    if py:
        dvdx = dvdx[:, :-1]
    omega = (dvdx - dudy) / dx
    wx = torch.ones(omega.shape[0], dtype=omega.dtype, device=omega.device)
    wy = torch.ones(omega.shape[1], dtype=omega.dtype, device=omega.device)
    if not px:
        wx[0] = wx[-1] = 0.5
    if not py:
        wy[0] = wy[-1] = 0.5
    weight = wx[:, None] * wy[None, :]
    if not (px or py):
        weight[0, 0] = weight[0, -1] = weight[-1, 0] = weight[-1, -1] = 0.0
    return omega, weight


def _face_kinetic_energy(u: torch.Tensor, v: torch.Tensor, dx: float, periodic, inside=None) -> float:
    """``kinetic_energy`` of the module docstring (length^4/time^2 at density 1) of the face
    velocities ``u`` ``(nx+1, ny)``, ``v`` ``(nx, ny+1)`` (float64): ``dx^2/2 sum w q^2`` with the
    periodic duplicate faces dropped, weight 1/2 on the faces of a non-periodic side (the
    trapezoid rule) and the faces inside a solid body (``inside``: the masks of
    :func:`_inside_solid`, or None) left out. The one definition :func:`state_metrics` and
    :func:`analytic_kinetic_energy` share."""
    px, py = periodic
    uu = u[:-1] if px else u
    vv = v[:, :-1] if py else v
    if inside is not None:
        uu, vv = uu.masked_fill(inside[0], 0.0), vv.masked_fill(inside[1], 0.0)
    ku, kv = uu * uu, vv * vv
    if not px:      # trapezoid: the faces on the x sides close half a cell
        ku = torch.cat([0.5 * ku[:1], ku[1:-1], 0.5 * ku[-1:]], 0)
    if not py:
        kv = torch.cat([0.5 * kv[:, :1], kv[:, 1:-1], 0.5 * kv[:, -1:]], 1)
    return 0.5 * dx * dx * float(ku.sum() + kv.sum())


def state_metrics(state) -> dict:
    """All per-state metrics as a dict of floats (see module docstring)."""
    px, py = state.boundary.periodic_axes
    u = state.u.double()
    v = state.v.double()
    dx2 = state.dx * state.dx
    out = {}
    out["div_max_rel"], out["div_l2"] = divergence_metrics(state)
    solid = getattr(state, "solid", None)
    inside = _inside_solid(solid, px, py) if solid is not None and bool(solid.any()) else None
    out["kinetic_energy"] = _face_kinetic_energy(u, v, state.dx, (px, py), inside)
    w, weight = corner_vorticity(u, v, state.dx, state.boundary)
    if inside is not None:
        weight = weight.masked_fill(inside[2], 0.0)
    out["enstrophy"] = 0.5 * dx2 * float((weight * w * w).sum())
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
    """Stream one CSV row per step, flushed after each row.

    Use as a context manager or call :meth:`close`. The file is a log written as the run goes;
    a partially written file after a crash holds every completed step. The path is checked when
    the writer is made (:func:`check_writable`: not a directory, writable), but the file is only
    opened (and an existing one replaced) at the first :meth:`write`.

    The columns are the first record's keys, in its order; a key that first appears in a later
    record (a force column that starts later, a corrector's extra key) is added as a new last
    column, the file rewritten once with that column empty in the earlier rows, and a record
    without one of the columns leaves its cell empty: :func:`read_metrics_csv` reads an empty cell
    as NaN. (Until 2026-12-04 a later key was dropped without a word, and a missing one wrote an
    empty cell that the reader refused.) A value is written as ``float(value)`` (``int`` for
    integers; a 0-d tensor or numpy scalar by its value, not its ``str``), so Python floats
    round-trip exactly.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_writable(path, "metrics CSV")
        self._fh = None
        self._writer = None
        self._fields: list = []

    def write(self, record: dict) -> None:
        """Append ``record`` (a flat dict of numbers) and flush."""
        if self._fh is None:
            self._fh = open(self.path, "w", newline="")
            self._fields = list(record.keys())
            self._start()
            self._writer.writeheader()
        else:
            new = [k for k in record if k not in self._fields]
            if new:
                self._add_columns(new)
        self._writer.writerow({k: _cell(x) for k, x in record.items()})
        self._fh.flush()

    def _start(self) -> None:
        self._writer = csv.DictWriter(self._fh, fieldnames=self._fields, restval="")

    def _add_columns(self, new: list) -> None:
        """Rewrite the file with ``new`` as its last columns (empty in the rows written so far),
        streaming it through a temporary file beside it, and go on appending."""
        import tempfile

        self._fh.close()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with open(self.path, newline="") as src, os.fdopen(fd, "w", newline="") as dst:
                reader, writer = csv.reader(src), csv.writer(dst)
                next(reader, None)                       # the old header
                writer.writerow(self._fields + new)
                pad = [""] * len(new)
                for row in reader:
                    writer.writerow(row + pad)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._fields = self._fields + new
        self._fh = open(self.path, "a", newline="")
        self._start()

    def close(self) -> None:
        """Close the file (nothing was created if nothing was written)."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cell(x):
    """A record value as the CSV writes it: ints and bools as ints, every other number as a Python
    float (whose ``repr``, which csv writes, reads back exactly); a 0-d tensor or numpy scalar by
    its value (``str`` of a tensor wrote ``tensor(0.1235)``: 4 digits, and unreadable)."""
    if isinstance(x, (str, bytes)) or x is None:
        return x
    if isinstance(x, (bool, int)):
        return int(x)
    item = getattr(x, "item", None)
    if item is not None:
        x = item()
        if isinstance(x, (bool, int)):
            return int(x)
    return float(x)


def _number(x) -> float:
    """A CSV cell as a float: an empty cell (a column the row's record did not have) is NaN."""
    return math.nan if x == "" else float(x)


def read_metrics_csv(path) -> list[dict]:
    """Read a metrics CSV back as a list of dicts of floats (an empty cell, a column that record
    lacked, as NaN)."""
    with open(path, newline="") as fh:
        return [{k: _number(x) for k, x in row.items()} for row in csv.DictReader(fh)]


def _figure(figsize, dpi=100):
    """A matplotlib ``Figure`` outside pyplot (no backend chosen, no global figure registry)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)


def analytic_kinetic_energy(scene):
    """``t -> kinetic energy`` of the scene's exact solution (``scene.analytic(t)``), in the units and
    discrete definition of :func:`lawful.fluids.metrics.state_metrics` (``dx^2/2 sum w u^2``,
    length^4/time^2 at density 1: the faces of a non-periodic side at half weight, those inside a
    solid body left out, :func:`_face_kinetic_energy`); ``None`` for scenes without one. For
    Taylor-Green this is ``KE0 exp(-4 nu t)``. (Until 2026-12-04 it summed every face at weight 1: on a
    scene with an inflow/outflow or a body the exact curve read high against the simulated one, a
    uniform channel by ``1/nx``, +3.1 % at nx = 32.)"""
    analytic = getattr(scene, "analytic", None)
    if analytic is None:
        return None
    st = scene.state
    periodic = st.boundary.periodic_axes
    solid = getattr(st, "solid", None)
    inside = _inside_solid(solid, *periodic) if solid is not None and bool(solid.any()) else None

    def ke(t: float) -> float:
        u, v = analytic(float(t))
        return _face_kinetic_energy(u.double(), v.double(), st.dx, periodic, inside)

    return ke


def metrics_panels(records, ke_exact=None, from_start: bool = True):
    """The panels :func:`plot_metrics` draws, as ``[(title, ylabel, lines, log[, twin])]``: one per
    quantity present in ``records`` (list of per-step dicts), ``lines`` = ``[(label, t, y, style)]``
    (t in time units), ``log`` for a log y axis, ``twin`` = ``(ylabel, t, y)`` on a second log y
    axis. The timing panel leaves out the first record when it is the run's first step
    (``from_start``; its wall time includes compiling the Taichi kernels), naming its step, and
    is drawn on a log axis when a step took over 10x the median (warm-up);
    ``ke_exact(t)`` (e.g. :func:`analytic_kinetic_energy`) adds the exact kinetic
    energy from t = 0."""
    first = records[0]
    t = np.array([r["t"] for r in records], dtype=float)
    col = lambda k: np.array([r[k] for r in records], dtype=float)  # noqa: E731
    panels = []
    corrected = "div_max_rel_projected" in first     # only a run with a corrector records both
    div = [(lab, t, col(k), "-") for k, lab in (("div_max_rel", "max |D| / U" + (" (after corrector)" if corrected
                                                                                   else "")),
                                                 ("div_max_rel_projected", "max |D| / U (after projection)"),
                                                 ("div_l2", "rms D / U")) if k in first]
    if div:
        panels.append(("divergence", "relative divergence (dimensionless)", div, True))
    if "kinetic_energy" in first:
        lines = [("simulated", t, col("kinetic_energy"), "-")]
        if ke_exact is not None:
            tt = np.concatenate([[0.0], t])
            lines.append(("analytic KE(0) exp(-4νt)", tt, np.array([ke_exact(x) for x in tt]), "--"))
        panels.append(("kinetic energy", "KE (length⁴/time², density 1)", lines, False))
    if "enstrophy" in first:
        panels.append(("enstrophy", "½∫ω² (length²/time²)", [("", t, col("enstrophy"), "-")], False))
    # the force on the obstacles (lawful.fluids.forces.force_columns): the coefficients when the
    # scene has a reference velocity and length, else drag and lift per unit depth; the sums only
    if "cd" in first:
        panels.append(("force on the obstacles", "coefficient (dimensionless: ½ρU²L of the scene)",
                       [(k, t, col(k), "-") for k in ("cd", "cl")], False))
    elif "drag" in first:
        panels.append(("force on the obstacles", "per unit depth (length³/time², density 1)",
                       [(k, t, col(k), "-") for k in ("drag", "lift")], False))
    masses = [k for k in first if k.startswith("mass_")]
    if masses:
        panels.append(("scalar mass", "∫ s dA (amount)", [(k[5:], t, col(k), "-") for k in masses], False))
    if "pressure_iters" in first:
        # residual on a second (log) axis of the same panel, when the solver reported one
        twin = None
        if "pressure_residual" in first and np.any(col("pressure_residual") > 0):
            twin = ("relative residual (dimensionless, log)", t, col("pressure_residual"))
        panels.append(("pressure solve", "CG iterations per step", [("iterations", t, col("pressure_iters"), "-")],
                       False, twin))
    if "wall_s" in first and len(records) > 1:
        wall = 1e3 * col("wall_s")
        if from_start:
            s0 = int(first["step"]) if "step" in first else 1
            label = f"steps {s0 + 1}+ (step {s0}, the run's first: {wall[0] / 1e3:.2f} s with compilation, not shown)"
            rest, tw = wall[1:], t[1:]
        else:        # the first record kept is not the run's first step: nothing to leave out
            label, rest, tw = "", wall, t
        # a log axis when a few warm-up steps dwarf the rest (88 ms beside 2 ms flattened the curve)
        spread = rest.size > 2 and np.all(rest > 0) and rest.max() > 10 * np.median(rest)
        panels.append(("time per step", "wall time (ms" + (", log)" if spread else ")"),
                       [(label, tw, rest, "-")], bool(spread)))
    return panels


def _column_extremes(path) -> tuple[list, int, set]:
    """``(header, total, rows)`` of a metrics CSV: its column names, its number of rows and the
    rows (0-based) holding each column's largest and smallest value (the first on a tie) and its
    first NaN. One streaming pass in blocks of rows (numpy's parser; the csv module's, cell by
    cell, for a file with an empty cell or a short row)."""
    import warnings

    block = 8192
    try:
        found: dict = {}
        total = 0
        with open(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # loadtxt's "no data" at the end
            header = next(csv.reader([fh.readline()]), [])
            while True:
                a = np.loadtxt(fh, delimiter=",", comments=None, dtype=np.float64, max_rows=block, ndmin=2)
                if a.shape[0] == 0:
                    break
                if a.shape[1] != len(header):
                    raise ValueError("a row of another length")
                _block_extremes(a, total, found)
                total += a.shape[0]
                if a.shape[0] < block:
                    break
    except ValueError:
        found, total = {}, 0
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            chunk: list = []
            for row in reader:
                if row:                    # a blank line is no row (csv.DictReader skips it too)
                    chunk.append(row)
                if len(chunk) == block:
                    _block_extremes(_cells(chunk, len(header)), total, found)
                    total += len(chunk)
                    chunk = []
            if chunk:
                _block_extremes(_cells(chunk, len(header)), total, found)
                total += len(chunk)
    rows = {i for kind in ("hi", "lo", "nan") for _, i in found.get(kind, {}).values()}
    return header, total, rows


def _cells(chunk: list, ncol: int) -> np.ndarray:
    """Rows of CSV cells as a ``(rows, ncol)`` float array: an empty or missing cell is NaN."""
    a = np.full((len(chunk), ncol), np.nan)
    for i, row in enumerate(chunk):
        row = row[:ncol]
        a[i, :len(row)] = [_number(x) for x in row]
    return a


def _block_extremes(a: np.ndarray, start: int, found: dict) -> None:
    """Update ``found`` (``"hi"``, ``"lo"``: column -> ``(value, row)``; ``"nan"``: column ->
    ``(nan, row)`` of its first NaN) from the block ``a`` of rows ``start, start + 1, ...``."""
    hi, lo, first_nan = (found.setdefault(kind, {}) for kind in ("hi", "lo", "nan"))
    nan = np.isnan(a)
    present = ~nan.all(0)
    i_hi = np.where(nan, -np.inf, a).argmax(0)
    i_lo = np.where(nan, np.inf, a).argmin(0)
    for j in range(a.shape[1]):
        if j not in first_nan and nan[:, j].any():
            first_nan[j] = (math.nan, start + int(nan[:, j].argmax()))
        if not present[j]:
            continue
        x = float(a[i_hi[j], j])
        if j not in hi or x > hi[j][0]:
            hi[j] = (x, start + int(i_hi[j]))
        x = float(a[i_lo[j], j])
        if j not in lo or x < lo[j][0]:
            lo[j] = (x, start + int(i_lo[j]))


def read_metrics_thinned(path, max_points: int = 4000) -> tuple[list[dict], int]:
    """``(rows, total)``: at most ``max_points`` rows of a metrics CSV, as dicts of floats in file
    order, and the number of rows in the file. Kept: the first two rows, the last, every column's
    extremes (the row of its largest and of its smallest value, and of its first NaN: a one-step
    divergence spike of a long run is in the figure), and every ``k``-th row, ``k`` the smallest
    that keeps the count within ``max_points``. (Until 2026-12-04 only every ``k``-th: a spike
    between two of them was not drawn.) Two streaming passes, so memory is bounded by
    ``max_points`` however long the run was; ``max_points`` must leave room for every extreme."""
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 4:
        raise InputError(f"max_points={max_points!r} must be an integer >= 4.")
    header, total, extremes = _column_extremes(path)
    extremes -= {0, 1, total - 1}
    room = max_points - 3 - len(extremes)
    if room < 1:
        raise InputError(f"max_points={max_points} leaves no room for the extremes of the {len(header)} columns of "
                         f"{path} ({len(extremes)} rows besides the first two and the last): use max_points >= "
                         f"{len(extremes) + 4}.")
    k = max(1, math.ceil(total / room))
    rows = []
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i < 2 or i % k == 0 or i == total - 1 or i in extremes:
                rows.append({key: _number(x) for key, x in row.items()})
    return rows, total


def plot_metrics(records, path, title: str | None = None, scene=None) -> Path:
    """Draw the metrics of a fluid run into ``path`` (PNG, written atomically): one panel per
    quantity the run recorded (no panel for one it lacks, e.g. scalar mass without a scalar), time
    on every x axis, units on every y axis, divergences and residuals on log axes, the first step
    (which includes Taichi's kernel compilation) left out of the timing panel, and the exact
    kinetic energy overlaid when ``scene`` has an analytic solution (Taylor-Green).

    ``records``: a list of per-step dicts (the first taken as the run's first step), a
    :class:`~lawful.fluids.records.RunRecords` (one that dropped steps is drawn as the last
    ``len(records)`` of its steps, as its title says, none left out of the timing) or a metrics
    CSV path (``run(..., csv=...)``; read through :func:`read_metrics_thinned`, so a long run's
    figure shows every ``k``-th step and every column's extremes, as its title says).
    """
    import io

    from lawful.kernels.modelfile import atomic_write

    thinned = ""
    from_start = True
    if isinstance(records, (str, os.PathLike)):
        records, total = read_metrics_thinned(records)
        if total > len(records):
            thinned = f" ({len(records)} of {total} steps drawn)"
    elif getattr(records, "dropped", 0):
        # a RunRecords window: its first record is not the run's first step (it was drawn as
        # "step 1, with compilation" and left out, and the title did not say steps were missing)
        thinned = f" (the last {len(records)} of {records.total} steps drawn)"
        from_start = False
    if not records:
        raise InputError(f"no metrics to plot into {path}: the run recorded no step.")
    panels = metrics_panels(records, analytic_kinetic_energy(scene) if scene is not None else None, from_start)
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig = _figure((4.6 * ncol, 3.2 * nrow))
    for k, (ptitle, ylabel, lines, log, *twin) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        for label, x, y, style in lines:
            ax.plot(x, y, style, lw=1.2, label=label or None)
        if log and any(np.nanmax(y) > 0 for _, _, y, _ in lines):
            ax.set_yscale("log")
        handles = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
        if twin and twin[0] is not None:
            tlabel, x, y = twin[0]
            ax2 = ax.twinx()
            handles += ax2.plot(x, y, color="C1", lw=1.0, label="residual")
            ax2.set_yscale("log")
            ax2.set_ylabel(tlabel, fontsize=8)
        if len(handles) > 1 or (handles and handles[0].get_label() != "iterations"):
            ax.legend(handles=handles, fontsize=8)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("t (time, the domain's units)")
        ax.set_ylabel(ylabel)
    name = (title or getattr(scene, "name", None) or "") + thinned
    if name:
        fig.suptitle(name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return Path(path)
