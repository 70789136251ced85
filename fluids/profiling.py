"""Counting Taichi kernel launches (for the speed benchmark and the launch-budget test).

:func:`count_launches` patches ``taichi``'s ``Kernel.__call__`` for the duration of a ``with``
block and counts every kernel launch in it (lawful's MAC kernels and any other Taichi kernel); the
hot path itself carries no counter. Torch operations are not Taichi launches and are not counted.
"""

from __future__ import annotations

import contextlib
import time

__all__ = ["count_launches"]


class _Count:
    def __init__(self):
        self.launches = 0
        self.by_kernel = {}
        self.kernel_s = 0.0
        self.kernel_s_by_kernel = {}
        self.last = None        # the kernel whose launch was announced last (its launch comes next)


class _TimedProgram:
    """Stands in for Taichi's program object: times ``launch_kernel``, forwards the rest."""

    def __init__(self, prog, count):
        self._prog = prog
        self._count = count

    def __getattr__(self, name):
        return getattr(self._prog, name)

    def launch_kernel(self, *args):
        t0 = time.perf_counter()
        try:
            return self._prog.launch_kernel(*args)
        finally:
            dt = time.perf_counter() - t0
            c = self._count
            c.kernel_s += dt
            c.kernel_s_by_kernel[c.last] = c.kernel_s_by_kernel.get(c.last, 0.0) + dt


@contextlib.contextmanager
def count_launches(timed: bool = False):
    """``with count_launches() as c: ...`` -> ``c.launches`` (total) and ``c.by_kernel``
    (launches per kernel function name) of the block; with ``timed``, ``c.kernel_s``: seconds of
    wall time inside Taichi's native launch (kernel execution on the CPU backend; on CUDA launches
    are asynchronous and this is launch time only), and ``c.kernel_s_by_kernel`` the same per
    kernel name (both launch paths announce a launch before it runs)."""
    from taichi.lang import impl, kernel_impl

    from lawful.kernels import fast_launch
    from lawful.kernels.runtime import ensure_taichi

    ensure_taichi()
    c = _Count()
    orig = kernel_impl.Kernel.__call__

    def note(name):
        c.launches += 1
        c.by_kernel[name] = c.by_kernel.get(name, 0) + 1
        c.last = name

    def counted(self, *args, **kwargs):
        note(getattr(self.func, "__name__", "?"))
        return orig(self, *args, **kwargs)

    runtime = impl.get_runtime()
    prog = runtime.prog
    kernel_impl.Kernel.__call__ = counted
    fast_launch.launch_observers.append(note)
    if timed:
        runtime.prog = _TimedProgram(prog, c)
    try:
        yield c
    finally:
        kernel_impl.Kernel.__call__ = orig
        fast_launch.launch_observers.remove(note)
        if timed:
            runtime.prog = prog
