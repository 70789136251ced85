"""Data-parallel training helpers on ``torch.distributed`` (launched by ``torchrun``).

lawful has no launcher of its own: ``torchrun`` starts one process per rank and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`context` reads them and
joins the process group (gloo for CPU models, NCCL for CUDA ones); without them (a plain
``python`` or ``lawful`` run) it returns the single-process context and nothing distributed is
touched. The training core (:mod:`lawful.kernels.training_core`) wraps the model in
``DistributedDataParallel`` through :func:`wrap`, shards each fixed global batch with
:func:`shard` and lets rank 0 alone write files (:attr:`DistContext.is_main`).
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass

import torch

from lawful.kernels.errors import BackendError, InputError

__all__ = ["DistContext", "context", "shard", "all_reduce_sum", "broadcast_float", "check_same", "barrier", "wrap",
           "LossModule", "env_rank", "time_communication", "COMM_TIME"]

#: Seconds and calls spent in DDP's gradient all-reduce by this process, counted only while
#: :func:`time_communication` is on (benchmarks: the communication share of a training run).
COMM_TIME = {"seconds": 0.0, "calls": 0}
_TIMING = {"on": False}


def time_communication(on: bool = True) -> None:
    """Time DDP's gradient all-reduce into :data:`COMM_TIME` for models wrapped from now on.

    The timed reduction is synchronous (it no longer overlaps the backward pass) and its time
    includes waiting for the slowest rank: use it to measure, not to train fast."""
    _TIMING["on"] = bool(on)


def _timed_allreduce(state, bucket):
    import time

    t0 = time.perf_counter()
    buf = bucket.buffer()
    torch.distributed.all_reduce(buf)
    buf.div_(torch.distributed.get_world_size())
    COMM_TIME["seconds"] += time.perf_counter() - t0
    COMM_TIME["calls"] += 1
    fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its
    node, ``backend`` ("gloo" / "nccl", or None single-process) and whether it initialised the
    process group itself (``owns_group``: then :meth:`close` tears it down)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs, progress bars and models."""
        return self.rank == 0

    def close(self) -> None:
        """Destroy the process group if this context created it (others' groups are left alone),
        after a barrier. Call it on every rank after a clean finish only (an interrupted run's
        group is torn down at exit by :func:`_release_at_exit`)."""
        if self.owns_group and torch.distributed.is_initialized():
            _collect_wrappers()
            torch.distributed.barrier()     # no rank tears down its connections while a peer still uses them
            torch.distributed.destroy_process_group()


def _collect_wrappers() -> None:
    """Free DDP wrappers that only reference cycles keep alive (a training loop and its hooks
    hold each other), while the interpreter is fully alive.

    A ``DistributedDataParallel`` still alive when Python finalises makes its gloo worker threads
    drop Python-owned tensors after the interpreter stopped handing out the GIL, and the process
    dies with SIGABRT ("terminate called without an active exception") after its work was done:
    measured on this machine, 2 ranks exiting with a cyclic DDP wrapper aborted in 7 of 30 runs,
    3 of 30 with the group destroyed but the wrapper left to finalisation, 0 of 30 with it
    collected first."""
    gc.collect()


def _release_at_exit() -> None:
    """``atexit`` handler registered when :func:`context` joins a group: an interrupted run (or a
    caller that never closed) still leaves the group before finalisation, without a barrier since
    a peer may be gone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        _collect_wrappers()
        torch.distributed.destroy_process_group()


def env_rank() -> int:
    """This process's rank from the environment (0 outside torchrun), e.g. to let only rank 0
    write the trained model after :func:`lawful.forcefields.train` returned."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return _env_int("RANK", 0)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer: torchrun sets it; unset "
                         "it for a single-process run.") from None


def context(device: torch.device | str = "cpu") -> DistContext:
    """The distributed context of this process, joining the process group when torchrun started it.

    device: the model's device: CUDA models use NCCL (each rank on ``cuda:LOCAL_RANK``), CPU
    models gloo. An already initialised group (e.g. by the caller) is used as it is.
    """
    if not torch.distributed.is_available():
        return DistContext()
    if torch.distributed.is_initialized():
        return DistContext(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                           _env_int("LOCAL_RANK", 0), torch.distributed.get_backend(), False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank = _env_int("RANK", 0)
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={world}: launch with torchrun, which sets both.")
    local = _env_int("LOCAL_RANK", 0)
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise BackendError(f"LOCAL_RANK={local} needs a CUDA device but {torch.cuda.device_count()} are "
                               "visible: start at most that many processes per node (--nproc_per_node), or "
                               "train on the CPU (--device cpu, gloo).")
        torch.cuda.set_device(local)
    try:
        torch.distributed.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise BackendError(f"could not join the {backend} process group as rank {rank} of {world} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): check "
                           "MASTER_ADDR/MASTER_PORT or the torchrun --rdzv-endpoint, and that every rank "
                           "was started.") from exc
    atexit.register(_release_at_exit)
    return DistContext(rank, world, local, backend, True)


def shard(items: list, ctx: DistContext) -> tuple[list, float]:
    """This rank's share of one global batch ``items``: every ``world_size``-th item from
    ``rank``, so the union over ranks is the global batch whatever its size.

    Returns ``(local_items, weight)``; a rank left without items (a global batch smaller than the
    world) gets the first item with weight 0.0, so that it still takes part in the collective
    gradient reduction but adds nothing to it.
    """
    if not ctx.distributed:
        return list(items), 1.0
    local = list(items[ctx.rank::ctx.world_size])
    if local:
        return local, 1.0
    return [items[0]], 0.0


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The sum of ``t`` over all ranks (``t`` itself single-process). Returns a new tensor."""
    if not ctx.distributed:
        return t
    out = t.detach().clone()
    torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
    return out


def broadcast_float(value: float, ctx: DistContext, device="cpu") -> float:
    """Rank 0's ``value`` on every rank (e.g. a validation score all ranks must act on alike)."""
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src=0)
    return float(t.item())


def check_same(value, what: str, ctx: DistContext, fix: str | None = None) -> None:
    """Refuse, on every rank alike, a ``value`` that is not the same on all ranks (single-process:
    nothing). ``value``: any picklable plain value (a data fingerprint, options); ``what`` names
    it in the error. Data-parallel training assumes every rank holds the same data and settings
    (each shards the same seeded global batches): ranks that read different files (a stale copy
    on one node's disk, a per-rank sampler) trained a model of no single data set, with no error.
    ``fix``: what the error tells the user to do (default: read the same data and settings)."""
    if not ctx.distributed:
        return
    values = [None] * ctx.world_size
    torch.distributed.all_gather_object(values, value)
    if any(v != values[0] for v in values[1:]):
        if all(isinstance(v, dict) for v in values):     # name the entries that differ
            keys = [k for k in values[0] if any(v.get(k) != values[0].get(k) for v in values)]
            keys += [k for v in values for k in v if k not in values[0] and k not in keys]
            values = [{k: v.get(k) for k in keys} for v in values]
        shown = "; ".join(f"rank {r}: {str(v)[:120]}" for r, v in enumerate(values))
        if fix is None:
            fix = ("every rank must read the same data with the same settings (copy the same files to every node, "
                   "seed any sampling alike), or each shards its own global batches and the model is of no one "
                   "data set.")
        raise InputError(f"the ranks of this data-parallel run hold different {what} ({shown}): {fix}")


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op single-process)."""
    if ctx.distributed:
        torch.distributed.barrier()


class LossModule(torch.nn.Module):
    """``forward(*args) -> loss_fn(*args)`` around ``model``: a module whose forward *is* the loss,
    so ``DistributedDataParallel`` sees every use of the model's parameters (the force fields are
    called through ``evaluate_batch``, not ``forward``, and their forces are gradients taken inside
    the loss: the final ``backward`` is a double backward through the reducer's hooks)."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *args):
        return self.loss_fn(*args)


def wrap(model: torch.nn.Module, loss_fn, ctx: DistContext,
         find_unused_parameters: bool = True) -> torch.nn.Module:
    """``LossModule(model, loss_fn)``, inside ``DistributedDataParallel`` when distributed.

    ``find_unused_parameters``: True when a batch may leave some parameters without gradient (a
    species absent from one rank's share leaves its network idle there), which DDP must know.
    Parameters and buffers are broadcast from rank 0 when wrapping, so every rank starts from the
    same weights; buffers are not re-sent before each forward (they must not change in training).
    """
    module = LossModule(model, loss_fn)
    if not ctx.distributed:
        return module
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # the gradients of a double backward (forces in the loss) may come out transposed for (1, n)
    # weights; the reducer copies them into its buckets all the same: a performance note only
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    dev = next(model.parameters()).device
    ids = [dev.index if dev.index is not None else ctx.local_rank] if dev.type == "cuda" else None
    # buffers (normalisation statistics, species tables) are fixed before training starts: sent
    # once here, not again before every forward (torch >= 2.13 names this forward_sync_buffers;
    # its broadcast_buffers=False would skip the first sync too)
    import inspect

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_resync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters,
                                  **no_resync)
    if _TIMING["on"]:
        ddp.register_comm_hook(None, _timed_allreduce)
    return ddp
