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
signature fill a fresh launch context from the plan and launch it. The kernel, its arguments and
its results are exactly those of the ordinary call; only the Python bookkeeping is skipped.

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

#: Callbacks ``f(kernel_name)`` told of every launch the fast path makes (launches through
#: Taichi's own path go through ``Kernel.__call__``, which :mod:`lawful.fluids.profiling` patches).
launch_observers: list[Callable[[str], None]] = []

_TENSOR, _FLOAT, _INT, _UINT, _NDARRAY = 0, 1, 2, 3, 4


def _enabled() -> bool:
    return os.environ.get(ENV_FAST_LAUNCH, "1") != "0"


class _Plan:
    __slots__ = ("t_kernel", "setters", "ret")

    def __init__(self, t_kernel, setters, ret):
        self.t_kernel = t_kernel
        self.setters = setters      # [(argument position, kind, launch-context index)]
        self.ret = ret              # None, _FLOAT or _INT (one scalar return value)


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

    # A kernel is shared code, like the function it wraps: copies (copy.deepcopy of a module or
    # corrector that holds one) share it rather than trying to copy Taichi's program objects.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # -- signature and plan --------------------------------------------------------------------
    def _signature(self, args):
        import torch

        sig = []
        for is_template, v in zip(self._is_template, args):
            if is_template:
                sig.append(v)
            elif isinstance(v, torch.Tensor):
                sig.append((v.dtype, v.dim(), v.device.type, v.requires_grad))
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
        return _Plan(kernel.compiled_kernels[key], setters, ret)

    # -- the call ------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        kernel = self._kernel
        if kwargs or len(args) != len(kernel.arguments) or not _enabled():
            return self._wrapped(*args, **kwargs)
        if self._is_template is None:
            from taichi.lang._ndarray import Ndarray
            from taichi.types import template

            self._ti_ndarray = Ndarray
            self._is_template = [isinstance(a.annotation, template) for a in kernel.arguments]
        from taichi.lang import impl

        runtime = impl.get_runtime()
        if runtime is not self._runtime:      # first call, or ti.reset() made a new runtime:
            self._plans.clear()               # plans hold compiled kernels of the old one
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
        ctx = plan.t_kernel.make_launch_context()
        for pos, kind, index in plan.setters:
            v = args[pos]
            if kind == _TENSOR:
                if not v.is_contiguous():
                    return self._wrapped(*args)   # Taichi's path raises its own error
                ctx.set_arg_external_array_with_shape(index, v.data_ptr(), v.element_size() * v.nelement(),
                                                      v.shape, 0)
            elif kind == _NDARRAY:
                ctx.set_arg_ndarray(index, v.arr)
            elif kind == _FLOAT:
                ctx.set_arg_float(index, float(v))
            elif kind == _INT:
                ctx.set_arg_int(index, int(v))
            else:
                ctx.set_arg_uint(index, int(v))
        prog = runtime.prog
        prog.launch_kernel(prog.compile_kernel(prog.config(), prog.get_device_caps(), plan.t_kernel), ctx)
        for observe in launch_observers:
            observe(self.__name__)
        if plan.ret is None:
            return None
        runtime.sync()
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
