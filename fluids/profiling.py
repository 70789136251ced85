"""Counting Taichi kernel launches (for the speed benchmark and the launch-budget test).

:func:`count_launches` patches ``taichi``'s ``Kernel.__call__`` for the duration of a ``with``
block and counts every kernel launch in it (lawful's MAC kernels and any other Taichi kernel); the
hot path itself carries no counter. Torch operations are not Taichi launches and are not counted.
"""

from __future__ import annotations

import contextlib

__all__ = ["count_launches"]


class _Count:
    def __init__(self):
        self.launches = 0
        self.by_kernel = {}


@contextlib.contextmanager
def count_launches():
    """``with count_launches() as c: ...`` -> ``c.launches`` (total) and ``c.by_kernel``
    (launches per kernel function name) of the block."""
    from taichi.lang import kernel_impl

    from lawful.kernels.runtime import ensure_taichi

    ensure_taichi()
    c = _Count()
    orig = kernel_impl.Kernel.__call__

    def counted(self, *args, **kwargs):
        c.launches += 1
        name = getattr(self.func, "__name__", "?")
        c.by_kernel[name] = c.by_kernel.get(name, 0) + 1
        return orig(self, *args, **kwargs)

    kernel_impl.Kernel.__call__ = counted
    try:
        yield c
    finally:
        kernel_impl.Kernel.__call__ = orig
