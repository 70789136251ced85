"""The Taichi runtime: one lazy initialisation for the whole process, or the user's own.

Nothing in lawful calls ``ti.init`` except :func:`ensure_taichi`, and it never calls it over a
runtime that is already running. The policy:

* **Taichi not started yet**: the first :func:`ensure_taichi` starts it, choosing the arch in this
  order: the ``arch`` argument of that call (``"cpu"`` or ``"cuda"``; the CLI's ``--arch``), the
  environment variable ``LAWFUL_TI_ARCH`` (``cpu`` | ``cuda``), else automatic (CUDA when torch
  sees a GPU *and* Taichi's CUDA backend starts, else CPU).
* **The user called ``ti.init`` first** (before lawful's first fluid kernel): lawful *adopts* that
  runtime as it is -- the user's fields stay alive and their settings (``default_fp``, ``debug``,
  threads, ...) stay in force. Its arch must be one lawful's kernels run on (x64/arm64 = "cpu", or
  "cuda"; anything else is a :class:`BackendError`), and an explicit request (``arch`` argument or
  ``LAWFUL_TI_ARCH``) for another arch is a :class:`BackendError` naming both, since honouring it
  would mean re-initialising the user's runtime. lawful's kernels type every float literal and
  temporary from their arrays' dtypes, so their results do not depend on ``default_fp``.
* **The user calls ``ti.init`` (or ``ti.reset``) after lawful started**: every Taichi object of the
  old runtime is gone. :func:`ensure_taichi` adopts the new runtime (same rules) and increments
  :func:`runtime_generation`; objects holding Taichi arrays (the fluid ``PressureSolver``, hence a
  ``Solver``) record the generation they were built in and call :func:`check_generation` before
  touching any state, which raises :class:`BackendError` ("build a new Solver after ti.init")
  instead of failing half-way through a step.

Once running, asking :func:`ensure_taichi` for another arch raises :class:`BackendError` (Taichi
cannot switch arch without resetting every field); setting ``LAWFUL_TI_ARCH`` to another arch after
the start cannot be honoured either, and gives one :class:`RuntimeWarning` per value.

``ti.gpu`` is never used: with Taichi 1.7.4 it segfaults on CPU-only machines. :func:`taichi_arch`
reports the arch actually in use ("cpu" or "cuda").
"""

from __future__ import annotations

import os
import threading
import warnings

from lawful.kernels.errors import BackendError, InputError

__all__ = ["ensure_taichi", "taichi_arch", "taichi_cpu_threads", "taichi_real", "runtime_generation", "check_generation", "ENV_ARCH"]

ENV_ARCH = "LAWFUL_TI_ARCH"
_VALID = ("cpu", "cuda")
_lock = threading.Lock()
_arch: str | None = None
_runtime = None            # Taichi's runtime object (impl.get_runtime()) lawful started or adopted
_generation = 0            # +1 each time lawful starts or adopts a runtime
_env_at_start: str | None = None
_env_warned: set = set()
_impl = None               # taichi.lang.impl, once lawful has started or adopted a runtime


def _source(arch: str | None, value: str) -> str:
    if arch is not None:
        return f"argument arch={value!r}"
    return f"environment variable {ENV_ARCH}={value!r}"


def _requested(arch: str | None) -> str | None:
    value = arch if arch is not None else os.environ.get(ENV_ARCH)
    if value is None or value == "" or value == "auto":
        return None
    value = value.lower()
    if value not in _VALID:
        raise InputError(f"{_source(arch, value)} is not a Taichi arch lawful supports: use 'cpu' or 'cuda'.")
    return value


def _fix(arch: str | None, other: str) -> str:
    """How to withdraw the request that came from ``arch`` (argument) or the environment."""
    if arch is not None:
        return f"pass arch={other!r} (command line: --arch {other}) or leave the arch unset"
    return f"unset {ENV_ARCH} or set it to {other!r}"


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


#: Taichi's control-flow-graph optimisation passes are off in the runtime lawful starts: on the
#: fluid kernels they took about half the compile time and gave no speed (a new user's first
#: Kolmogorov 128^2 float32 step with an empty kernel cache, alternating fresh processes on a
#: 2-core machine: 47 s against 97 s, medians, ``bench_fluid.py --compile-only``; the
#: multigrid-CG iteration kernel of a 64^2 grid alone 13.8 s against 62.5 s; once compiled, steps
#: alike within the machine's noise, and the same numbers bit for bit). LLVM still optimises every
#: kernel. A runtime the user started keeps their settings.
TAICHI_INIT_OPTIONS = dict(offline_cache=True, cfg_optimization=False)


def _init(ti, name: str) -> None:
    arch = ti.cuda if name == "cuda" else ti.cpu
    # offline_cache keeps compiled kernels between processes (faster test runs).
    ti.init(arch=arch, log_level=ti.WARN, **TAICHI_INIT_OPTIONS)


def _running_arch(ti) -> str:
    """"cpu"/"cuda" of the running Taichi runtime; BackendError for an arch lawful cannot use."""
    arch = ti.lang.impl.current_cfg().arch
    if arch in (ti.x64, ti.arm64):
        return "cpu"
    if arch == ti.cuda:
        return "cuda"
    raise BackendError(
        f"Taichi was started with ti.init(arch={arch.name if hasattr(arch, 'name') else arch}) outside lawful; "
        "lawful's kernels run on the CPU (x64/arm64) or CUDA only. Call ti.init(arch=ti.cpu) or "
        "ti.init(arch=ti.cuda) instead (lawful then uses your runtime), or leave ti.init to lawful."
    )


def _adopt(ti, rt, arch: str | None, wanted: str | None) -> str:
    """Use the runtime the user started with their own ``ti.init`` (see the module docstring)."""
    running = _running_arch(ti)
    if wanted is not None and wanted != running:
        raise BackendError(
            f"{_source(arch, wanted)} asks for Taichi on {wanted!r}, but Taichi was already started on "
            f"{running!r} by a ti.init outside lawful; lawful uses that runtime rather than re-initialise it "
            f"(which would destroy your Taichi fields). Either {_fix(arch, running)}, or call "
            f"ti.init(arch=ti.{wanted if wanted == 'cuda' else 'cpu'}) yourself."
        )
    return running


def _start(ti, arch: str | None, wanted: str | None) -> str:
    if wanted == "cuda":
        if not _cuda_visible():
            raise BackendError(f"Taichi arch 'cuda' was requested ({_source(arch, wanted)}) but no CUDA GPU "
                               f"is visible to torch; {_fix(arch, 'cpu')}.")
        _init(ti, "cuda")
        if ti.lang.impl.current_cfg().arch != ti.cuda:
            raise BackendError(f"Taichi's CUDA backend did not start ({_source(arch, wanted)}); "
                               f"{_fix(arch, 'cpu')}.")
        return "cuda"
    if wanted == "cpu":
        _init(ti, "cpu")
        return "cpu"
    if _cuda_visible():
        _init(ti, "cuda")
        # Taichi falls back to CPU by itself when CUDA fails to start; report the truth.
        return "cuda" if ti.lang.impl.current_cfg().arch == ti.cuda else "cpu"
    _init(ti, "cpu")
    return "cpu"


def _check_running(arch: str | None, wanted: str | None) -> None:
    """Requests made after the start: an explicit other arch is an error, a changed env a warning."""
    if wanted is None or wanted == _arch:
        return
    if arch is not None:
        raise BackendError(
            f"Taichi already runs on {_arch!r}; cannot switch to {wanted!r} in the same process. "
            f"Set {ENV_ARCH}={wanted} (or pass arch={wanted!r}) before the first use instead."
        )
    value = os.environ.get(ENV_ARCH)
    if value != _env_at_start and value not in _env_warned:
        _env_warned.add(value)
        warnings.warn(
            f"{ENV_ARCH}={value!r} was set after Taichi started on {_arch!r}: it is read once, at the "
            f"first use, so lawful keeps running on {_arch!r}. Set it before the process uses lawful's "
            "fluid kernels (e.g. in the shell).", RuntimeWarning, stacklevel=3)


def ensure_taichi(arch: str | None = None) -> str:
    """Start Taichi once, or adopt the runtime already running, and return its arch ("cpu" or "cuda").

    ``arch``: ``"cpu"``, ``"cuda"``, ``"auto"`` or None (then ``LAWFUL_TI_ARCH``, then automatic).
    A runtime the user started with their own ``ti.init`` is used as it is, never re-initialised
    (module docstring); a runtime replaced by a later ``ti.init`` is adopted and bumps
    :func:`runtime_generation`. Raises :class:`BackendError` when the request cannot be met: CUDA
    without a GPU, another arch than the one already running (named with where the request came
    from), or a user runtime on an arch lawful's kernels do not run on; :class:`InputError` for an
    unknown arch name.
    """
    global _arch, _runtime, _generation, _env_at_start, _impl
    wanted = _requested(arch)
    rt = _runtime
    if rt is not None and (wanted is None or wanted == _arch) and _impl is not None:
        # the common call (every step, every kernel wrapper): the runtime lawful started or adopted
        # is still the one running and nothing asks for another arch -- what the locked path below
        # returns too, without taking the lock
        if _impl.get_runtime() is rt and rt.prog is not None:
            return _arch
    with _lock:
        if _runtime is not None:
            from taichi.lang import impl

            rt = impl.get_runtime()
            if rt is _runtime and rt.prog is not None:
                _check_running(arch, wanted)
                return _arch
        import taichi as ti

        rt = ti.lang.impl.get_runtime()
        if rt.prog is not None:
            if _runtime is not None and arch is None and os.environ.get(ENV_ARCH) == _env_at_start:
                wanted = None     # the environment was read at lawful's start; not a new request
            name = _adopt(ti, rt, arch, wanted)
        else:
            name = _start(ti, arch, wanted)
            rt = ti.lang.impl.get_runtime()
        _arch, _runtime = name, rt
        _env_at_start = os.environ.get(ENV_ARCH)
        _generation += 1
        _impl = ti.lang.impl
        return _arch


def taichi_arch() -> str | None:
    """The arch Taichi was initialised with ("cpu" / "cuda"), or ``None`` if not yet started."""
    return _arch


def taichi_cpu_threads() -> int | None:
    """The size of the Taichi CPU thread pool that runs lawful's parallel loops
    (``cpu_max_num_threads`` of the running runtime: the machine's hardware threads unless the
    user's ``ti.init`` set it), or ``None`` when Taichi runs on CUDA or has not started."""
    if _arch != "cpu" or _impl is None:
        return None
    return int(_impl.current_cfg().cpu_max_num_threads)


def runtime_generation() -> int:
    """How many Taichi runtimes lawful has started or adopted in this process (0 before the first).
    Objects holding Taichi arrays record it when built and pass it to :func:`check_generation`."""
    return _generation


def check_generation(generation: int, owner: str, fix: str) -> None:
    """Raise :class:`BackendError` unless the Taichi runtime is still the one of ``generation``
    (after :func:`ensure_taichi`, so that a user's ``ti.init`` since then is noticed). ``owner``
    names the object ("this Solver"), ``fix`` how to build a new one. Call it before touching any
    state, so that a refused call leaves the state unchanged."""
    ensure_taichi()
    if generation != _generation:
        raise BackendError(
            f"Taichi was re-initialised (ti.init or ti.reset) after {owner} was built: the Taichi arrays it "
            f"holds belonged to the old runtime and are gone. {fix} after the ti.init call; your state "
            "was left unchanged."
        )


def taichi_real(name: str):
    """The Taichi scalar type of the dtype name ``name`` (``"float32"`` -> ``ti.f32``,
    ``"float64"`` -> ``ti.f64``; names from :func:`lawful.kernels.precision.dtype_name`, the key
    under which the kernel modules compile and cache their dtype-specialised kernels); anything
    else raises :class:`InputError`."""
    import taichi as ti

    if name == "float32":
        return ti.f32
    if name == "float64":
        return ti.f64
    raise InputError(f"Taichi kernels are compiled for float32 or float64, not {name!r}: convert the "
                     f"tensors with .float() or .double().")
