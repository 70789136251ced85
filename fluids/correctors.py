"""Neural correctors for the MAC solver: the divergence-free corrector and its baselines.

Every corrector here is a convolutional network over the grid's *cell corners* and is called by
the solver once per step (``corrector(state)``, in place, zero-copy on the state's tensors). They
differ only in how the network output becomes a velocity correction:

* :class:`DivergenceFreeCorrector` (the "hard" constraint) — the network outputs a stream function
  ``psi`` at the corners ``(nx+1, ny+1)``; the correction is its discrete curl, computed by *the*
  curl kernel of the solver (:func:`lawful.kernels.mac_operators.curl`; its torch twin
  :func:`~lawful.kernels.mac_operators.curl_torch` in training). On the MAC grid the divergence of a
  curl telescopes: for cell ``(i, j)``

      dx * div = (psi[i+1,j+1] - psi[i+1,j]) - (psi[i,j+1] - psi[i,j])
               - (psi[i+1,j+1] - psi[i,j+1]) + (psi[i+1,j] - psi[i,j]) = 0

  for *any* psi, hence for any weights — random or trained — up to floating-point rounding.
  The flux through a face is the difference of psi at its two corners, so psi is held at one
  constant on each connected set of solid corners (each wall / obstacle / inflow side; see
  :func:`lawful.kernels.mac_grid.solid_corner_mask`): the correction carries no flow through any
  wall, obstacle or inflow face. The constant of each solid body is the mean of the network's raw
  psi over it (a learned circulation around an obstacle is allowed; in a closed box, or a channel
  whose walls meet at its inflow side, the outer walls form one body, so the net flow rate is never
  changed; walls that periodic or outflow sides separate are separate bodies, and the correction
  may shift flux between them, which those sides leave free). On periodic domains a uniform flow ``(U, V)`` is
  divergence-free but is not the curl of any periodic psi, so a learned mean-flow head adds it (on
  each periodic axis, only when there are no obstacles).

  *3D analogue*: faces carry ``(u, v, w)``, the network outputs a vector potential ``A`` on the cell
  *edges* (``A_x`` on x-edges ``(nx, ny+1, nz+1)``, etc.) and the correction is the discrete curl
  ``u = (d_y A_z - d_z A_y)`` on x-faces (and cyclic); the divergence of the discrete curl of edge
  values telescopes to zero exactly as above (``div curl = 0`` for the discrete de Rham complex
  corners -> edges -> faces -> cells). No-penetration needs the tangential ``A`` on solid surfaces
  to be a gradient (e.g. 0 on each body's edges), the analogue of psi = const per body, and the
  mean flow is again a separate uniform term on periodic axes.

* :class:`UnconstrainedCorrector` — the baseline that outputs ``(du, dv)`` directly (two corner
  channels averaged onto the faces, zero on fixed faces). Trained plain, with
  :class:`~lawful.kernels.constraints.SoftPenalty` or
  :class:`~lawful.kernels.constraints.AugmentedLagrangian` on its divergence (see
  :mod:`lawful.fluids.corrector_training`), or with ``project=True``: the correction is followed by an
  extra pressure projection (FluidNet-style; divergence-free again, at the price of a second
  Poisson solve every step).

Inputs of every network, all sampled at the corners (scaled by ``velocity_scale``): ``u`` and ``v``
averaged to the corners, the corner vorticity ``dx * omega``, the fluid fraction of the four
surrounding cells, the pinned-corner mask, the passive scalars averaged to the corners
(``n_scalars`` of them), and optionally the Reynolds number (``reynolds / reynolds_scale``, constant
channel). Convolutions pad *periodically* on periodic axes (the duplicate last corner row is dropped
first and restored afterwards) and with zeros on other axes, where the mask channels tell the
network about walls and obstacles. Networks are resolution independent (pure convolutions).

Save a trained corrector with :meth:`save` (the shared safe model-file format,
:mod:`lawful.kernels.modelfile`; no code runs on load) and read it back with :func:`load_corrector`.

A trained corrector is a CNN in grid cells and absolute velocities, applied once per step: it
learned one resolution (Kármán: cells across the cylinder, and the cylinder's size in channel
heights), one scene, a Reynolds range, one velocity scale (the scene's reference velocity) and one
time step (:func:`scene_domain` of its training scene). :func:`training_domain` reads that record from a file's
metadata (``trained_on``, or the ``training.train_cases`` of older files) and
:func:`check_training_domain` compares it with a scene, warning with
:class:`~lawful.kernels.errors.OutOfDomainWarning`; :meth:`bind` runs that check, and so does
``lawful fluid`` (through ``bind``).
"""

from __future__ import annotations

import math
import re as _re
import warnings

import torch
import torch.nn.functional as F

from lawful.kernels.errors import InputError, ModelFileError, OutOfDomainWarning, ShapeError
from lawful.kernels.mac_grid import Boundary
from lawful.kernels.mac_operators import curl, curl_torch
from lawful.kernels.precision import dtype_name
from lawful.fluids.corrector_geometry import (CornerGeometry, GeometryCache, _cells_to_corners, _pad_axis,
                                              apply_stream_function, corner_geometry, pin_stream_function)

__all__ = [
    "DivergenceFreeCorrector",
    "UnconstrainedCorrector",
    "CornerGeometry",
    "corner_geometry",
    "load_corrector",
    "training_domain",
    "check_training_domain",
    "scene_domain",
    "MODEL_KIND",
    "DEFAULT_NET",
]

MODEL_KIND = "FluidCorrector"

#: The default network of both correctors: ``hidden`` channels and ``layers`` convolutions (the
#: class defaults, ``lawful train-corrector``'s and the benchmark's). 8 channels and 3 layers: on the
#: held-out Kármán case it cuts the error as much as 16 and 4 did (0.84 against 0.85 of the
#: uncorrected error) at about half the cost per step (128^2, one thread: 1.9 against 3.7 ms).
DEFAULT_NET = dict(hidden=8, layers=3)


# --------------------------------------------------------------------------------------------
# corner features (torch, differentiable)
# --------------------------------------------------------------------------------------------

def _corner_velocity(u: torch.Tensor, v: torch.Tensor, periodic):
    """u, v averaged to the corners and the corner circulation ``dx * vorticity`` (all (nx+1, ny+1))."""
    ny = u.shape[1]
    nx = v.shape[0]
    up = _pad_axis(u, 1, periodic[1])                                # (nx+1, ny+2)
    vp = _pad_axis(v, 0, periodic[0])                                # (nx+2, ny+1)
    uc = 0.5 * (up[:, :-1] + up[:, 1:])
    vc = 0.5 * (vp[:-1] + vp[1:])
    circ = (vp[1:] - vp[:-1]) - (up[:, 1:] - up[:, :-1])
    if not periodic[0]:
        circ = circ.clone()
        circ[0], circ[nx] = 0.0, 0.0
    if not periodic[1]:
        circ = circ.clone()
        circ[:, 0], circ[:, ny] = 0.0, 0.0
    return uc, vc, circ


def _canonical(x: torch.Tensor, periodic) -> torch.Tensor:
    """Drop the duplicate last corner row/column of periodic axes: ``(C, cx, cy)``."""
    if periodic[0]:
        x = x[:, :-1]
    if periodic[1]:
        x = x[:, :, :-1]
    return x


def _restore(x: torch.Tensor, periodic) -> torch.Tensor:
    """Inverse of :func:`_canonical`: append the wrapped duplicate rows/columns."""
    if periodic[0]:
        x = torch.cat([x, x[:, :1]], 1)
    if periodic[1]:
        x = torch.cat([x, x[:, :, :1]], 2)
    return x


def _wrap_halo(x: torch.Tensor, r: int, periodic) -> torch.Tensor:
    """Extend a ``(B, C, H, W)`` batch by ``r`` periodic copies on each side of its periodic axes
    (the others untouched)."""
    if r == 0:
        return x
    if periodic[1]:
        x = torch.cat([x[..., -r:], x, x[..., :r]], -1)
    if periodic[0]:
        x = torch.cat([x[..., -r:, :], x, x[..., :r, :]], -2)
    return x


# --------------------------------------------------------------------------------------------
# the shared network
# --------------------------------------------------------------------------------------------

#: Below this many output channels the network's last convolution is computed as one matrix
#: product and a sum of shifted tap maps (:func:`_conv_few_outputs`): oneDNN blocks output
#: channels by 16 on AVX-512, so its 16 -> 1 convolution cost what 16 -> 16 does (0.72 ms at 128^2,
#: 6.5 GFLOP/s), a fifth of the corrector's network time.
_FEW_OUTPUTS = 8


def _conv_few_outputs(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pad) -> torch.Tensor:
    """``F.conv2d(h, weight, bias, padding=pad)`` (stride 1, square odd kernel) for a few output
    channels: every (output, tap) weight row times the input channels in one matrix product over
    the (B*H*W, C) pixels (``h`` channels-last, so that view is free), then the k*k shifted tap maps
    summed per output. The same convolution to float rounding (summation order: 5e-7 relative in
    float32), about 4x faster at 16 -> 1 on the CPU (0.18 against 0.74 ms at 130^2); differentiable.
    ``h`` (B, C, H, W), ``weight`` (O, C, k, k), ``bias`` (O,), ``pad`` (pad_h, pad_w) zeros."""
    b_, c, hh, ww = h.shape
    o, _, k, _ = weight.shape
    rows = weight.permute(0, 2, 3, 1).reshape(o * k * k, c)          # (output, dy, dx) x channel
    flat = h.permute(0, 2, 3, 1).reshape(b_ * hh * ww, c)
    taps = torch.mm(rows, flat.t()).view(o, k * k, b_, hh, ww)
    if pad[0] or pad[1]:
        taps = F.pad(taps, (pad[1], pad[1], pad[0], pad[0]))
    ho, wo = taps.shape[-2] - k + 1, taps.shape[-1] - k + 1
    out = taps[:, 0, :, :ho, :wo] + bias.view(o, 1, 1, 1)
    for t in range(1, k * k):           # in place: a fresh array (add's backward needs no values)
        dy, dx = divmod(t, k)
        out.add_(taps[:, t, :, dy:dy + ho, dx:dx + wo])
    return out.transpose(0, 1)                                        # (B, O, ho, wo)


class _CornerNet(torch.nn.Module):
    """A plain CNN on the corner grid with boundary-aware padding; returns the last hidden features
    and the ``out_channels`` output map (both canonical, no periodic duplicates)."""

    def __init__(self, in_channels, out_channels, hidden, layers, kernel_size, init_gain, dtype, device):
        super().__init__()
        if layers < 2:
            raise InputError(f"layers={layers!r}: a corrector network needs at least 2 conv layers.")
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise InputError(f"kernel_size={kernel_size!r} must be an odd positive integer (e.g. 3).")
        self.r = kernel_size // 2
        chans = [in_channels] + [hidden] * (layers - 1)
        self.hidden_layers = torch.nn.ModuleList(
            torch.nn.Conv2d(a, b, kernel_size, dtype=dtype, device=device) for a, b in zip(chans[:-1], chans[1:])
        )
        self.out = torch.nn.Conv2d(hidden, out_channels, kernel_size, dtype=dtype, device=device)
        with torch.no_grad():
            self.out.weight.mul_(init_gain)
            self.out.bias.zero_()

    @property
    def halo(self) -> int:
        """Corners of periodic halo the input needs on each side: ``r`` per convolution."""
        return self.r * (len(self.hidden_layers) + 1)

    def forward(self, x, periodic, pool=None, haloed: bool = False):
        """``(pooled, out)`` of a ``(B, C, cx, cy)`` input: ``out`` ``(B, out_channels, cx, cy)``
        the output map (canonical corners); ``pooled`` ``(B, hidden)`` the last hidden features
        summed with the canonical ``(cx, cy)`` weight map ``pool`` (None without one).
        ``haloed``: ``x`` already carries :attr:`halo` corners of periodic halo on each side of its
        periodic axes and is channels-last (the corrector's in-loop input buffer)."""
        # Periodic axes: one halo of r cells per layer, added once, and unpadded convolutions that
        # each use up r of it (the same values as padding every layer circularly, without a copy
        # of every hidden map); other axes: each convolution's own zero padding.
        pad = (0 if periodic[0] else self.r, 0 if periodic[1] else self.r)
        # channels-last (NHWC): oneDNN's native layout for these maps, so no convolution reorders
        # its input (the first one, 5 or so input channels, ran 5x slower in NCHW on the CPU);
        # the same values bit for bit, the layout only
        h = x
        if not haloed:
            h = _wrap_halo(x, self.halo, periodic).contiguous(memory_format=torch.channels_last)
        # no graph (the in-loop call): SiLU in place on the convolution's fresh output
        inplace = not torch.is_grad_enabled()
        for conv in self.hidden_layers:
            h = F.silu(F.conv2d(h, conv.weight, conv.bias, padding=pad), inplace=inplace)
        if self.out.weight.shape[0] < _FEW_OUTPUTS:
            out = _conv_few_outputs(h, self.out.weight, self.out.bias, pad)
        else:
            out = F.conv2d(h, self.out.weight, self.out.bias, padding=pad)
        pooled = None
        if pool is not None:
            # the last hidden features (channels-last, r cells of halo left on periodic axes)
            # as a free (pixels, channels) view against the weights zero-padded over that halo:
            # one matrix-vector product (the product and sum over the cropped map cost 5x more)
            r = self.r
            w = F.pad(pool, (r if periodic[1] else 0, r if periodic[1] else 0, r if periodic[0] else 0,
                             r if periodic[0] else 0))
            pooled = torch.matmul(h.permute(0, 2, 3, 1).reshape(h.shape[0], -1, h.shape[1]).transpose(1, 2),
                                  w.reshape(-1).to(h.dtype))
        return pooled, out


class _CorrectorBase(torch.nn.Module):
    """What both correctors share: configuration, input features, the in-loop call, saving."""

    _out_channels = 1

    def __init__(self, hidden: int = DEFAULT_NET["hidden"], layers: int = DEFAULT_NET["layers"], kernel_size: int = 3, n_scalars: int = 0,
                 use_reynolds: bool = False, reynolds: float | None = None, reynolds_scale: float = 100.0,
                 velocity_scale: float = 1.0, init_gain: float = 0.05, dtype=torch.float32, device=None):
        super().__init__()
        for name, val in (("hidden", hidden), ("layers", layers), ("kernel_size", kernel_size)):
            if int(val) < 1:
                raise InputError(f"{name}={val!r} must be a positive integer.")
        if int(n_scalars) < 0:
            raise InputError(f"n_scalars={n_scalars!r} must be >= 0.")
        for name, val in (("velocity_scale", velocity_scale), ("reynolds_scale", reynolds_scale)):
            if not (math.isfinite(float(val)) and float(val) > 0):
                raise InputError(f"{name}={val!r} must be a positive finite number (the domain's units, those of dx).")
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f"corrector dtype {dtype!r}: use torch.float32 or torch.float64.")
        self.config = dict(hidden=int(hidden), layers=int(layers), kernel_size=int(kernel_size),
                           n_scalars=int(n_scalars), use_reynolds=bool(use_reynolds),
                           reynolds_scale=float(reynolds_scale), velocity_scale=float(velocity_scale),
                           init_gain=float(init_gain))
        self.reynolds = None if reynolds is None else float(reynolds)
        in_ch = 5 + int(n_scalars) + int(bool(use_reynolds))
        self.net = _CornerNet(in_ch, self._out_channels, int(hidden), int(layers), int(kernel_size),
                              float(init_gain), dtype, device)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return self.net.out.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.net.out.weight.device

    def features(self, u, v, geom: CornerGeometry, scalars=None, reynolds=None) -> torch.Tensor:
        """The input map ``(1, C, cx, cy)`` at the canonical corners (see the module docstring)."""
        cfg = self.config
        per = geom.periodic
        dt = self.dtype
        u = u.to(dt)
        v = v.to(dt)
        nx, ny = geom.nx, geom.ny
        if tuple(u.shape) != (nx + 1, ny) or tuple(v.shape) != (nx, ny + 1):
            raise ShapeError(f"corrector: u {tuple(u.shape)} / v {tuple(v.shape)} do not fit the "
                             f"{nx}x{ny} grid of the solid mask: need u ({nx + 1}, {ny}), v ({nx}, {ny + 1}).")
        uc, vc, circ = _corner_velocity(u, v, per)
        s = 1.0 / cfg["velocity_scale"]
        chans = [uc * s, vc * s, circ * s, geom.fluid_corner.to(dt), geom.pinned.to(dt)]
        ns = cfg["n_scalars"]
        if ns:
            if scalars is None or scalars.dim() != 3 or scalars.shape[0] < ns:
                got = None if scalars is None else tuple(scalars.shape)
                raise ShapeError(f"corrector was built with n_scalars={ns} but the state's scalars have "
                                 f"shape {got}; need ({ns}, {nx}, {ny}) or more channels.")
            chans += list(_cells_to_corners(scalars[:ns].to(dt), per).unbind(0))
        if cfg["use_reynolds"]:
            re = reynolds if reynolds is not None else self.reynolds
            if re is None:
                trained = (training_domain(getattr(self, "metadata", None)) or {}).get("scene")
                raise InputError("this corrector takes the Reynolds number as input (use_reynolds=True"
                                 f"{f'; trained on the {trained} scene' if trained else ''}) but the state has "
                                 "none: bind it to a scene with a Reynolds number (corrector.bind(scene) names a "
                                 "scene mismatch), or pass reynolds=... to the corrector or the call.")
            chans.append(torch.full_like(uc, float(re) / cfg["reynolds_scale"]))
        x = torch.stack(chans, 0)
        return _canonical(x, per).unsqueeze(0)

    def _geometry(self, boundary, solid) -> CornerGeometry:
        """The geometry of the state's grid, from this corrector's own content-keyed cache
        (:class:`~lawful.fluids.corrector_geometry.GeometryCache`)."""
        cache = self.__dict__.get("_geometry_cache")
        if cache is None:
            cache = self.__dict__["_geometry_cache"] = GeometryCache()
        return cache.get(boundary, solid, self.dtype)

    @staticmethod
    def _state_parts(state):
        """(u, v, scalars, boundary, solid, dx, reynolds) from a solver state."""
        try:
            u, v = state.u, state.v
        except AttributeError as exc:
            raise InputError(f"a corrector is called with a fluid state (u, v, ...), got "
                             f"{type(state).__name__}.") from exc
        boundary = getattr(state, "boundary", None)
        solid = getattr(state, "solid", None)
        if boundary is None:
            raise InputError("the state has no 'boundary'; correctors need the state's Boundary.")
        if solid is None:
            solid = torch.zeros((v.shape[0], u.shape[1]), dtype=torch.bool, device=u.device)
        dx = float(getattr(state, "dx", 1.0))
        scalars = getattr(state, "scalars", None)
        params = getattr(state, "params", None) or {}
        re = getattr(state, "reynolds", None)
        if re is None and isinstance(params, dict):
            re = params.get("re", params.get("reynolds"))   # scenes write "re"
        return u, v, scalars, boundary, solid, dx, re

    # -- scenes ------------------------------------------------------------------------------
    @classmethod
    def for_scene(cls, scene, **kwargs):
        """A (random-init) corrector suited to ``scene``: the state's dtype and device, the
        Reynolds number as input when the scene has one (``scene.params["re"]``); ``kwargs``
        override the constructor arguments."""
        st = scene.state
        re = (getattr(scene, "params", None) or {}).get("re")
        opts = dict(dtype=st.dtype, device=st.device, use_reynolds=re is not None, reynolds=re)
        opts.update(kwargs)
        return cls(**opts)

    def bind(self, scene, config=None):
        """Take the scene parameters the network uses (the Reynolds number) from ``scene``;
        returns ``self``. Call before running a Reynolds-aware corrector on a new scene.
        ``config``: the :class:`~lawful.fluids.solver.SolverConfig` the run uses when it is not
        the scene's own (:func:`~lawful.fluids.solver.run` passes its solver's): its time step is
        the one checked, and its viscosity sets the flow's Reynolds number.

        A trained corrector is checked against ``scene`` (:func:`check_training_domain`: an
        :class:`~lawful.kernels.errors.OutOfDomainWarning` for another scene, resolution or
        Reynolds number). A Reynolds-aware corrector on a scene without a Reynolds number (a
        Kármán corrector on a Kolmogorov flow) raises :class:`InputError` naming the mismatch."""
        re = scene_domain(scene, config)["re"]
        if re is None and self.config.get("use_reynolds"):
            trained = (training_domain(getattr(self, "metadata", None)) or {}).get("scene")
            name = getattr(scene, "name", type(scene).__name__)
            what = (f"a corrector trained on {trained} does not apply to {name}" if trained and trained != name
                    else "it does not apply to this scene")
            raise InputError(
                f"the corrector {_corrector_label(self)} takes the Reynolds number as input (use_reynolds=True"
                f"{f'; trained on the {trained} scene' if trained else ''}) but the scene {name!r} has none: {what}; "
                f"use a corrector trained on {name} (lawful train-corrector --scene {name}), or run this one on a "
                "scene with a Reynolds number (karman, lid_driven_cavity).")
        check_training_domain(self, scene, stacklevel=3, config=config)
        if re is not None:
            self.reynolds = float(re)
        return self

    def __getstate__(self):
        # a copy (deepcopy, pickle to another process) starts unchecked: the memo names a state of
        # this process by weak reference and which grids were warned about, meaningless elsewhere
        state = self.__dict__.copy()
        state.pop("_domain_checked", None)
        state.pop("_unchecked_grids", None)
        state.pop("_solver_checked", None)
        state.pop("_pool_memo", None)
        state.pop("_input_memo", None)
        return state

    def check_solver(self, state, config=None) -> None:
        """What ``Solver.step`` calls before each corrected step (``config``: its
        :class:`~lawful.fluids.solver.SolverConfig`; the in-loop call makes it without one, when
        ``Solver.step`` has not just made it for the same state). A
        trained corrector called on a state other than that of the scene it was last checked
        against (``Solver.step`` in a user's loop, ``run((state, config), ...)``: neither knows the
        scene) warns, once per grid: it would run at the Reynolds number it was last bound to (or
        saved with), whatever the flow's, and outside the resolution, velocity and step it learned
        without a word. On that scene's state, a solver whose time step, viscosity, drag or buoyancy
        is not the one checked warns once per configuration (at ten times the viscosity the flow is
        at a tenth of the Re the network reads)."""
        meta = getattr(self, "metadata", None)
        if not meta:
            return
        memo = self.__dict__.get("_domain_checked")
        if memo is not None and memo[2] is not None and memo[2]() is state:   # the checked scene's state
            here = memo[3]
            if config is None:
                return
            off = []
            for key, label in _SOLVER_COMPARED:
                ref = here.get(key)
                value = float(getattr(config, key))
                if ref is not None and abs(value - ref) > _DOMAIN_RTOL * abs(ref):
                    off.append(f"{label} {value:g} (checked: {ref:g})")
            if not off:
                return
            pair = ("config",) + tuple(float(getattr(config, key)) for key, _ in _SOLVER_COMPARED)
            seen = self.__dict__.setdefault("_unchecked_grids", set())
            if pair in seen:
                return
            seen.add(pair)
            warnings.warn(f"the trained corrector {_corrector_label(self)} runs with {'; '.join(off)}: not the "
                          "configuration of the scene it was checked against, so the step it corrects and the flow "
                          "it sees are not those compared with its training; run(scene, solver=...) or "
                          "corrector.bind(scene, solver.config) checks these.", OutOfDomainWarning, stacklevel=3)
            return
        grid = _grid_key(state)
        seen = self.__dict__.setdefault("_unchecked_grids", set())
        if grid in seen:
            return
        trained = training_domain(meta)
        if not trained:
            return
        seen.add(grid)
        re = (f"; it takes the Reynolds number as input and uses Re = {self.reynolds:g}, the one it was last bound "
              "to or saved with, whatever this flow's" if self.config.get("use_reynolds") and self.reynolds is not None
              else "")
        nx, ny = grid[1][0], grid[0][1]
        warnings.warn(f"the trained corrector {_corrector_label(self)} runs on a state ({nx}x{ny} cells, dx "
                      f"{grid[2]:g}) whose scene was never checked against what it was trained on ({trained.get('scene')}, "
                      f"n={trained.get('n')}){re}: call corrector.bind(scene) first, or run(scene, ...) with the "
                      "Scene rather than a (state, config) pair, so its resolution, Reynolds number, velocity and "
                      "time step are compared.", OutOfDomainWarning, stacklevel=4)

    def _check_in_loop(self, state) -> None:
        """The in-loop call's :meth:`check_solver`, unless ``Solver.step`` has just made it, with its
        config, for this very state (:func:`call_checked`): the check runs once per corrected step.
        Made again it would find what the first call found and warn about nothing new (the
        once-per-grid and once-per-pair memos, the checked scene's state returning at once)."""
        if self.__dict__.get("_solver_checked") is state:
            return
        self.check_solver(state)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path, metadata: dict | None = None) -> None:
        """Write the corrector to ``path`` in the safe lawful model-file format (atomic).

        ``metadata``: the file's record (a JSON-able dict); default the corrector's own
        (``corrector.metadata``, which :func:`load_corrector` reads), so a trained corrector
        loaded and saved again (in another dtype, say) keeps its training record and with it the
        training-domain checks. A record given without ``trained_on`` for a corrector that had
        one warns: the file would run anywhere without a warning."""
        from lawful.kernels.modelfile import save_model_file

        own = getattr(self, "metadata", None) or {}
        if metadata is None:
            metadata = own
        elif isinstance(own, dict) and own.get("trained_on") is not None and "trained_on" not in metadata:
            warnings.warn(f"saving the corrector {_corrector_label(self)} without the training record it was loaded "
                          "with (metadata['trained_on']): the file will not warn when it runs outside what it was "
                          "trained on; pass metadata={**corrector.metadata, ...} to keep it.", stacklevel=2)
        config = dict(self.config, cls=type(self).__name__, reynolds=self.reynolds,
                      dtype=dtype_name(self.dtype), **self._extra_config())
        tensors = {k: t.detach().cpu().contiguous() for k, t in self.state_dict().items()}
        save_model_file(path, kind=MODEL_KIND, config=config, tensors=tensors, metadata=dict(metadata))

    def _extra_config(self) -> dict:
        return {}


def call_checked(corrector, state):
    """``corrector(state)`` for ``Solver.step`` right after it called
    ``corrector.check_solver(state, config)``: a lawful corrector's in-loop call then skips its
    own check of the same state (it ran twice per corrected step before); any other callable is
    called as it is."""
    if not isinstance(corrector, _CorrectorBase):
        return corrector(state)
    marks = corrector.__dict__
    marks["_solver_checked"] = state
    try:
        return corrector(state)
    finally:
        marks.pop("_solver_checked", None)


# --------------------------------------------------------------------------------------------
# the divergence-free corrector
# --------------------------------------------------------------------------------------------

class DivergenceFreeCorrector(_CorrectorBase):
    """CNN -> corner stream function psi -> correction = discrete curl (+ uniform mean flow).

    Divergence-free to rounding for any weights; no flow through walls, obstacles or inflow faces
    (psi constant per solid body). Call it as the solver's corrector: ``corrector(state)`` adds the
    correction to ``state.u`` ``(nx+1, ny)`` and ``state.v`` ``(nx, ny+1)`` in place with the
    solver's Taichi curl kernel (zero-copy; on float32 states each face's sum is formed in float64
    and rounded once) and returns ``None``. For training use the
    differentiable :meth:`correction` / :meth:`stream_function`.

    Parameters: ``hidden`` channels, ``layers`` (conv layers, >= 2), ``kernel_size`` (odd),
    ``n_scalars`` (passive scalars used as inputs), ``use_reynolds`` (+ a default ``reynolds`` and
    its ``reynolds_scale``), ``velocity_scale`` (the domain's velocity unit; inputs are divided by it and psi is
    ``velocity_scale * dx * output``), ``mean_flow`` (learned uniform flow on periodic axes),
    ``init_gain`` (scale of the last layer at initialisation), ``dtype``/``device`` of the weights
    (the state may have another dtype: inputs are cast, psi is cast back).
    """

    _out_channels = 1

    def __init__(self, *args, mean_flow: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.mean_flow = bool(mean_flow)
        if self.mean_flow:
            self.mean_head = torch.nn.Linear(self.config["hidden"], 2, dtype=self.dtype, device=self.device)
            with torch.no_grad():
                self.mean_head.weight.mul_(self.config["init_gain"])
                self.mean_head.bias.zero_()

    def _extra_config(self):
        return {"mean_flow": self.mean_flow}

    def stream_function(self, u, v, geom: CornerGeometry, dx: float, scalars=None, reynolds=None):
        """``(psi, mean)``: psi ``(nx+1, ny+1)`` (length^2/time, the weights' dtype; constant on each
        solid body, periodic duplicates equal) and the uniform flow ``mean`` ``(2,)`` (zero on axes
        where it is not allowed). Differentiable in ``u``, ``v`` and the weights."""
        return self._stream_function_of(self.features(u, v, geom, scalars, reynolds), geom, dx)

    def _stream_function_of(self, x, geom: CornerGeometry, dx: float, haloed: bool = False):
        """:meth:`stream_function` from the network's input ``x`` (``haloed``: see
        :meth:`_CornerNet.forward`)."""
        pool = self._pool_weights(geom, x.dtype) if self.mean_flow else None
        pooled, out = self.net(x, geom.periodic, pool, haloed)
        raw = _restore(out[0], geom.periodic)[0] * (self.config["velocity_scale"] * float(dx))
        psi = pin_stream_function(raw, geom)
        if self.mean_flow:
            mean = self.mean_head(pooled[0]) * self.config["velocity_scale"] * geom.mean_axes.to(raw.dtype)
        else:
            mean = torch.zeros(2, dtype=raw.dtype, device=raw.device)
        return psi, mean

    def _pool_weights(self, geom: CornerGeometry, dtype) -> torch.Tensor:
        """The mean-flow head's pooling map: the fluid fraction of each canonical corner over
        their sum (the mean of the last hidden features over the fluid), a constant of the
        geometry kept for the last one asked (a step's call found it again every time)."""
        memo = self.__dict__.get("_pool_memo")
        if memo is None or memo[0] is not geom or memo[1] != dtype:
            w = _canonical(geom.fluid_corner.to(dtype).unsqueeze(0), geom.periodic)[0]
            memo = self.__dict__["_pool_memo"] = (geom, dtype, w / w.sum().clamp_min(1.0))
        return memo[2]

    def correction(self, u, v, geom: CornerGeometry, dx: float, scalars=None, reynolds=None):
        """Differentiable correction ``(du, dv)`` (shapes of ``u``, ``v``; weights' dtype):
        :func:`~lawful.kernels.mac_operators.curl_torch` of :meth:`stream_function` plus the mean flow."""
        psi, mean = self.stream_function(u, v, geom, dx, scalars, reynolds)
        du, dv = curl_torch(psi, dx, geom.periodic)
        return du + mean[0], dv + mean[1]

    def forward(self, state):
        """In-loop call: add the correction to ``state.u``/``state.v`` in place (Taichi curl kernel,
        zero-copy, no autograd). Returns ``None``."""
        u, v, scalars, boundary, solid, dx, re = self._state_parts(state)
        self._check_in_loop(state)
        geom = self._geometry(boundary, solid)
        with torch.no_grad():
            x = self._loop_input(u, v, geom, re)
            if x is None:
                psi, mean = self.stream_function(u, v, geom, dx, scalars, re)
            else:
                psi, mean = self._stream_function_of(x, geom, dx, haloed=True)
            apply_stream_function(u, v, psi, geom, dx, mean if self.mean_flow else None, pinned=True)
        return None

    def _loop_input(self, u, v, geom: CornerGeometry, reynolds):
        """The network's input for the in-loop call, haloed and channels-last, in a buffer kept
        for the last (geometry, dtype, device, Reynolds number and its scale) asked: made once with :meth:`features`
        (so its constant channels are that path's); every call then writes the velocity channels
        in one Taichi launch (:func:`~lawful.kernels.corner_features.corner_velocity_channels`;
        the torch path's numbers to float rounding). None (use :meth:`stream_function`) with
        passive-scalar inputs or velocities not in the weights' dtype."""
        from lawful.kernels.corner_features import corner_velocity_channels

        cfg = self.config
        dt = self.dtype
        if cfg["n_scalars"] or u.dtype != dt or v.dtype != dt or u.device != self.device:
            return None
        re = reynolds if reynolds is not None else self.reynolds
        # everything the constant channels and the buffer's shape and place depend on
        key = (dt, u.device, None if re is None else float(re), cfg["reynolds_scale"], cfg["use_reynolds"],
               self.net.halo)
        memo = self.__dict__.get("_input_memo")
        per = geom.periodic
        halo = tuple(self.net.halo if p else 0 for p in per)
        if memo is None or memo[0] is not geom or memo[1] != key:
            x = _wrap_halo(self.features(u, v, geom, None, reynolds), self.net.halo, per)
            buf = x.permute(0, 2, 3, 1).contiguous()                 # (1, Hh, Wh, C)
            memo = self.__dict__["_input_memo"] = (geom, key, buf)
        # the kernel's velocity channels on the first call too: a call's numbers do not depend on
        # whether the buffer was just made (a copied or restarted corrector repeats a run bit for bit)
        corner_velocity_channels(u, v, memo[2][0], halo, per, 1.0 / cfg["velocity_scale"])
        return memo[2].permute(0, 3, 1, 2)                          # (1, C, Hh, Wh), channels-last


# --------------------------------------------------------------------------------------------
# the unconstrained baseline (+ projected variant)
# --------------------------------------------------------------------------------------------

class UnconstrainedCorrector(_CorrectorBase):
    """Baseline: the CNN outputs the correction ``(du, dv)`` directly.

    Two corner channels averaged onto the faces (``du[i,j]`` = mean of channel 0 at corners
    ``(i,j)``, ``(i,j+1)``; ``dv`` likewise along x), times ``velocity_scale``, zero on fixed faces
    (walls, obstacles, inflow). Nothing makes it divergence-free: train it with a soft penalty or an
    augmented Lagrangian on its divergence, or set ``project=True`` to follow every correction with
    a pressure projection (FluidNet-style; the solver's
    :class:`~lawful.kernels.mac_pressure.PressureSolver`, a second Poisson solve per step).
    Same parameters as :class:`DivergenceFreeCorrector` (minus ``mean_flow``) plus ``project`` and
    ``projection_rtol`` (default: the solver's default tolerance for the state's dtype).
    """

    _out_channels = 2

    def __init__(self, *args, project: bool = False, projection_rtol: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = bool(project)
        self.projection_rtol = projection_rtol
        self._solvers: list = []        # [(boundary, dtype, mask copy, PressureSolver)], at most 2
        self.last_projection = None

    def _extra_config(self):
        return {"project": self.project, "projection_rtol": self.projection_rtol}

    def correction(self, u, v, geom: CornerGeometry, dx: float, scalars=None, reynolds=None):
        """Differentiable raw correction ``(du, dv)`` (before any projection; weights' dtype)."""
        x = self.features(u, v, geom, scalars, reynolds)
        _, out = self.net(x, geom.periodic)
        c = _restore(out[0], geom.periodic) * self.config["velocity_scale"]
        du = 0.5 * (c[0, :, :-1] + c[0, :, 1:]) * geom.ubc[0].to(c.dtype)
        dv = 0.5 * (c[1, :-1, :] + c[1, 1:, :]) * geom.vbc[0].to(c.dtype)
        return du, dv

    def pressure_solver(self, boundary: Boundary, solid: torch.Tensor, dtype: torch.dtype):
        """The (cached) projection used when ``project=True``."""
        from lawful.kernels.mac_pressure import PressureSolver

        solid = solid.detach().bool()
        for b, dt, mask, solver in self._solvers:
            if dt == dtype and b == boundary and mask.shape == solid.shape and mask.device == solid.device \
                    and torch.equal(mask, solid):
                return solver
        solver = PressureSolver(boundary, solid, dtype=dtype, rtol=self.projection_rtol, device=solid.device)
        self._solvers.insert(0, (boundary, dtype, solid.clone(), solver))   # keyed on the mask's content
        del self._solvers[2:]
        return solver

    def forward(self, state):
        """In-loop call: add ``(du, dv)`` to ``state.u``/``state.v`` in place, then project when
        ``project=True`` (stats in ``self.last_projection``). Returns ``None``."""
        u, v, scalars, boundary, solid, dx, re = self._state_parts(state)
        self._check_in_loop(state)
        geom = self._geometry(boundary, solid)
        with torch.no_grad():
            du, dv = self.correction(u, v, geom, dx, scalars, re)
            u.add_(du.to(u.dtype))
            v.add_(dv.to(v.dtype))
            if self.project:
                self.last_projection = self.pressure_solver(boundary, solid, u.dtype).project(u, v)
        return None


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

_CLASSES = {"DivergenceFreeCorrector": DivergenceFreeCorrector,
            "UnconstrainedCorrector": UnconstrainedCorrector}


#: ``ReferenceCase.label`` of the corrector training data (:mod:`lawful.fluids.fine_reference`)
_CASE_LABEL = _re.compile(r"^(?P<scene>[a-z_]+?)_(?:re(?P<re>[0-9.eE+-]+)|s\d+)_n(?P<n>\d+)$")


#: relative tolerance of the training-domain comparisons of velocity, time step and diameter
_DOMAIN_RTOL = 1e-6


#: the solver settings :meth:`_CorrectorBase.check_solver` compares on the checked scene's own state
#: (buoyancy and drag drive the flow the network reads: a plume at 8x the buoyancy ran 6x faster)
_SOLVER_COMPARED = (("dt", "time step"), ("viscosity", "viscosity"), ("drag", "linear drag"),
                    ("buoyancy", "buoyancy"))


#: scene parameters besides the Reynolds number that set the flow a corrector learned (compared
#: when both the record and the scene have them; Kolmogorov: its forcing's wavenumber and amplitude;
#: the velocity scale of the scenes without a reference velocity: the cavity's lid, Taylor-Green's
#: amplitude, the plume's release rate -- a cavity at twice the lid speed, same Re and dt, a plume
#: at 8x the release, ran a trained corrector 2-6x outside the velocities it saw without a warning)
FLOW_PARAMETERS = ("wavenumber", "forcing", "lid_velocity", "amplitude", "source_rate")


def scene_domain(scene, config=None) -> dict:
    """What a trained corrector is compared on, from a :class:`~lawful.fluids.scenes.Scene`:
    ``scene`` (name), ``n`` (``params["n"]``, else cells along x), ``re`` (``params["re"]`` or
    None), Kármán's ``cells_per_diameter``, ``diameter`` (channel heights) and ``aspect`` (channel
    length / height: recorded, not compared), ``velocity`` (the
    scene's reference velocity ``U``, ``scene.reference[0]``, or None: the network reads velocities
    in absolute units), ``dt`` (the time step: it corrects once per step), ``viscosity`` and
    ``drag`` and ``buoyancy`` (of the :class:`~lawful.fluids.solver.SolverConfig`) and the scene's
    :data:`FLOW_PARAMETERS`. ``config``: the configuration the run actually uses (a solver's,
    when it is not the scene's own); with a Reynolds number, ``re`` is then the flow's, the scene's
    scaled by the ratio of the viscosities. The record ``lawful train-corrector`` writes as
    ``trained_on`` (``re`` there: the list trained on)."""
    params = getattr(scene, "params", None) or {}
    name = getattr(scene, "name", None)
    n = params.get("n")
    if n is None and getattr(scene, "state", None) is not None:
        n = int(scene.state.v.shape[0])   # cells along x (square scenes without params["n"])
    own = getattr(scene, "config", None)
    config = config if config is not None else own
    re = None if params.get("re") is None else float(params["re"])
    if re is not None and config is not None and own is not None and config.viscosity > 0 \
            and config.viscosity != own.viscosity:
        re *= own.viscosity / config.viscosity          # the same scene at another viscosity
    out = {"scene": name, "n": None if n is None else int(n), "re": re,
           "cells_per_diameter": None, "diameter": None}
    if name == "karman" and "diameter" in params and n is not None:
        out["diameter"] = float(params["diameter"])
        out["cells_per_diameter"] = float(n) * out["diameter"]
        if params.get("aspect") is not None:
            out["aspect"] = int(params["aspect"])   # not compared (a convolution); `lawful fluid` reuses it
    ref = getattr(scene, "reference", None)
    out["velocity"] = float(ref[0]) if ref else None
    out["dt"] = float(config.dt) if config is not None else None
    out["viscosity"] = float(config.viscosity) if config is not None else None
    out["drag"] = float(config.drag) if config is not None else None
    out["buoyancy"] = float(config.buoyancy) if config is not None else None   # the plume's driving force
    for key in FLOW_PARAMETERS:
        if params.get(key) is not None:
            out[key] = float(params[key])
    return out


def training_domain(metadata) -> dict | None:
    """What a corrector was trained on, from its file's ``metadata``: ``{"scene", "n",
    "cells_per_diameter", "re"}`` (``n``: the scene's n; ``cells_per_diameter``: Kármán cells across
    the cylinder, or None; ``re``: the Reynolds numbers trained on, or None). ``trained_on``
    (written by ``lawful train-corrector`` and in the committed benchmark correctors) when present;
    else derived from ``training.train_cases`` (labels such as ``karman_re100_n16``; no cylinder
    size in them, so ``cells_per_diameter`` None: ``n`` is compared instead). None when the
    metadata records neither (a random or hand-made corrector)."""
    meta = metadata if isinstance(metadata, dict) else {}
    if isinstance(meta.get("trained_on"), dict):
        return dict(meta["trained_on"])
    cases = (meta.get("training") or {}).get("train_cases") if isinstance(meta.get("training"), dict) else None
    parsed = [_CASE_LABEL.match(str(c)) for c in cases or ()]
    if not parsed or not all(parsed):
        return None
    scenes_ = {m["scene"] for m in parsed}
    ns = {int(m["n"]) for m in parsed}
    res = sorted(float(m["re"]) for m in parsed if m["re"] is not None)
    return {"scene": meta.get("scene") or (scenes_.pop() if len(scenes_) == 1 else None),
            "n": ns.pop() if len(ns) == 1 else None, "cells_per_diameter": None, "re": res or None}


def _corrector_label(corrector) -> str:
    source = getattr(corrector, "source", None)
    return repr(str(source)) if source else "(in memory)"


def _state_ref(state):
    """A weak reference to the checked scene's state (an ``id`` could be reused by a later state
    once this one is freed), or None."""
    import weakref

    return None if state is None else weakref.ref(state)


def _grid_key(state) -> tuple:
    """What identifies the grid a corrector runs on: the face arrays' shapes and the cell size."""
    return (tuple(state.u.shape), tuple(state.v.shape), float(getattr(state, "dx", 1.0)))


def check_training_domain(corrector, scene, stacklevel: int = 2, config=None) -> list[str]:
    """Compare a trained corrector's :func:`training_domain` with ``scene`` (a
    :class:`~lawful.fluids.scenes.Scene`; ``config``: the solver configuration the run uses, if
    not the scene's): another scene name, another resolution (Kármán: cells
    across the cylinder, the network working in grid cells; else the scene's ``n``), a Reynolds
    number outside the trained range, and, where the record has them (:func:`scene_domain`),
    another cylinder size, reference velocity or time step (a corrector trained at U = 1 gave cl
    -0.710 for -0.184 at U = 2 in the same dimensionless flow, and twice its effect at half the
    step), another lid speed, Taylor-Green amplitude, buoyancy or release rate (the velocity scale
    of the scenes without a reference velocity), and for a scene without a Reynolds number another
    viscosity, drag or forcing, is named
    in one :class:`~lawful.kernels.errors.OutOfDomainWarning`. Returns the differences ([] inside
    the domain, or for a corrector with no training record). A second check of the same domain
    (``bind`` then ``run`` on one scene) does not warn again; a scene changed since (its time step,
    say) is checked afresh."""
    trained = training_domain(getattr(corrector, "metadata", None))
    if not trained:
        return []
    params = getattr(scene, "params", None) or {}
    name = getattr(scene, "name", None)
    here_ = scene_domain(scene, config)
    key = tuple(sorted(here_.items(), key=lambda kv: kv[0]))
    memo = getattr(corrector, "__dict__", {}).get("_domain_checked")
    state = getattr(scene, "state", None)
    if memo is not None and memo[0] == key:      # bind() and run() on one scene: one warning
        corrector.__dict__["_domain_checked"] = (key, memo[1], _state_ref(state), here_)
        return list(memo[1])
    differ = []
    if trained.get("scene") and name and trained["scene"] != name:
        differ.append(f"scene {trained['scene']} (this run: {name})")
    n_here = here_["n"]
    cells = trained.get("cells_per_diameter")
    if cells is not None and name == "karman" and "diameter" in params:
        here = float(n_here) * float(params["diameter"])
        if abs(here - cells) > 1e-9:
            differ.append(f"{cells:g} cells across the cylinder (this run: {here:g}; the network works in grid "
                          "cells)")
    elif trained.get("n") is not None and n_here is not None and int(trained["n"]) != int(n_here):
        differ.append(f"n={trained['n']} (this run: n={n_here}; the network works in grid cells)")
    res, re_here = trained.get("re"), here_["re"]
    if res and re_here is not None and not (min(res) <= float(re_here) <= max(res)):
        differ.append(f"Re {min(res):g}-{max(res):g} (this run: {float(re_here):g})")
    compared = [("diameter", "a cylinder of {} channel heights (this run: {}; another blockage)"),
                ("velocity", "reference velocity U = {} (this run: {}; the network reads velocities in "
                             "absolute units)"),
                ("dt", "time step dt = {} (this run: {}; it corrects once per step)"),
                ("drag", "linear drag {} (this run: {})"),
                ("buoyancy", "buoyancy {} (this run: {}; it sets the plume's velocities)")]
    if not res:     # with a Reynolds number the viscosity varies over the training cases: Re is compared
        compared.append(("viscosity", "viscosity {} (this run: {})"))
    compared += [(k, k + " {} (this run: {})") for k in FLOW_PARAMETERS]
    for key_, what in compared:
        was, now = trained.get(key_), here_.get(key_)
        if was is not None and now is not None and abs(float(now) - float(was)) > _DOMAIN_RTOL * abs(float(was)):
            differ.append(what.format(f"{float(was):g}", f"{float(now):g}"))
    if hasattr(corrector, "__dict__"):
        corrector.__dict__["_domain_checked"] = (key, tuple(differ), _state_ref(state), here_)
    if differ:
        warnings.warn(f"the corrector {_corrector_label(corrector)} was trained on {', '.join(differ)}: its "
                      "corrections here are an extrapolation; train it on this case (lawful train-corrector) to "
                      "rely on them.", OutOfDomainWarning, stacklevel=stacklevel)
    return differ


def load_corrector(path, dtype=None, device=None):
    """Read a corrector written by ``corrector.save(path)`` (safe format: no code runs on load).

    Returns a :class:`DivergenceFreeCorrector` or :class:`UnconstrainedCorrector` in ``dtype``
    (default: the saved one) on ``device`` (default CPU). A file of another kind, or with an
    unknown corrector class, raises :class:`~lawful.kernels.errors.ModelFileError`.
    """
    from lawful.kernels.modelfile import load_model_file

    mf = load_model_file(path, expected_kind=MODEL_KIND)
    cfg = dict(mf.config)
    cls_name = cfg.pop("cls", None)
    if cls_name not in _CLASSES:
        raise ModelFileError(f"{path}: corrector class {cls_name!r} is unknown to this lawful version "
                             f"(known: {sorted(_CLASSES)}); re-save it with a matching version.")
    saved_dtype = {"float32": torch.float32, "float64": torch.float64}.get(cfg.pop("dtype", "float32"))
    dt = dtype if dtype is not None else saved_dtype
    kwargs = {k: cfg[k] for k in ("hidden", "layers", "kernel_size", "n_scalars", "use_reynolds",
                                  "reynolds_scale", "velocity_scale", "init_gain", "reynolds") if k in cfg}
    if cls_name == "DivergenceFreeCorrector":
        kwargs["mean_flow"] = cfg.get("mean_flow", True)
    else:
        kwargs["project"] = cfg.get("project", False)
        kwargs["projection_rtol"] = cfg.get("projection_rtol")
    model = _CLASSES[cls_name](dtype=dt, device=device, **kwargs)
    try:
        model.load_state_dict({k: t.to(dt) for k, t in mf.tensors.items()})
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: the stored tensors do not fit a {cls_name} with config {kwargs}: "
                             f"{exc}. The file is damaged or from an incompatible version.") from exc
    model.metadata = dict(mf.metadata)
    model.source = str(path)   # named in check_training_domain's warning and bind's errors
    return model
