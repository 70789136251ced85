"""Watching a fluid run: field snapshots, an animation, a live Taichi window and the metrics figure.

Fields (all 2D NumPy arrays indexed ``[x, y]``, float32; the cell fields NaN in solid cells, the
corner vorticity 0 at corners inside a body, which the obstacle drawn on top hides):

* ``"vorticity"`` -- corner vorticity ``omega = dv/dx - du/dy`` (1/time, the domain's time unit), at the
  corners :func:`~lawful.kernels.mac_operators.vorticity_torch` gives;
* ``"density"`` -- the scene's first passive scalar (``smoke`` for ``smoke_plume``, ``dye`` for
  ``karman``; amount per unit area); scenes without a scalar have no density;
* ``"speed"`` -- ``|u|`` at cell centres from the averaged face velocities (length/time);
* ``"pressure"`` -- the state's cell pressure (length^2/time^2, density 1): with the pressure
  predictor the last step's time-centred pressure (:func:`~lawful.fluids.solver.stored_pressure`).

The default field is the density for ``smoke_plume`` and the vorticity otherwise
(:func:`default_field`). Axes are in grid cells (``x / dx``). The obstacle (solid cells) is drawn
in flat dark grey on top of the field.

**Colour scale of an animation.** :class:`FrameRecorder` keeps a bounded number of frames (one
float32 copy of the field per kept step, never the state history) and :meth:`FrameRecorder.save`
fixes one colour range for every frame from all kept frames pooled: the 99.5th percentile of
``|omega|`` (symmetric, ``-a..a``) for vorticity, ``0..p99.5`` for density and speed, and
``p0.5..p99.5`` for pressure. Percentiles rather than extremes, so that a few cells (the impulsive
start at an obstacle) do not wash out the rest of the run. A snapshot PNG, written while the run
goes, uses the same rule on its own frame (its colour bar shows the range), or a range it is given.

**Live window** (:class:`LiveView`): the same field in a ``ti.GUI`` window, redrawn every step; its
colour range starts from the first frame and only widens (same percentiles), so a colour never
means two values in one window unless the range grew, which the window's caption reports.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np

from lawful.kernels.errors import BackendError, InputError

__all__ = [
    "metrics_panels",
    "FIELDS", "default_field", "check_field", "field_values", "colour_limits", "frame_interval",
    "FrameRecorder", "Animation", "save_field_png", "display_available", "require_display", "LiveView",
    "WindowClosed",
    "plot_metrics", "read_metrics_thinned", "analytic_kinetic_energy",
]

FIELDS = ("vorticity", "density", "speed", "pressure")

# colour map, colour-bar label
_STYLE = {
    "vorticity": ("RdBu_r", "vorticity ω (1/time)"),
    "density": ("inferno", "{name} (amount / length²)"),
    "speed": ("viridis", "speed |u| (length/time)"),
    "pressure": ("cividis", "pressure p (length²/time², density 1)"),
}
_PCT = 99.5  # the percentile that fixes colour ranges (see the module docstring)


def _figure(figsize, dpi=100):
    """A matplotlib ``Figure`` outside pyplot (no backend chosen, no global figure registry)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)


def _scene_name(scene_or_state) -> str | None:
    return getattr(scene_or_state, "name", None)


def _state(scene_or_state):
    return getattr(scene_or_state, "state", scene_or_state)


def default_field(scene_or_state) -> str:
    """``"density"`` for the smoke plume (a state whose first scalar is ``"smoke"``), else
    ``"vorticity"``."""
    st = _state(scene_or_state)
    names = tuple(getattr(st, "scalar_names", ()))
    if _scene_name(scene_or_state) == "smoke_plume" or (names and names[0] == "smoke"):
        return "density"
    return "vorticity"


def check_field(scene_or_state, name: str | None) -> str:
    """Return the field to show: ``name`` if the scene has it, the default when ``name`` is None;
    an unknown name, or ``"density"`` on a scene without a passive scalar, is an :class:`InputError`."""
    if name is None:
        return default_field(scene_or_state)
    if name not in FIELDS:
        raise InputError(f"field {name!r} is not one lawful can show: use one of {', '.join(FIELDS)}.")
    st = _state(scene_or_state)
    if name == "density" and not tuple(getattr(st, "scalar_names", ())):
        label = _scene_name(scene_or_state) or "this state"
        raise InputError(f"field 'density' needs a passive scalar but scene {label!r} carries none: "
                         f"use --field vorticity, speed or pressure.")
    return name


def field_values(state, name: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``(values, extent)`` of field ``name`` of ``state``: a float32 ``[x, y]`` array (solid cells
    NaN) and its ``(x0, x1, y0, y1)`` extent in cells (corner fields sit half a cell off the cell
    fields). See the module docstring for each field's definition and unit."""
    import torch

    from lawful.kernels.mac_operators import vorticity_torch

    nx, ny = state.nx, state.ny
    solid = state.solid.detach().cpu().numpy()
    if name == "vorticity":
        px, py = state.boundary.periodic_axes
        w = vorticity_torch(state.u.detach().double(), state.v.detach().double(), state.dx, (px, py))
        vals = w.cpu().numpy().astype(np.float32)
        # corner (i, j) sits at x = i cells; periodic: corners 0..n-1, else interior corners 1..n-1
        x0, x1 = (-0.5, nx - 0.5) if px else (0.5, nx - 0.5)
        y0, y1 = (-0.5, ny - 0.5) if py else (0.5, ny - 0.5)
        return vals, (x0, x1, y0, y1)
    if name == "density":
        if state.scalars.shape[0] == 0:
            check_field(state, "density")
        vals = state.scalars[0].detach().cpu().numpy().astype(np.float32)
    elif name == "speed":
        with torch.no_grad():
            uc = 0.5 * (state.u[1:] + state.u[:-1]).double()
            vc = 0.5 * (state.v[:, 1:] + state.v[:, :-1]).double()
            vals = torch.sqrt(uc * uc + vc * vc).cpu().numpy().astype(np.float32)
    elif name == "pressure":
        vals = state.p.detach().cpu().numpy().astype(np.float32)
    else:
        check_field(state, name)
        raise AssertionError(name)  # pragma: no cover - check_field raised
    vals = vals.copy()
    vals[solid] = np.nan
    return vals, (0.0, float(nx), 0.0, float(ny))


def colour_limits(name: str, frames) -> tuple[float, float]:
    """The fixed colour range of field ``name`` over ``frames`` (arrays; NaN ignored), by the rule
    in the module docstring. Never an empty range."""
    vals = np.concatenate([np.asarray(f, dtype=np.float64).ravel() for f in frames]) if frames else np.zeros(1)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        vals = np.zeros(1)
    if name == "vorticity":
        a = float(np.percentile(np.abs(vals), _PCT))
        a = a if a > 0 else 1.0
        return -a, a
    if name in ("density", "speed"):
        hi = float(np.percentile(vals, _PCT))
        return 0.0, hi if hi > 0 else 1.0
    lo, hi = (float(x) for x in np.percentile(vals, [100 - _PCT, _PCT]))
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def frame_interval(steps: int, max_frames: int) -> int:
    """The smallest number of steps ``k`` between kept frames for which step 0, every ``k``-th step
    and the last step (``1 + ceil(steps / k)`` frames) are at most ``max_frames`` (``>= 2``)."""
    if not isinstance(max_frames, int) or max_frames < 2:
        raise InputError(f"max_frames={max_frames!r} must be an integer >= 2 (the first and the last frame).")
    return max(1, math.ceil(max(steps, 1) / (max_frames - 1)))


# ----------------------------------------------------------------------------------------------
# one figure layout for snapshots and animations
# ----------------------------------------------------------------------------------------------

class _FieldFigure:
    """A fixed-layout figure: the field, the obstacle on top, a colour bar, axes in cells."""

    def __init__(self, name, state, values, extent, clim, scalar_name=None, dpi=100):
        from matplotlib.colors import ListedColormap

        nx, ny = state.nx, state.ny
        ax_w = 6.4 if nx >= 1.5 * ny else 4.0
        ax_h = min(max(ax_w * ny / nx, 1.6), 5.0)
        # cells stay square: tall grids get narrower axes, channels longer than 4:1 wider ones (up to
        # 12.8 in, then lower ones); only narrowing stretched a 6:1 channel's cylinder 1.5x upward
        ax_w = ax_h * nx / ny
        if ax_w > 12.8:
            ax_w, ax_h = 12.8, 12.8 * ny / nx
        left, right, bottom, top, cb = 0.75, 1.35, 0.6, 0.45, 0.16
        w_in, h_in = left + ax_w + right, bottom + ax_h + top
        # even pixel sizes (video encoders need them)
        w_px, h_px = 2 * math.ceil(w_in * dpi / 2), 2 * math.ceil(h_in * dpi / 2)
        w_in, h_in = w_px / dpi, h_px / dpi
        self.fig = _figure((w_in, h_in), dpi)
        self.ax = self.fig.add_axes([left / w_in, bottom / h_in, ax_w / w_in, ax_h / h_in])
        cax = self.fig.add_axes([(left + ax_w + 0.15) / w_in, bottom / h_in, cb / w_in, ax_h / h_in])
        cmap, label = _STYLE[name]
        self.im = self.ax.imshow(values.T, origin="lower", cmap=cmap, vmin=clim[0], vmax=clim[1], extent=extent,
                                 interpolation="nearest", aspect="auto")
        solid = state.solid.detach().cpu().numpy()
        if solid.any():
            self.ax.imshow(np.ma.masked_where(~solid.T, solid.T.astype(float)), origin="lower",
                           cmap=ListedColormap(["#4a4a4a"]), extent=(0, nx, 0, ny), interpolation="nearest",
                           aspect="auto", vmin=0, vmax=1)
            self.ax.contour(np.arange(nx) + 0.5, np.arange(ny) + 0.5, solid.T.astype(float), levels=[0.5],
                            colors="k", linewidths=0.8)
        self.ax.set_xlim(0, nx)
        self.ax.set_ylim(0, ny)
        self.ax.set_xlabel(f"x (cells, Δx = {state.dx:.4g})")
        self.ax.set_ylabel("y (cells)")
        self.cbar = self.fig.colorbar(self.im, cax=cax)
        self.cbar.set_label(label.format(name=scalar_name or "scalar"))
        self.title = self.ax.set_title("")

    def update(self, values, title):
        self.im.set_data(values.T)
        self.title.set_text(title)

    def close(self):
        self.fig.clear()


def _title(scene_name, name, step, t):
    head = f"{scene_name}: " if scene_name else ""
    return f"{head}{name}, step {step}, t = {t:.4g}"


def save_field_png(state, path, name: str | None = None, scene_name: str | None = None, dpi: int = 90,
                   title: str | None = None, clim: tuple[float, float] | None = None) -> Path:
    """Write field ``name`` (default: :func:`default_field`) of ``state`` as a PNG with a colour bar,
    the obstacle and axes in cells. The colour range is ``clim`` ``(lo, hi)`` when given (e.g. one
    range for PNGs that are to be compared), else this frame's own (module docstring); ``title``
    replaces the default (scene, field, step, time). Written atomically; returns the path."""
    import io

    from lawful.kernels.modelfile import atomic_write

    name = check_field(state, name)
    vals, extent = field_values(state, name)
    if clim is not None and not (len(clim) == 2 and all(map(math.isfinite, clim)) and clim[0] < clim[1]):
        raise InputError(f"colour range clim={clim!r} must be two finite numbers (lo, hi) with lo < hi.")
    fig = _FieldFigure(name, state, vals, extent, clim if clim is not None else colour_limits(name, [vals]),
                       scalar_name=(state.scalar_names or (None,))[0], dpi=dpi)
    fig.update(vals, title if title is not None else _title(scene_name, name, state.step, state.t))
    buf = io.BytesIO()
    fig.fig.savefig(buf, format="png", dpi=dpi)
    fig.close()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return Path(path)


# ----------------------------------------------------------------------------------------------
# animation
# ----------------------------------------------------------------------------------------------

@dataclass
class Animation:
    """What :meth:`FrameRecorder.save` wrote: ``gif`` path, ``mp4`` path (None without ffmpeg),
    ``n_frames``, the fixed colour range ``clim`` and the range each frame was drawn with
    (``frame_clims``, all equal to ``clim``), the kept ``steps``."""

    gif: Path
    mp4: Path | None
    n_frames: int
    clim: tuple[float, float]
    frame_clims: list = dc_field(default_factory=list)
    steps: list = dc_field(default_factory=list)


def _save_atomically(anim, path: Path, writer, dpi) -> None:
    """``anim.save`` to a temporary file beside ``path``, moved over it when complete (removed on error)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        anim.save(tmp, writer=writer, dpi=dpi)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class FrameRecorder:
    """A ``run(..., callback=recorder)`` callback that keeps field ``name`` every ``every`` steps
    and at step ``last_step`` (the run's end, so the animation shows it).

    Only the kept frames are stored (float32, one ``[x, y]`` array each; a run of ``steps`` steps
    keeps ``1 + ceil(steps / every)`` with ``last_step``), never the state history. Call it once with
    the initial state (``recorder(state)``) to include step 0, then pass it to ``run``;
    :meth:`save` writes the animation.
    """

    def __init__(self, scene_or_state, name: str | None = None, every: int = 1, last_step: int | None = None):
        if not isinstance(every, int) or every < 1:
            raise InputError(f"frame interval every={every!r} must be an integer >= 1 (steps).")
        st = _state(scene_or_state)
        self.name = check_field(scene_or_state, name)
        self.scene_name = _scene_name(scene_or_state)
        self.every = every
        self.last_step = last_step
        self.frames: list[np.ndarray] = []
        self.steps: list[int] = []
        self.times: list[float] = []
        self.extent = None
        self._state = st  # for the grid, the obstacle and dx (which do not change during a run)

    def __call__(self, state, record: dict | None = None) -> None:
        step = int(record["step"]) if record is not None else int(state.step)
        if step % self.every and step != self.last_step:
            return
        vals, self.extent = field_values(state, self.name)
        self.frames.append(vals)
        self.steps.append(step)
        self.times.append(float(record["t"]) if record is not None else float(state.t))

    def save(self, path, fps: int = 15, mp4: bool | None = None, dpi: int = 90) -> Animation:
        """Write the kept frames as a GIF at ``path`` (Pillow) and, when ``mp4`` is true or, by
        default, when ``ffmpeg`` is on the PATH, an MP4 beside it; one colour range for all frames
        (:func:`colour_limits`). An empty recorder is an :class:`InputError`."""
        from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter

        if not self.frames:
            raise InputError(f"no frames were recorded for {path}: run at least {self.every} step(s) or call the "
                             "recorder with the initial state.")
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
            raise InputError(f"fps={fps!r} must be an integer >= 1 (animation frames per second).")
        if mp4 is None:
            mp4 = shutil.which("ffmpeg") is not None
        elif mp4 and shutil.which("ffmpeg") is None:
            raise BackendError(f"an MP4 beside {path} needs ffmpeg on the PATH, which is missing: install ffmpeg "
                               "or pass mp4=False for the GIF only.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        clim = colour_limits(self.name, self.frames)
        st = self._state
        fig = _FieldFigure(self.name, st, self.frames[0], self.extent, clim,
                           scalar_name=(st.scalar_names or (None,))[0], dpi=dpi)
        drawn: list = []

        def draw(k):
            fig.update(self.frames[k], _title(self.scene_name, self.name, self.steps[k], self.times[k]))
            drawn.append(tuple(float(c) for c in fig.im.get_clim()))
            return (fig.im, fig.title)

        anim = FuncAnimation(fig.fig, draw, frames=len(self.frames), blit=False, repeat=False)
        video = path.with_suffix(".mp4") if mp4 else None
        try:
            _save_atomically(anim, path, PillowWriter(fps=fps), dpi)
            gif_clims = drawn[-len(self.frames):]
            if video is not None:
                writer = FFMpegWriter(fps=fps, codec="libx264", extra_args=["-pix_fmt", "yuv420p"])
                _save_atomically(anim, video, writer, dpi)
        finally:
            fig.close()
        return Animation(gif=path, mp4=video, n_frames=len(self.frames), clim=clim, frame_clims=gif_clims,
                         steps=list(self.steps))


# ----------------------------------------------------------------------------------------------
# live window
# ----------------------------------------------------------------------------------------------

def display_available() -> bool:
    """True when ``$DISPLAY`` or ``$WAYLAND_DISPLAY`` is set (a window can be opened)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def require_display() -> None:
    """Raise :class:`BackendError` (one sentence: what is missing and what to do) when no display
    is available for a live window."""
    if not display_available():
        raise BackendError("--gui needs a display but neither DISPLAY nor WAYLAND_DISPLAY is set: run it on a "
                           "desktop or under xvfb-run, or use --animate to write a GIF instead.")


class WindowClosed(Exception):
    """Raised from the run's callback when the user closes the live window (or presses Escape)."""


class LiveView:
    """A live ``ti.GUI`` window showing field ``name`` of the running state; use as the run's
    callback (``view(state, record)``). Closing the window or pressing Escape raises
    :class:`WindowClosed` from the callback, which stops the run.

    Needs a display: without ``$DISPLAY`` / ``$WAYLAND_DISPLAY`` the constructor raises
    :class:`BackendError`. Each cell is drawn as a ``scale`` x ``scale`` pixel block (default: the
    largest that keeps the window within 1024 x 768 pixels). Taichi is started, if it is not yet,
    through :func:`lawful.kernels.ensure_taichi` (its arch rules apply).
    """

    def __init__(self, scene_or_state, name: str | None = None, scale: int | None = None, title: str = "lawful"):
        require_display()
        import matplotlib

        import taichi as ti

        from lawful.kernels import ensure_taichi

        ensure_taichi()

        st = _state(scene_or_state)
        self.name = check_field(scene_or_state, name)
        self.scene_name = _scene_name(scene_or_state)
        self.nx, self.ny = st.nx, st.ny
        self.scale = scale or max(1, min(1024 // self.nx, 768 // self.ny))
        self._cmap = matplotlib.colormaps[_STYLE[self.name][0]]
        self._solid = np.kron(st.solid.detach().cpu().numpy(), np.ones((self.scale, self.scale), dtype=bool))
        self.clim: tuple[float, float] | None = None
        res = (self.nx * self.scale, self.ny * self.scale)
        try:
            self.gui = ti.GUI(f"{title}: {self.scene_name or ''} {self.name}".strip(), res=res, fast_gui=False)
        except Exception as exc:  # noqa: BLE001 - the windowing layer raises various types
            display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            raise BackendError(f"could not open a Taichi window on display {display!r} ({exc}): check the "
                               "display, or use --animate to write a GIF instead.") from exc

    def image(self, state) -> np.ndarray:
        """The ``(nx*scale, ny*scale, 3)`` float32 RGB image of the field (obstacle dark grey)."""
        vals, extent = field_values(state, self.name)
        lo, hi = colour_limits(self.name, [vals])
        if self.clim is not None:  # the range only widens
            lo, hi = min(lo, self.clim[0]), max(hi, self.clim[1])
        self.clim = (lo, hi)
        if vals.shape != (self.nx, self.ny):  # interior corners 1..n-1 of a walled axis: pad to n
            out = np.full((self.nx, self.ny), np.nan, dtype=np.float32)
            ox, oy = self.nx - vals.shape[0], self.ny - vals.shape[1]
            out[ox:, oy:] = vals
            vals = out
        x = np.clip((np.nan_to_num(vals, nan=0.5 * (lo + hi)) - lo) / (hi - lo), 0.0, 1.0)
        rgb = self._cmap(x)[..., :3].astype(np.float32)
        rgb = np.kron(rgb, np.ones((self.scale, self.scale, 1), dtype=np.float32))
        if extent[0] % 1.0 != 0.0:
            # a corner field: corner k sits on the line x = k cells, so its block is centred there
            # (half a cell down and left of cell k's); drawn as cell k's it sat half a cell up and
            # right of the obstacle. Periodic axes wrap; a walled axis's padded corner 0 (no value)
            # moves to the far edge, where corner n, on the wall, has none either
            half = self.scale // 2
            rgb = np.roll(rgb, (-half, -half), axis=(0, 1))
        rgb[self._solid] = 0.29
        return rgb

    def __call__(self, state, record: dict | None = None, screenshot=None) -> None:
        import taichi as ti

        gui = self.gui
        if not gui.running or gui.get_event((ti.GUI.PRESS, ti.GUI.ESCAPE)):
            raise WindowClosed(f"window closed at step {state.step}")
        gui.set_image(self.image(state))
        lo, hi = self.clim
        # the caption sits on the colour map's middle (vorticity: white) or low end (dark)
        gui.text(f"{self.name}  step {state.step}  t={state.t:.4g}  range [{lo:.3g}, {hi:.3g}]", (0.01, 0.98),
                 font_size=16, color=0x202020 if self.name == "vorticity" else 0xFFFFFF)
        gui.show(None if screenshot is None else str(screenshot))

    def close(self) -> None:
        """Close the window."""
        if getattr(self, "gui", None) is not None and self.gui.core is not None:
            self.gui.close()


# ----------------------------------------------------------------------------------------------
# metrics figure
# ----------------------------------------------------------------------------------------------

# The metrics figure lives with the metrics (lawful.fluids.metrics) so that run(plot=...) draws the
# same figure; these names stay importable from here.
from lawful.fluids.metrics import (  # noqa: E402,F401
    analytic_kinetic_energy,
    metrics_panels,
    plot_metrics,
    read_metrics_thinned,
)
