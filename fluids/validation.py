"""Published reference data for the standard CFD checks, and the comparisons against them.

* :data:`GHIA_U`, :data:`GHIA_V` — Ghia, Ghia & Shin (1982), "High-Re solutions for incompressible
  flow using the Navier-Stokes equations and a multigrid method", J. Comput. Phys. 48, 387-411,
  Tables I and II (129 x 129 grid): ``u`` along the vertical centre line ``x = 0.5`` at the
  tabulated ``y`` and ``v`` along the horizontal centre line ``y = 0.5`` at the tabulated ``x``,
  for the unit cavity with the lid (``y = 1``) moving at ``U = 1``; Re = 100 and 1000.
* :data:`SCHAEFER_TUREK_2D1` — Schäfer & Turek (1996), "Benchmark computations of laminar flow
  around a cylinder", Notes Numer. Fluid Mech. 52, 547-566, test 2D-1 (steady, Re = 20): the
  lower and upper bounds of the reference drag and lift coefficients.
* :data:`STROUHAL_RE100` — unconfined circular cylinder at Re = 100: St = 0.164-0.166 (Williamson
  1996, Annu. Rev. Fluid Mech. 28, 477-539, the universal St-Re curve).

:func:`cavity_centrelines` samples a cavity state on the two centre lines and
:func:`ghia_errors` returns the largest absolute differences from the table (for Ghia's set-up
only); :func:`strouhal` the shedding frequency of a lift history (NaN for one that does not shed).
"""

from __future__ import annotations

import numpy as np

__all__ = ["GHIA_Y", "GHIA_X", "GHIA_U", "GHIA_V", "SCHAEFER_TUREK_2D1", "STROUHAL_RE100",
           "STROUHAL_MIN_AMPLITUDE", "STROUHAL_MAX_PERIOD_SCATTER", "cavity_centrelines", "ghia_errors", "strouhal"]

#: y of Ghia et al. Table I (vertical centre line), top to bottom.
GHIA_Y = (1.0000, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5000, 0.4531, 0.2813, 0.1719,
          0.1016, 0.0703, 0.0625, 0.0547, 0.0000)
#: u(x = 0.5, y) of Ghia et al. Table I, by Reynolds number.
GHIA_U = {
    100: (1.00000, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581, -0.21090, -0.15662,
          -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.00000),
    1000: (1.00000, 0.65928, 0.57492, 0.51117, 0.46604, 0.33304, 0.18719, 0.05702, -0.06080, -0.10648, -0.27805,
           -0.38289, -0.29730, -0.22220, -0.20196, -0.18109, 0.00000),
}
#: x of Ghia et al. Table II (horizontal centre line), right to left.
GHIA_X = (1.0000, 0.9688, 0.9609, 0.9531, 0.9453, 0.9063, 0.8594, 0.8047, 0.5000, 0.2344, 0.2266, 0.1563, 0.0938,
          0.0781, 0.0703, 0.0625, 0.0000)
#: v(x, y = 0.5) of Ghia et al. Table II, by Reynolds number.
GHIA_V = {
    100: (0.00000, -0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454, 0.17527, 0.17507,
          0.16077, 0.12317, 0.10890, 0.10091, 0.09233, 0.00000),
    1000: (0.00000, -0.21388, -0.27669, -0.33714, -0.39188, -0.51550, -0.42665, -0.31966, 0.02526, 0.32235, 0.33075,
           0.37095, 0.32627, 0.30353, 0.29012, 0.27485, 0.00000),
}
#: Schäfer & Turek 2D-1: channel 2.2 x 0.41, cylinder D = 0.1 at (0.2, 0.2), parabolic inflow of
#: mean 0.2 (peak 0.3), nu = 1e-3, Re = U_mean D / nu = 20, coefficients with U_mean and D.
SCHAEFER_TUREK_2D1 = {"cd": (5.57, 5.59), "cl": (0.0104, 0.0110)}
#: Unconfined cylinder at Re = 100 (Williamson 1996).
STROUHAL_RE100 = (0.164, 0.166)


def cavity_centrelines(state, lid_velocity: float = 1.0):
    """``(y, u, x, v)`` (NumPy float64): u on the vertical centre line at the cell-centre heights
    plus the two walls (0 at the bottom, ``lid_velocity`` at the lid), and v on the horizontal
    centre line plus the side walls (0), normalised by ``lid_velocity``; positions in units of
    the box side. Needs an even number of cells per side (the centre lines are then face lines)."""
    nx, ny = state.nx, state.ny
    if nx % 2 or ny % 2:
        from lawful.kernels.errors import InputError

        raise InputError(f"cavity_centrelines: a {nx}x{ny} grid has no face line through the centre; use an "
                         "even number of cells per side.")
    u = state.u.double().cpu().numpy() / lid_velocity
    v = state.v.double().cpu().numpy() / lid_velocity
    y = np.concatenate([[0.0], (np.arange(ny) + 0.5) / ny, [1.0]])
    x = np.concatenate([[0.0], (np.arange(nx) + 0.5) / nx, [1.0]])
    uy = np.concatenate([[0.0], u[nx // 2], [1.0]])
    vx = np.concatenate([[0.0], v[:, ny // 2], [0.0]])
    return y, uy, x, vx


def ghia_errors(state, re: int, lid_velocity: float | None = None, scene=None) -> dict:
    """Largest absolute differences (in units of the lid velocity) between the state's centre-line
    profiles (linearly interpolated) and Ghia et al.'s table for ``re`` (100 or 1000).

    Only Ghia's set-up is compared, anything else is refused with an :class:`InputError` naming
    what differs (until 2026-12 a 2:1 box or a cavity with free-slip sides was compared as if it
    were the square cavity, errors 0.25-0.67 returned without a word): a square grid (``nx ==
    ny``, square cells: the unit box), no obstacle, all four sides ``no_slip``, the top wall
    (``y_hi``) moving in +x and the other three at rest. ``lid_velocity``: default the state's own
    (its top wall's ``wall_velocity``); a value that is not the state's lid is refused.
    ``scene``: the scene that made the state (e.g. :func:`~lawful.fluids.scenes.lid_driven_cavity`);
    given, its Reynolds number ``lid * side / viscosity`` must be ``re`` (to 1e-6)."""
    from lawful.kernels.errors import InputError

    fix = "build the cavity with lawful.fluids.scenes.lid_driven_cavity(re, n)"
    if re not in GHIA_U:
        raise InputError(f"ghia_errors: re={re!r} has no Ghia table: use one of {sorted(GHIA_U)}.")
    b = state.boundary
    sides = {"x_lo": b.x_lo, "x_hi": b.x_hi, "y_lo": b.y_lo, "y_hi": b.y_hi}
    if state.nx != state.ny:
        raise InputError(f"ghia_errors: the grid is {state.nx}x{state.ny} cells, a {state.nx}:{state.ny} box; Ghia's "
                         f"cavity is square (nx == ny): {fix}.")
    others = [k for k, kind in sides.items() if kind != "no_slip"]
    if others:
        raise InputError(f"ghia_errors: side(s) {', '.join(f'{k}={sides[k]!r}' for k in others)}; Ghia's cavity has "
                         f"no-slip walls on all four sides: {fix}.")
    moving = [f"{k} at {w:g}" for k, w in zip(("x_lo", "x_hi", "y_lo"), b.wall_velocity[:3]) if w != 0.0]
    if moving:
        raise InputError(f"ghia_errors: wall(s) {', '.join(moving)} move; in Ghia's cavity only the top lid (y_hi) "
                         f"moves: {fix}.")
    if state.solid is not None and bool(state.solid.any()):
        raise InputError(f"ghia_errors: the box holds {int(state.solid.sum())} solid cell(s); Ghia's cavity is "
                         f"empty: {fix}.")
    lid = float(b.wall_velocity[3])
    if lid <= 0.0:
        raise InputError(f"ghia_errors: the state's top wall moves at {lid:g} (y_hi {b.y_hi!r}); Ghia's "
                         f"cavity has a no-slip lid at the top moving in +x: {fix}.")
    if lid_velocity is not None and float(lid_velocity) != lid:
        raise InputError(f"ghia_errors: lid_velocity={lid_velocity!r} but the state's lid moves at {lid:g}: pass "
                         "that (or nothing: the state's own is used).")
    if scene is not None:
        nu = float(scene.config.viscosity)
        scene_re = lid * state.nx * float(state.dx) / nu if nu > 0 else float("inf")
        if abs(scene_re - float(re)) > 1e-6 * float(re):
            raise InputError(f"ghia_errors: the scene's Reynolds number is {scene_re:.6g} (lid {lid:g} x side "
                             f"{state.nx * float(state.dx):g} / viscosity {nu:g}) but re={re!r} was asked: compare "
                             f"with ghia_errors(state, {round(scene_re)} if it is tabulated) or build "
                             f"lid_driven_cavity(re={re}, n).")
    y, uy, x, vx = cavity_centrelines(state, lid)
    eu = np.abs(np.interp(GHIA_Y, y, uy) - np.asarray(GHIA_U[re]))
    ev = np.abs(np.interp(GHIA_X, x, vx) - np.asarray(GHIA_V[re]))
    return {"max_abs_error_u": float(eu.max()), "max_abs_error_v": float(ev.max()),
            "max_abs_error": float(max(eu.max(), ev.max())), "u_at_ghia_y": np.interp(GHIA_Y, y, uy).tolist(),
            "v_at_ghia_x": np.interp(GHIA_X, x, vx).tolist()}


#: :func:`strouhal` returns NaN when the signal's peak-to-peak is below this fraction of its scale
#: (round-off or a decaying transient, not shedding: 8e-6 for a steady Kármán flow at n=16, float32).
STROUHAL_MIN_AMPLITUDE = 1e-4
#: ... or when the periods between its upward mean crossings scatter more than this (std / mean):
#: shedding repeats to ~2 % (0.016 over a whole Kármán run, transient included), round-off
#: crossings scatter by 50-90 %.
STROUHAL_MAX_PERIOD_SCATTER = 0.1


def strouhal(t, signal, length: float, velocity: float, scale: float | None = None) -> float:
    """Shedding Strouhal number ``f L / U`` from a periodic signal (e.g. the lift) sampled at times
    ``t``: the mean period between upward crossings of its mean (linearly interpolated).

    NaN, with a ``UserWarning`` saying why, when the signal does not show a regular oscillation:
    fewer than two full periods; a peak-to-peak below :data:`STROUHAL_MIN_AMPLITUDE` of ``scale``
    (the signal's units; default ``0.5 velocity^2 length``, the force scale of a lift per unit
    depth and density 1; pass ``scale=1`` for a coefficient such as ``cl``); or crossing periods
    whose std / mean exceeds :data:`STROUHAL_MAX_PERIOD_SCATTER`. (Until 2026-12 a steady flow
    gave a number from its round-off crossings: 0.53 for a Kármán run that did not shed.)"""
    import warnings

    t = np.asarray(t, dtype=float)
    s = np.asarray(signal, dtype=float)
    scale = 0.5 * float(velocity) ** 2 * float(length) if scale is None else float(scale)
    s = s - s.mean()
    ptp = float(s.max() - s.min()) if s.size else 0.0
    if ptp < STROUHAL_MIN_AMPLITUDE * abs(scale):
        warnings.warn(f"strouhal: the signal's peak-to-peak {ptp:.3g} is below {STROUHAL_MIN_AMPLITUDE:g} of its scale "
                      f"{scale:.3g}: no oscillation (a steady flow's round-off); returning NaN. Pass scale= if the "
                      "signal is not a force per unit depth (scale=1 for cl).", UserWarning, stacklevel=2)
        return float("nan")
    up = np.nonzero((s[:-1] < 0) & (s[1:] >= 0))[0]
    if len(up) < 3:
        # (until 2026-12-04 without a word: a NaN that read like "no shedding" for a series too short)
        span = float(t[-1] - t[0]) if t.size else 0.0
        warnings.warn(f"strouhal: {len(up)} upward mean crossing(s) in the {t.size} samples over t = {span:.4g}: fewer "
                      "than the 3 that two full periods need; returning NaN. Record a longer series (several shedding "
                      "periods after the transient).", UserWarning, stacklevel=2)
        return float("nan")
    tc = t[up] - s[up] * (t[up + 1] - t[up]) / (s[up + 1] - s[up])
    periods = np.diff(tc)
    scatter = float(periods.std() / periods.mean())
    if scatter > STROUHAL_MAX_PERIOD_SCATTER:
        warnings.warn(f"strouhal: the {len(periods)} periods between upward mean crossings scatter by "
                      f"{100 * scatter:.0f} % (std / mean, limit {100 * STROUHAL_MAX_PERIOD_SCATTER:.0f} %): not a "
                      "periodic shedding signal; returning NaN.", UserWarning, stacklevel=2)
        return float("nan")
    period = (tc[-1] - tc[0]) / (len(tc) - 1)
    return float(length / (period * velocity))
