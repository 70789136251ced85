"""The baseline every Hamiltonian/Lagrangian table compares against: an MLP that predicts the time
derivatives of the state directly, with no conservation law built in.

Also home of what the dynamics models share: :func:`build_mlp` (a plain tanh/softplus MLP with a
fixed dtype/device), :func:`check_pair` (validation of a ``(q, p)`` or ``(q, q̇)`` pair of
``(batch, dim)`` tensors, raising lawful errors that name the bad value and the fix) and
:class:`DynamicsModel` (constructor config and ``save`` to the safe model file).
"""

from __future__ import annotations

import torch
from torch import nn

from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.precision import md_dtype, resolve_device

__all__ = ["DerivativeMLP", "DynamicsModel", "build_mlp", "check_pair"]

_ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "silu": nn.SiLU, "gelu": nn.GELU}


def build_mlp(n_in: int, n_out: int, hidden: int = 200, layers: int = 2, activation: str = "tanh",
              dtype=None, device=None) -> nn.Sequential:
    """An MLP ``n_in -> hidden (x layers) -> n_out`` with smooth activations (twice differentiable,
    as Hamiltonian/Lagrangian models need). Orthogonal weights, zero biases; dtype float64 unless
    given. Raises :class:`InputError` for non-positive sizes or an unknown activation."""
    for name, value in (("n_in", n_in), ("n_out", n_out), ("hidden", hidden), ("layers", layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if activation not in _ACTIVATIONS:
        raise InputError(f"unknown activation {activation!r}: use one of {sorted(_ACTIVATIONS)} "
                         "(smooth activations only: dynamics models take second derivatives).")
    dtype = md_dtype(dtype)
    device = resolve_device(device) if device is not None else torch.device("cpu")
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    net = nn.Sequential(*mods).to(dtype=dtype, device=device)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight)
                nn.init.zeros_(m.bias)
    return net


def per_sample_scalar(value, n: int, what: str) -> torch.Tensor:
    """Validate what a wrapped analytic function (H or L) returned: a tensor of shape ``(n,)``
    (a trailing singleton axis is squeezed). ``what`` names the function in the error."""
    if not isinstance(value, torch.Tensor):
        raise InputError(f"the wrapped {what} returned {type(value).__name__}; it must "
                         "return a torch tensor of shape (batch,).")
    if value.dim() == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.shape != (n,):
        raise ShapeError(f"the wrapped {what} returned shape {tuple(value.shape)}; it "
                         f"must return one value per sample, shape ({n},).")
    return value


def check_pair(a, b, dim: int | None, names=("q", "p"), dtype=None, device=None):
    """Validate and return ``(a, b)`` as tensors of shape ``(batch, dim)``.

    Accepts tensors or array-likes. The one rule for a 1-D input, used by every model and by
    :func:`lawful.forcefields.integrate`: a ``(dim,)`` tensor is one state (a batch of one); a 1-D
    tensor of another length is refused (it is not ``B`` states of a ``dim``-dof model, nor a
    state of another width). ``dim=None`` (a wrapped function or callable that does not declare its
    degrees of freedom) accepts any ``(batch, width)`` and a 1-D input of length 1 only: a longer
    one could be one state or a batch, so it is refused with the two ways to say which.
    Converts to ``dtype``/``device`` when given (else keeps the tensor's own, float64 for arrays).
    Raises :class:`ShapeError` for mismatched or wrong shapes and :class:`InputError` for non-float
    or non-finite values.
    """
    out = []
    for name, x in zip(names, (a, b)):
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(x, dtype=md_dtype(dtype))
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InputError(f"{name} must be a tensor or array of numbers, got "
                                 f"{type(x).__name__}.") from exc
        if not x.is_floating_point():
            raise InputError(f"{name} has dtype {x.dtype}; pass a float32/float64 tensor "
                             "(float64 recommended for dynamics).")
        if dtype is not None or device is not None:
            x = x.to(dtype=dtype if dtype is not None else x.dtype,
                     device=device if device is not None else x.device)
        x = _as_batch(x, dim, name)
        if not bool(torch.isfinite(x.detach()).all()):
            raise InputError(f"{name} holds NaN or inf values; check the initial state / data.")
        out.append(x)
    if out[0].shape != out[1].shape:
        raise ShapeError(f"{names[0]} has shape {tuple(out[0].shape)} but {names[1]} has shape "
                         f"{tuple(out[1].shape)}; they must match (the same shape (batch, dim)).")
    if out[0].dtype != out[1].dtype:
        raise InputError(f"{names[0]} is {out[0].dtype} but {names[1]} is {out[1].dtype}; "
                         "use one dtype for the whole state.")
    return out[0], out[1]


def _as_batch(x: torch.Tensor, dim: int | None, name: str) -> torch.Tensor:
    """``x`` as ``(batch, dim)`` under :func:`check_pair`'s 1-D rule, or a ShapeError."""
    if x.dim() == 1:
        if dim is None and x.shape[0] != 1:
            raise ShapeError(
                f"{name} has shape {tuple(x.shape)} and the model does not declare its degrees of "
                f"freedom, so it could be one state of {x.shape[0]} coordinates or {x.shape[0]} "
                f"states of one: pass shape (1, {x.shape[0]}) or ({x.shape[0]}, 1), or give the "
                "model its dim (e.g. from_function(H, dim=...)).")
        if dim is not None and x.shape[0] != dim:
            raise ShapeError(
                f"{name} has shape {tuple(x.shape)}; expected (batch, {dim}) for a model of "
                f"dim={dim} (a 1-D input is one state of length {dim}): for {x.shape[0]} states "
                f"pass shape ({x.shape[0]}, {dim}).")
        x = x.unsqueeze(0)
    if x.dim() != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(batch, {dim}) for a model of dim={dim}" if dim is not None else "(batch, dim)"
        raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected {want}.")
    return x


class DynamicsModel(nn.Module):
    """What every dynamics model (HNN, LNN, the baseline MLP) shares: its constructor arguments
    (:attr:`config`) and :meth:`save` to the safe lawful model file, read back by
    :func:`lawful.forcefields.load_dynamics_model`. A subclass sets ``self._arguments`` (a dict of
    its constructor arguments other than dtype/device) in ``__init__``."""

    _function = None
    _arguments: dict | None = None

    @property
    def config(self) -> dict:
        """The constructor arguments (JSON-able; dtype and device apart) that rebuild this model.
        A wrapped analytic function (``from_function``) has none: its code cannot be stored."""
        if self._function is not None or self._arguments is None:
            raise InputError(f"this {type(self).__name__} wraps a Python function "
                             "(from_function), which a model file cannot hold (loading never runs "
                             "code): save a trained network, or keep the function in your code.")
        return dict(self._arguments)

    def save(self, path, training_summary: dict | None = None):
        """Write the model to ``path`` (a ``.lawful`` file: safetensors weights + JSON config,
        written atomically); read it back with :func:`lawful.forcefields.load_dynamics_model`,
        which rebuilds it with the same arguments and bitwise the same weights. Returns the path."""
        from lawful.forcefields.model_io import save_model

        return save_model(self, path, training_summary=training_summary)


class ScalarFunctionModel(DynamicsModel):
    """What the HNN and LNN share: a learned (or wrapped analytic) scalar function of a state pair
    ``(x, y)``, each ``(batch, dim)``, named by :attr:`state_names` in error messages."""

    state_names = ("q", "p")

    @property
    def dtype(self):
        """The parameters' dtype (None for a wrapped analytic function)."""
        for prm in self.parameters():
            return prm.dtype
        return None

    def _check(self, x, y):
        return check_pair(x, y, self.dim, self.state_names, dtype=self.dtype)

    @classmethod
    def _wrapping(cls, function, dim, signature: str):
        """A bare instance (no network) around the analytic ``function``, after checking the
        arguments of ``from_function``; ``signature`` (e.g. "H(q, p)") names it in errors."""
        if not callable(function):
            raise InputError(f"from_function needs a callable {signature} -> (batch,), got "
                             f"{type(function).__name__}.")
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise InputError(f"dim must be a positive integer or None, got {dim!r}.")
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj.dim = dim
        obj._function = function
        return obj


class DerivativeMLP(DynamicsModel):
    """Baseline: an MLP mapping the state ``(x, y)`` (each ``(batch, dim)``) to its time derivative
    ``(ẋ, ẏ)`` directly. No energy is conserved by construction — this is the control model.

    The state can be phase space ``(q, p)`` or ``(q, q̇)``: the network does not care.
    ``dim``: degrees of freedom; ``hidden``/``layers``/``activation``: MLP size; float64 default.
    Implements the vector-field protocol of :func:`lawful.forcefields.integrate`
    (``time_derivative``; ``separable = False``, so only "rk4" and "implicit_midpoint" apply).
    ``save(path)`` / :func:`lawful.forcefields.load_dynamics_model`: the safe model file.
    """

    separable = False

    def __init__(self, dim: int = 1, hidden: int = 200, layers: int = 2, activation: str = "tanh",
                 dtype=None, device=None):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}.")
        self.dim = dim
        self.net = build_mlp(2 * dim, 2 * dim, hidden, layers, activation, dtype, device)
        self._arguments = dict(dim=dim, hidden=hidden, layers=layers, activation=activation)

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return next(self.parameters()).dtype

    def time_derivative(self, q, p, create_graph: bool = False, check: bool = True):
        """``(q̇, ṗ)`` predicted by the MLP, each ``(batch, dim)`` in the model's dtype (the state
        is converted to it, as the HNN/LNN do). ``create_graph`` is accepted for protocol
        compatibility (the output is differentiable whenever autograd is on); ``check=False``
        skips input validation (hot loops that validated the state already)."""
        if check:
            q, p = check_pair(q, p, self.dim, dtype=self.dtype)
        out = self.net(torch.cat([q, p], dim=-1))
        return out[:, : self.dim], out[:, self.dim:]

    def forward(self, q, p):
        """Same as :meth:`time_derivative`."""
        return self.time_derivative(q, p)
