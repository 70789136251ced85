"""The MACE peer of ``bench_molecules.py``: MACE trained by mace-torch's own code on the same frames.

Training runs ``mace.cli.run_train`` (its data pipeline, E0 fit, model, loss, optimiser, scheduler,
EMA, checkpoints and final model file) in a child process, through :func:`driver_main` below, which
adds only a stopping rule checked between epochs (mace-torch 0.3.16 has no CPU budget, and its
``--patience`` only logs "Stopping optimization" in a non-distributed run, which then goes on):

- ``cap``: do not start an epoch expected to end past ``cap_cpu_s`` of this process's CPU time
  (``time.process_time``: imports, data loading, graph building, E0 and statistics fits, every epoch
  with its validation pass);
- ``plateau``: stop after ``plateau_epochs`` validations without a new lowest validation loss
  (the same rule and count as lawful's ``patience``);
- ``snapshot_cpu_s`` (the lawful budget): before starting the first epoch expected to end past it,
  the best-validation checkpoint at that moment is written as ``<name>_budget.model``. That is exactly
  the model a separate run stopped at that budget would give: nothing in the training schedule
  depends on where the run stops. One run thus yields both the same-budget and the converged model.

A run writes ``budget.json`` in its work folder (epochs, CPU per epoch, validation losses, stop
reason, the CPU seconds each model used) beside MACE's own logs and checkpoints.

Nothing here is imported by lawful; without mace-torch, :func:`available` is False and the
benchmark reports None.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: frame keys written into the extxyz files MACE reads (set explicitly on both sides)
ENERGY_KEY, FORCES_KEY = "REF_energy", "REF_forces"
#: the MACE model for the organic data (mace-torch ``run_train`` arguments): 32 channels, L_max 0
#: (hidden irreps 32x0e; messages still built from spherical harmonics to l = 3 with correlation
#: order 3, i.e. four-body features), 8 Bessel radial functions, r_max 5 Å like lawful's cutoff,
#: 2 interactions, about 74k parameters. Measured on this data (one thread, float64): ~54 s CPU per
#: epoch of the full training set, so a CPU hour gives ~65 epochs; 32 channels with L_max 1 cost
#: ~135 s per epoch, 64 channels with L_max 1 ~310 s (override with ``--mace-channels/--mace-max-l``).
MACE_ARCH = dict(model="MACE", num_channels=32, max_L=0, correlation=3, max_ell=3, r_max=5.0,
                 num_interactions=2, num_radial_basis=8, num_cutoff_basis=5, MLP_irreps="16x0e")
#: the same code path, shrunk for smoke runs (tiny mode)
MACE_ARCH_TINY = dict(MACE_ARCH, num_channels=8, max_L=0, correlation=2, max_ell=2)


def available() -> bool:
    """True when mace-torch (and its e3nn) import."""
    try:
        import mace  # noqa: F401  (before e3nn: mace configures it on import)
        import mace.calculators  # noqa: F401
    except Exception:   # ImportError, or a broken install: either way no peer
        return False
    return True


def write_extxyz(frames, path: str | os.PathLike) -> Path:
    """Write labelled frames (energy eV, forces eV/Å from ``atoms.info['energy']`` /
    ``get_potential_energy()``) as extxyz with the keys :data:`ENERGY_KEY`, :data:`FORCES_KEY`."""
    import numpy as np
    from ase import Atoms
    from ase.io import write

    out = []
    for a in frames:
        e = a.info["energy"] if "energy" in a.info else a.get_potential_energy()
        f = a.arrays["forces"] if "forces" in a.arrays else a.get_forces()
        b = Atoms(a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
        b.info[ENERGY_KEY] = float(e)
        b.arrays[FORCES_KEY] = np.asarray(f, dtype=np.float64)
        out.append(b)
    path = Path(path)
    write(path, out, format="extxyz")
    return path


def train_args(workdir: Path, name: str, train_file: Path, valid_file: Path, *, arch: dict, train: dict,
               max_epochs: int, seed: int = 0) -> list[str]:
    """The ``mace.cli.run_train`` command-line arguments: float64, CPU, seeded, explicit keys,
    E0s ``average`` (mace-torch's least-squares fit of per-element energies on the training set),
    the loss of lawful's ``TRAIN`` (its ``force_loss``: "huber" -> mace-torch's Huber loss with the
    same ``huber_delta`` on per-atom energies and force components, which is lawful's halved, and
    no stress term; "mse" -> its weighted squared error), the loss weights, batch size, LR
    factor/patience and gradient clip of ``TRAIN``, MACE's own optimiser (AMSGrad Adam, lr 0.01,
    weight decay 5e-7) and EMA (decay 0.99). MACE keeps the checkpoint of the lowest validation
    loss (this loss); lawful the epoch of the lowest energy-RMSE/force-MAE score."""
    if train.get("force_loss", "mse") == "huber":
        # the same robust loss as lawful's (a peer trained with the squared error was scored on
        # force MAE against a lawful trained for it; audit): mace-torch computes the stress with
        # this loss, weighted 0 here (the molecules have none)
        loss = ["--loss=huber", f"--huber_delta={train['huber_delta']}", "--stress_weight=0.0"]
    else:
        loss = ["--loss=weighted"]
    a = dict(arch)
    args = [f"--name={name}", f"--work_dir={workdir}", f"--train_file={train_file}", f"--valid_file={valid_file}",
            f"--energy_key={ENERGY_KEY}", f"--forces_key={FORCES_KEY}", "--E0s=average",
            "--default_dtype=float64", "--device=cpu", f"--seed={seed}", *loss,
            f"--energy_weight={train['energy_weight']}", f"--forces_weight={train['force_weight']}",
            f"--batch_size={train['batch_size']}", f"--valid_batch_size={max(train['batch_size'], 16)}",
            "--lr=0.01", f"--lr_factor={train['lr_factor']}", f"--scheduler_patience={train['lr_patience']}",
            f"--clip_grad={train['grad_clip']}", "--ema", "--ema_decay=0.99", "--amsgrad",
            f"--max_num_epochs={max_epochs}", f"--patience={max_epochs + 1}", "--eval_interval=1",
            "--error_table=PerAtomMAE", "--save_cpu", "--plot=False", "--num_workers=0"]
    for k, v in a.items():
        args.append(f"--{k}={v}")
    return args


def run_training(workdir: str | os.PathLike, train_frames, valid_frames, *, arch: dict, train: dict,
                 snapshot_cpu_s: float, cap_cpu_s: float, plateau_epochs: int, max_epochs: int,
                 name: str = "mace_organic", seed: int = 0, timeout_s: float | None = None) -> dict:
    """Train MACE in a child process (one thread) and return ``budget.json`` with the model paths.

    ``snapshot_cpu_s``: the same-budget model is the best checkpoint when the run's CPU reaches it;
    ``cap_cpu_s``: the converged run's CPU cap; ``plateau_epochs``: validations without a new
    best before the converged run stops; ``max_epochs``: a hard epoch cap (tiny runs).
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # a previous run's checkpoints would be taken for this run's (MACE loads the highest epoch)
    for sub in ("checkpoints", "logs", "results"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    for old in [*workdir.glob("*.model"), workdir / "budget.json"]:
        old.unlink(missing_ok=True)
    tr = write_extxyz(train_frames, workdir / "train.extxyz")
    va = write_extxyz(valid_frames, workdir / "valid.extxyz")
    args = train_args(workdir, name, tr, va, arch=arch, train=train, max_epochs=max_epochs, seed=seed)
    budget = dict(snapshot_cpu_s=float(snapshot_cpu_s), cap_cpu_s=float(cap_cpu_s),
                  plateau_epochs=int(plateau_epochs))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(budget), *args]
    (workdir / "command.json").write_text(json.dumps(cmd, indent=1) + "\n")
    with open(workdir / "driver.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (workdir / "driver.log").read_text()[-3000:]
        raise RuntimeError(f"MACE training exited with status {proc.returncode}; its log "
                           f"({workdir / 'driver.log'}) ends with:\n{tail}")
    res = json.loads((workdir / "budget.json").read_text())
    res["converged_model"] = str(workdir / f"{name}.model")
    res["budget_model"] = str(workdir / f"{name}_budget.model")
    res["mace_args"] = args
    return res


def _without_stress(model):
    """``model`` (a MACE torch module) with its forward always called with ``compute_stress=False``:
    mace-torch's calculator asks every MACE model for the stress (the virial in the same backward
    pass); lawful's molecule calls compute energy and forces only. The module is otherwise the same
    object (the calculator reads its attributes)."""
    inner = model.forward

    def forward(data, **kwargs):
        kwargs["compute_stress"] = False
        return inner(data, **kwargs)

    model.forward = forward
    return model


def calculator(model_path: str | os.PathLike, dtype: str = "float64", stress: bool = True):
    """mace-torch's own ASE calculator for a trained model file, in ``dtype``, on the CPU.
    ``stress=False``: its models called without the stress (energy and forces only, like for
    like with lawful's calls on a molecule); the calculator is otherwise unchanged."""
    import logging
    import warnings

    import mace  # noqa: F401
    from mace.calculators import MACECalculator

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # its notices (dtype conversion, heads) go to the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype=dtype)
    finally:
        root.setLevel(level)
    if not stress:
        calc.models = [_without_stress(m) for m in calc.models]
    return calc


def n_parameters(model_path: str | os.PathLike) -> int:
    """Trainable parameters of a saved MACE model."""
    import torch

    # a MACE .model file is a pickled torch module (mace-torch's own format), so it cannot be read
    # with weights_only=True; the only files read here are the ones this benchmark's run just wrote
    model = torch.load(str(model_path), map_location="cpu", weights_only=False)
    return int(sum(p.numel() for p in model.parameters()))


# ---------------------------------------------------------------------------------------------------
# the child process: mace.cli.run_train with a stopping rule between epochs


class _Stop(Exception):
    """Raised at the start of an epoch that the stopping rule does not allow."""


def _die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when the benchmark that started it dies
    (however it dies), so a killed benchmark leaves no MACE training running behind it (it once
    trained on for 30 minutes as an orphan). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:      # the parent died before the request took effect
        os._exit(143)


def driver_main(argv: list[str]) -> None:
    """``python mace_peer.py BUDGET_JSON RUN_TRAIN_ARGS...``: run mace-torch's training with the
    stopping rule of the module docstring; writes ``budget.json`` into ``--work_dir``."""
    _die_with_parent()
    import mace  # noqa: F401
    import torch
    from mace import tools
    from mace.cli import run_train

    mtrain = sys.modules["mace.tools.train"]   # the module: ``mace.tools.train`` is the function

    torch.set_num_threads(1)
    budget = json.loads(argv[0])
    args = tools.build_default_arg_parser().parse_args(argv[1:])
    work = Path(args.work_dir)
    ckpt_dir = Path(args.checkpoints_dir) if args.checkpoints_dir else work / "checkpoints"
    state = {"epoch_start_cpu": [], "val_loss": [], "best": float("inf"), "since_best": 0,
             "stop_reason": "max_epochs", "snapshot": None, "first_epoch_cpu": None}
    original_epoch, original_log, original_train = mtrain.train_one_epoch, mtrain.valid_err_log, tools.train

    def snapshot(model, epochs_done: int, cpu: float) -> None:
        # the best-validation checkpoint now on disk (MACE keeps only the best), as a model file
        import copy

        files = sorted(ckpt_dir.glob("*_epoch-*.pt"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        m = copy.deepcopy(model)
        if files:
            # a checkpoint holds state dicts only (model, optimizer, scheduler): tensors, no code
            m.load_state_dict(torch.load(files[-1], map_location="cpu", weights_only=True)["model"])
        best_epoch = int(files[-1].stem.rsplit("-", 1)[1]) if files else None
        torch.save(m.to("cpu"), work / f"{args.name}_budget.model")
        state["snapshot"] = {"cpu_s": cpu, "epochs_run": epochs_done, "best_epoch": best_epoch}

    def guarded_epoch(*a, **kw):
        now = time.process_time()
        starts = state["epoch_start_cpu"]
        done = len(starts)
        if done:
            last = now - starts[-1]
            if state["snapshot"] is None and now + last > budget["snapshot_cpu_s"]:
                snapshot(kw["model"], done, now)
            if state["since_best"] >= budget["plateau_epochs"]:
                state["stop_reason"] = "plateau"
                raise _Stop
            if now + last > budget["cap_cpu_s"]:
                state["stop_reason"] = "cpu_cap"
                raise _Stop
        else:
            state["first_epoch_cpu"] = now
        starts.append(now)
        return original_epoch(*a, **kw)

    def recording_log(valid_loss, eval_metrics, logger, log_errors, epoch=None, *rest, **kw):
        if epoch is not None:   # epoch None: the evaluation before any training
            loss = float(valid_loss)
            state["val_loss"].append(loss)
            if loss < state["best"]:
                state["best"], state["since_best"] = loss, 0
            else:
                state["since_best"] += 1
        return original_log(valid_loss, eval_metrics, logger, log_errors, epoch, *rest, **kw)

    def stoppable_train(*a, **kw):
        try:
            original_train(*a, **kw)
        except _Stop:
            pass
        state["end_cpu"] = time.process_time()
        if state["snapshot"] is None:   # stopped (plateau, cap or epochs) before the budget: same model
            snapshot(kw["model"], len(state["epoch_start_cpu"]), state["end_cpu"])

    mtrain.train_one_epoch, mtrain.valid_err_log, tools.train = guarded_epoch, recording_log, stoppable_train
    run_train.run(args)
    starts = state["epoch_start_cpu"] + [state["end_cpu"]]
    res = {"budget": budget, "epochs_run": len(state["epoch_start_cpu"]), "stop_reason": state["stop_reason"],
           "train_cpu_s": state["end_cpu"], "setup_cpu_s": state["first_epoch_cpu"],
           "epoch_cpu_s": [b - a for a, b in zip(starts[:-1], starts[1:])], "val_loss": state["val_loss"],
           "budget_snapshot": state["snapshot"], "process_cpu_s": time.process_time()}
    (work / "budget.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    driver_main(sys.argv[1:])
