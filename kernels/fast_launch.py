"""Taichi kernel launches without Taichi's per-call Python argument handling.

A ``@ti.kernel`` call spends tens of microseconds in Python before the compiled kernel runs: it
recomputes the instance key from every argument's type, looks the kernel up, and then walks the
arguments again to fill the launch context (about 10 µs per torch tensor on this CPU, 60-100 µs
for a typical fluid kernel with a dozen arguments). At 128² that was about a sixth of a fluid
step. :class:`FastKernel` wraps such a kernel: the first call with a given argument signature
(template values; dtype, rank, device and grad flag of each torch tensor; element type, rank and
grad flag of each Taichi ndarray, as in Taichi's own instance key; Python type of each scalar)
goes through Taichi unchanged, which compiles, checks and launches, and records a plan: the
compiled kernel and, per argument, which launch-context setter takes it. Later calls with the same
signature fill a fresh launch context from the plan and launch it, with the compiled kernel data
the plan's first launch got from Taichi's kernel cache (Taichi's own call looks it up again on
every launch; its compile config is fixed per ``ti.init``). The kernel, its arguments and
its results are exactly those of the ordinary call; only the Python bookkeeping is skipped. Each
plan also carries its signature check and setters written out as one small function (``fill``,
generated from the plan, no loops); a kernel tries the fill of its last planned launch first,
which is what a solver calling the same kernel on the same arrays every step hits, and falls back
to the signature lookup when the arguments differ.

Anything the plan does not cover takes Taichi's own path, every time: keyword arguments, a
non-contiguous tensor (Taichi then raises its usual error), tensors that require grad or sit on
another device than the Taichi arch, ndarray arguments with vector/matrix elements, struct or
matrix arguments, return values other than one scalar, kernels that print, and Taichi's autodiff
tape or forward mode. After ``ti.reset()`` (a new Taichi runtime) the plans are dropped and made
again. ``LAWFUL_TI_FAST_LAUNCH=0`` switches the fast path off for the process
(every call then takes Taichi's path), which the tests use to compare both.

This reads Taichi internals (``Kernel.compiled_kernels``, ``ensure_compiled``, the launch
context setters) as they are in Taichi 1.7; :func:`fast_kernel` leaves a kernel unwrapped when
they are missing, so another Taichi version runs correctly, only slower.
"""

from __future__ import annotations

import os
from typing import Any, Callable

__all__ = ["FastKernel", "fast_kernel", "fast_kernels", "ENV_FAST_LAUNCH", "launch_observers"]

#: Environment variable: ``0`` disables the fast path for the whole process.
ENV_FAST_LAUNCH = "LAWFUL_TI_FAST_LAUNCH"

#: Callbacks ``f(kernel_name)`` told of every launch the fast path makes, just before it (launches
#: through Taichi's own path go through ``Kernel.__call__``, which :mod:`lawful.fluids.profiling`
#: patches, also before the launch): a timer of the launch that follows can charge it to that name.
launch_observers: list[Callable[[str], None]] = []

_TENSOR, _FLOAT, _INT, _UINT, _NDARRAY = 0, 1, 2, 3, 4


def _enabled() -> bool:
    return os.environ.get(ENV_FAST_LAUNCH, "1") != "0"


_torch_tensor = None       # torch.Tensor and taichi.lang.impl, imported at the first call
_impl = None
#: (runtime, its program's compile config, its device capabilities): what a plan's first launch
#: passes to ``compile_kernel``. The config is the program's own object; the capabilities, a copy
#: Taichi makes on every call, are fixed when the device starts. Fetched once per runtime.
_program_args = [None, None, None]


def _compile_args(runtime, prog):
    held = _program_args
    if held[0] is not runtime:
        held[1], held[2] = prog.config(), prog.get_device_caps()
        held[0] = runtime
    return held


class _Plan:
    __slots__ = ("t_kernel", "setters", "ret", "fill", "compiled")

    def __init__(self, t_kernel, setters, ret):
        self.t_kernel = t_kernel
        self.setters = setters      # [(argument position, kind, launch-context index)]
        self.ret = ret              # None, _FLOAT or _INT (one scalar return value)
        self.fill = None            # fill(args) -> launch context or None (see _make_fill)
        self.compiled = None        # the compiled kernel data, fetched at the plan's first launch


#: template values a specialised fill compares by type and ``==`` (anything else: no fill)
_PLAIN_TEMPLATES = (bool, int, float, str)


def _make_fill(plan: _Plan, sig: tuple, is_template: list, ndarray_type, tensor_type):
    """``fill(args)``: the plan's signature check and launch-context setters written out for this
    one signature (no loops, no per-argument dispatch), returning the filled context, or None when
    ``args`` do not have exactly this signature or a tensor is not contiguous -- the caller then
    takes the general path, which finds the plan (or Taichi's path) as before. A call that fills
    is one the general path would launch through the same plan with the same setters. None (no
    fill) for a template value that is not a plain bool/int/float/str."""
    names = {"make_ctx": plan.t_kernel.make_launch_context, "Tensor": tensor_type}
    n = len(sig)
    checks, sets = [], []
    kinds = {pos: (kind, index) for pos, kind, index in plan.setters}
    for pos, (template, key) in enumerate(zip(is_template, sig)):
        a = f"a{pos}"
        if template:
            if type(key) not in _PLAIN_TEMPLATES:
                return None
            names[f"t{pos}"], names[f"tt{pos}"] = key, type(key)
            checks.append(f"type({a}) is tt{pos} and {a} == t{pos}")
            continue
        kind, index = kinds[pos]
        if kind == _TENSOR:
            dtype, dim, is_cpu, is_cuda, grad = key
            if grad or is_cpu == is_cuda:       # (a plan is made for neither)
                return None
            names[f"d{pos}"] = dtype
            device = "is_cpu" if is_cpu else "is_cuda"      # (one True excludes the other)
            checks.append(f"isinstance({a}, Tensor) and {a}.dtype == d{pos} and {a}.dim() == {int(dim)} and "
                          f"{a}.{device} and not {a}.requires_grad and {a}.is_contiguous()")
            sets.append(f"ctx.set_arg_external_array_with_shape({index!r}, {a}.data_ptr(), {a}.nbytes, {a}.shape, 0)")
        elif kind == _NDARRAY:
            cls, element_type, ndim, grad_none = key
            names[f"nt{pos}"], names[f"e{pos}"] = cls, element_type
            checks.append(f"type({a}) is nt{pos} and {a}.element_type == e{pos} and len({a}.shape) == {int(ndim)} "
                          f"and ({a}.grad is None) is {bool(grad_none)}")
            sets.append(f"ctx.set_arg_ndarray({index!r}, {a}.arr)")
        else:
            names[f"st{pos}"] = key
            checks.append(f"type({a}) is st{pos}")
            setter = {_FLOAT: "set_arg_float", _INT: "set_arg_int", _UINT: "set_arg_uint"}[kind]
            convert = "float" if kind == _FLOAT else "int"
            sets.append(f"ctx.{setter}({index!r}, {convert}({a}))")
    unpack = "".join(f"a{k}, " for k in range(n))
    lines = ["def fill(args):", f"    if len(args) != {n}:", "        return None"]
    if n:
        lines.append(f"    {unpack} = args")
    if checks:
        lines.append("    if not (" + "\n            and ".join(checks) + "):")
        lines.append("        return None")
    lines.append("    ctx = make_ctx()")
    lines += [f"    {line}" for line in sets]
    lines.append("    return ctx")
    exec("\n".join(lines), names)      # noqa: S102 - code built above from the plan, no outside text
    return names["fill"]


class FastKernel:
    """A Taichi kernel (the function ``@ti.kernel`` returns) called through a recorded plan; see
    the module docstring. Calling it is calling the kernel."""

    def __init__(self, wrapped):
        self._wrapped = wrapped
        self._kernel = wrapped._primal
        self.__name__ = getattr(wrapped, "__name__", "kernel")
        self.__doc__ = getattr(wrapped, "__doc__", None)
        self._plans: dict = {}
        self._is_template = None   # per argument, filled on first use (arguments parse lazily)
        self._ti_ndarray = None
        self._runtime = None       # the Taichi runtime the plans were made in
        self._last = None          # the plan of the last planned launch, tried first (its fill)

    # A kernel is shared code, like the function it wraps: copies (copy.deepcopy of a module or
    # corrector that holds one) share it rather than trying to copy Taichi's program objects.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # -- signature and plan --------------------------------------------------------------------
    def _signature(self, args):
        tensor = _torch_tensor
        sig = []
        for is_template, v in zip(self._is_template, args):
            if is_template:
                sig.append(v)
            elif isinstance(v, tensor):
                # the device as (is_cpu, is_cuda): a plan is made only for the Taichi arch's device
                # type, so every other device type (both False) keeps Taichi's path, as before
                sig.append((v.dtype, v.dim(), v.is_cpu, v.is_cuda, v.requires_grad))
            elif isinstance(v, self._ti_ndarray):
                # the element type, as Taichi's own instance key: a vector ndarray of 3 must
                # not reuse the plan (the compiled instance) made for one of 2
                sig.append((type(v), v.element_type, len(v.shape), v.grad is None))
            else:
                sig.append(type(v))
        return tuple(sig)

    def _make_plan(self, args):
        import torch
        from taichi._lib import core as ti_core
        from taichi.lang import impl
        from taichi.lang.enums import AutodiffMode
        from taichi.lang.util import cook_dtype
        from taichi.types import ndarray_type, primitive_types
        from taichi.types.utils import is_signed

        kernel = self._kernel
        if kernel.has_print or kernel.autodiff_mode != AutodiffMode.NONE:
            return False
        arch_cuda = impl.current_cfg().arch == ti_core.Arch.cuda
        setters = []
        slot = 0
        for pos, (argument, v) in enumerate(zip(kernel.arguments, args)):
            needed = argument.annotation
            if self._is_template[pos]:
                continue
            index = (slot,)
            slot += 1
            if isinstance(needed, ndarray_type.NdarrayType) and isinstance(v, self._ti_ndarray):
                if v.grad is not None:
                    return False
                setters.append((pos, _NDARRAY, index))
            elif isinstance(needed, ndarray_type.NdarrayType):
                if not isinstance(v, torch.Tensor) or v.requires_grad:
                    return False
                if v.device.type != ("cuda" if arch_cuda else "cpu"):
                    return False
                if not (needed.dtype is None or id(needed.dtype) in primitive_types.type_ids):
                    return False
                setters.append((pos, _TENSOR, index))
            elif id(needed) in primitive_types.real_type_ids:
                setters.append((pos, _FLOAT, index))
            elif id(needed) in primitive_types.integer_type_ids:
                setters.append((pos, _INT if is_signed(cook_dtype(needed)) else _UINT, index))
            else:
                return False
        ret = None
        if kernel.return_type is not None:
            types = list(kernel.return_type)
            if len(types) != 1:
                return False
            if id(types[0]) in primitive_types.real_type_ids:
                ret = _FLOAT
            elif id(types[0]) in primitive_types.integer_type_ids and is_signed(cook_dtype(types[0])):
                ret = _INT
            else:
                return False
        key = kernel.ensure_compiled(*args)
        plan = _Plan(kernel.compiled_kernels[key], setters, ret)
        try:
            plan.fill = _make_fill(plan, self._signature(args), self._is_template, self._ti_ndarray, torch.Tensor)
        except Exception:   # no fill: every call of this signature takes the general path below
            plan.fill = None
        return plan

    # -- the call ------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        global _torch_tensor, _impl
        last = self._last
        if last is not None and not kwargs and _enabled():
            # the signature of the last planned launch (a solver's kernels see the same one every
            # step): its fill checks it and fills the context; anything else goes the general way
            runtime = _impl.get_runtime()
            if runtime is self._runtime and not (runtime.target_tape or runtime.fwd_mode_manager):
                ctx = last.fill(args)
                if ctx is not None:
                    return self._launch(runtime, last, ctx)
        kernel = self._kernel
        if kwargs or len(args) != len(kernel.arguments) or not _enabled():
            return self._wrapped(*args, **kwargs)
        if self._is_template is None:
            import torch
            from taichi.lang import impl
            from taichi.lang._ndarray import Ndarray
            from taichi.types import template

            _torch_tensor, _impl = torch.Tensor, impl
            self._ti_ndarray = Ndarray
            self._is_template = [isinstance(a.annotation, template) for a in kernel.arguments]

        runtime = _impl.get_runtime()
        if runtime is not self._runtime:      # first call, or ti.reset() made a new runtime:
            self._plans.clear()               # plans hold compiled kernels of the old one
            self._last = None
            self._runtime = runtime
        if runtime.target_tape or runtime.fwd_mode_manager:
            return self._wrapped(*args)
        try:
            sig = self._signature(args)
            plan = self._plans.get(sig)
        except TypeError:          # an unhashable template value: Taichi's path
            return self._wrapped(*args)
        if plan is None:
            out = self._wrapped(*args)          # compiles, checks and launches
            try:
                self._plans[sig] = self._make_plan(args)
            except Exception:   # Taichi internals not as expected: this signature keeps Taichi's path
                self._plans[sig] = False
            return out
        if plan is False:
            return self._wrapped(*args)
        if plan.fill is not None:
            self._last = plan
        ctx = plan.t_kernel.make_launch_context()
        for pos, kind, index in plan.setters:
            v = args[pos]
            if kind == _TENSOR:
                if not v.is_contiguous():
                    return self._wrapped(*args)   # Taichi's path raises its own error
                ctx.set_arg_external_array_with_shape(index, v.data_ptr(), v.nbytes, v.shape, 0)
            elif kind == _NDARRAY:
                ctx.set_arg_ndarray(index, v.arr)
            elif kind == _FLOAT:
                ctx.set_arg_float(index, float(v))
            elif kind == _INT:
                ctx.set_arg_int(index, int(v))
            else:
                ctx.set_arg_uint(index, int(v))
        return self._launch(runtime, plan, ctx)

    def _launch(self, runtime, plan: _Plan, ctx):
        """Launch ``plan``'s compiled kernel with the filled context ``ctx``; its scalar result."""
        prog = runtime.prog
        compiled = plan.compiled
        if compiled is None:
            # Taichi's own call asks compile_kernel on every launch, which rebuilds the kernel's
            # cache key from the compile config and the kernel (~20 us on a slow day, ~1 % of a
            # 128^2 fluid step) to find the same compiled kernel each time. The config is constant
            # per runtime (Taichi's contract: options are given to ti.init), and a plan belongs to
            # one runtime (a new one drops the plans), so the first answer holds for the plan's life.
            held = _compile_args(runtime, prog)
            compiled = plan.compiled = prog.compile_kernel(held[1], held[2], plan.t_kernel)
        for observe in launch_observers:      # before the launch, as Taichi's own path is counted
            observe(self.__name__)
        prog.launch_kernel(compiled, ctx)
        if plan.ret is None:
            return None
        prog.synchronize()          # Taichi's own call syncs before reading a return value
        return ctx.get_struct_ret_float((0,)) if plan.ret == _FLOAT else ctx.get_struct_ret_int((0,))


def fast_kernel(wrapped: Any) -> Any:
    """``wrapped`` (a ``@ti.kernel`` function) as a :class:`FastKernel`; anything else, or a
    kernel of a Taichi without the internals the fast path reads, is returned unchanged."""
    primal = getattr(wrapped, "_primal", None)
    if not getattr(wrapped, "_is_wrapped_kernel", False) or getattr(wrapped, "_is_classkernel", False):
        return wrapped
    if not all(hasattr(primal, name) for name in ("compiled_kernels", "ensure_compiled", "arguments",
                                                  "return_type", "has_print", "autodiff_mode")):
        return wrapped
    return FastKernel(wrapped)


def fast_kernels(kernels: dict) -> dict:
    """The dict of kernels (and ``ti.func`` helpers, left as they are) with every kernel wrapped
    by :func:`fast_kernel`."""
    return {name: fast_kernel(k) for name, k in kernels.items()}
