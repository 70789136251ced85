"""The baseline every Hamiltonian/Lagrangian table compares against: an MLP that predicts the time
derivatives of the state directly, with no conservation law built in.

Also home of the two helpers the dynamics models share: :func:`build_mlp` (a plain tanh/softplus
MLP with a fixed dtype/device) and :func:`check_pair` (validation of a ``(q, p)`` or ``(q, q̇)``
pair of ``(batch, dim)`` tensors, raising lawful errors that name the bad value and the fix).
"""

from __future__ import annotations

import torch
from torch import nn

from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.precision import md_dtype, resolve_device

__all__ = ["DerivativeMLP", "build_mlp", "check_pair"]

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


def check_pair(a, b, dim: int, names=("q", "p"), dtype=None, device=None):
    """Validate and return ``(a, b)`` as tensors of shape ``(batch, dim)``.

    Accepts tensors or array-likes; a 1-D input of length ``dim`` is read as a batch of one.
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
        if x.dim() == 1 and x.shape[0] == dim:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != dim:
            raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected (batch, {dim}) for a "
                             f"model of dim={dim}.")
        if not bool(torch.isfinite(x.detach()).all()):
            raise InputError(f"{name} holds NaN or inf values; check the initial state / data.")
        out.append(x)
    if out[0].shape != out[1].shape:
        raise ShapeError(f"{names[0]} has shape {tuple(out[0].shape)} but {names[1]} has shape "
                         f"{tuple(out[1].shape)}; they must match (batch, dim).")
    if out[0].dtype != out[1].dtype:
        raise InputError(f"{names[0]} is {out[0].dtype} but {names[1]} is {out[1].dtype}; "
                         "use one dtype for the whole state.")
    return out[0], out[1]


class ScalarFunctionModel(nn.Module):
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
        dim = self.dim if self.dim is not None else torch.as_tensor(x).shape[-1]
        return check_pair(x, y, dim, self.state_names, dtype=self.dtype)

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


class DerivativeMLP(nn.Module):
    """Baseline: an MLP mapping the state ``(x, y)`` (each ``(batch, dim)``) to its time derivative
    ``(ẋ, ẏ)`` directly. No energy is conserved by construction — this is the control model.

    The state can be phase space ``(q, p)`` or ``(q, q̇)``: the network does not care.
    ``dim``: degrees of freedom; ``hidden``/``layers``/``activation``: MLP size; float64 default.
    Implements the vector-field protocol of :func:`lawful.forcefields.integrate`
    (``time_derivative``; ``separable = False``, so only "rk4" and "implicit_midpoint" apply).
    """

    separable = False

    def __init__(self, dim: int = 1, hidden: int = 200, layers: int = 2, activation: str = "tanh",
                 dtype=None, device=None):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}.")
        self.dim = dim
        self.net = build_mlp(2 * dim, 2 * dim, hidden, layers, activation, dtype, device)

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return next(self.parameters()).dtype

    def time_derivative(self, q, p, create_graph: bool = False):
        """``(q̇, ṗ)`` predicted by the MLP, each ``(batch, dim)`` (``create_graph`` is accepted for
        protocol compatibility; the output is differentiable whenever autograd is on)."""
        q, p = check_pair(q, p, self.dim)
        out = self.net(torch.cat([q, p], dim=-1))
        return out[:, : self.dim], out[:, self.dim:]

    def forward(self, q, p):
        """Same as :meth:`time_derivative`."""
        return self.time_derivative(q, p)
