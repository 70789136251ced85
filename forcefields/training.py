"""Training lawful force fields on labelled structures: :func:`train`.

Loss (per batch):

    w_E * mean_s ((E_s - E_s^ref) / N_s)^2  +  w_F * mean_{i,a} (F_ia - F_ia^ref)^2
    + w_S * mean_s,ab (sigma_s,ab - sigma_s,ab^ref)^2

i.e. energies are compared per atom (so large and small cells weigh the same). Before the first
epoch the model's normalisation is fitted on the training split: per-species reference energies by
least squares on the composition, descriptor mean/std, and the output scale (the RMS force
component). Adam with a reduce-on-plateau learning-rate schedule, early stopping on the
validation loss (the best weights are restored at the end), deterministic shuffling (the order of
epoch k depends only on ``seed`` and k), a tqdm progress bar with live metrics, an optional JSON
lines log, and a checkpoint written atomically after every epoch
(:func:`lawful.kernels.checkpoint.save_checkpoint`): after an interruption the same call with
``resume=True`` continues from the last finished epoch and ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lawful.kernels.errors import InputError, ModelFileError

from lawful.forcefields.base import AtomisticModel
from lawful.forcefields.batch import Batch, pair_min_distances

__all__ = ["train", "load_frames", "prepare", "evaluate_errors"]


def load_frames(data) -> list:
    """``data``: a list of labelled ``ase.Atoms``, or a path to an extxyz file or ASE database."""
    if isinstance(data, (str, os.PathLike)):
        from lawful.forcefields.reference import read_db, read_extxyz

        p = os.fspath(data)
        return read_db(p) if (p.endswith(".db") or "://" in p) else read_extxyz(p)
    frames = list(data)
    if not frames:
        raise InputError("no training data: pass labelled ase.Atoms or a data file.")
    return frames


def prepare(model: AtomisticModel, frames: Sequence) -> list[tuple[Batch, dict]]:
    """One cached single-structure :class:`Batch` (neighbour pairs found once) and its targets
    (energy eV, forces (N,3) eV/Å, stress (3,3) eV/Å^3 or None) per labelled frame."""
    out = []
    for k, a in enumerate(frames):
        if a.calc is None:
            raise InputError(f"frame {k} has no labels: label it first (lawful.forcefields.reference.label).")
        res = a.calc.results
        if "energy" not in res or "forces" not in res:
            raise InputError(f"frame {k} lacks energy or forces labels (has {sorted(res)}).")
        b = model.make_batch([a])
        t = {"energy": torch.tensor(float(res["energy"]), dtype=model.dtype),
             "forces": torch.as_tensor(np.asarray(res["forces"]), dtype=model.dtype)}
        s = res.get("stress")
        if s is not None and all(a.pbc):
            s = np.asarray(s)
            if s.shape == (6,):
                xx, yy, zz, yz, xz, xy = s
                s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            t["stress"] = torch.as_tensor(s, dtype=model.dtype)
        out.append((b, t))
    return out


def _collate(items: Sequence[tuple[Batch, dict]], device) -> tuple[Batch, dict]:
    batch = Batch.concatenate([b for b, _ in items]) if len(items) > 1 else items[0][0]
    e = torch.stack([t["energy"] for _, t in items])
    f = torch.cat([t["forces"] for _, t in items])
    has_s = torch.tensor([("stress" in t) for _, t in items])
    s = torch.stack([t.get("stress", torch.zeros(3, 3, dtype=e.dtype)) for _, t in items])
    tg = {"energy": e.to(device), "forces": f.to(device), "stress": s.to(device), "has_stress": has_s.to(device)}
    return batch.to(device=device), tg


def _fit_normalisation(model: AtomisticModel, items) -> None:
    n_s = len(model.species)
    comp = np.zeros((len(items), n_s))
    energies = np.zeros(len(items))
    for k, (b, t) in enumerate(items):
        comp[k] = np.bincount(b.species.cpu().numpy(), minlength=n_s)
        energies[k] = float(t["energy"])
    # Ridge-regularised least squares for the per-species reference energies.
    reg = 1e-8 * np.eye(n_s) * max(1.0, float((comp ** 2).sum()))
    e0 = np.linalg.solve(comp.T @ comp + reg, comp.T @ energies)
    dev = model.device
    model.reference_energies.copy_(torch.as_tensor(e0, dtype=model.dtype, device=dev))
    with torch.no_grad():
        feats = []
        for b, _ in items:
            b = b.to(device=dev)
            from lawful.forcefields.potential import strained_geometry

            _, vec = strained_geometry(b, b.positions, None)
            feats.append(model.descriptor(vec, b.edge_i, b.species.index_select(0, b.edge_j), b.positions.shape[0]))
        f = torch.cat(feats)
        model.feature_mean.copy_(f.mean(0))
        model.feature_std.copy_(f.std(0).clamp_min(1e-6 * float(f.std(0).max()) + 1e-12))
    forces = torch.cat([t["forces"].reshape(-1) for _, t in items])
    rms = float(torch.sqrt((forces ** 2).mean())) if forces.numel() else 0.0
    resid = energies - comp @ e0
    per_atom = resid / comp.sum(1)
    scale = rms if rms > 0 else float(np.std(per_atom)) or 1.0
    model.energy_scale.fill_(scale)
    if hasattr(model, "force_scale"):
        model.force_scale.fill_(rms if rms > 0 else 1.0)


def evaluate_errors(model: AtomisticModel, items, batch_size: int = 16) -> dict:
    """Validation metrics of ``model`` on prepared ``items``: energy MAE/RMSE per atom (eV/atom),
    force MAE/RMSE per component (eV/Å), stress MAE (eV/Å^3, frames with stress only)."""
    de, df, ds = [], [], []
    dev = model.device
    for k in range(0, len(items), batch_size):
        b, t = _collate(items[k:k + batch_size], dev)
        with_stress = bool(t["has_stress"].all()) and bool(b.pbc.all())
        out = model.evaluate_batch(b, forces=True, stress=with_stress)
        de.append(((out["energy"] - t["energy"]) / b.n_atoms.to(out["energy"].dtype)).detach())
        df.append((out["forces"] - t["forces"]).reshape(-1).detach())
        if with_stress:
            ds.append((out["stress"] - t["stress"]).reshape(-1).detach())
    de_t, df_t = torch.cat(de), torch.cat(df)
    res = {"energy_mae_per_atom": float(de_t.abs().mean()), "energy_rmse_per_atom": float(de_t.pow(2).mean().sqrt()),
           "force_mae": float(df_t.abs().mean()), "force_rmse": float(df_t.pow(2).mean().sqrt())}
    if ds:
        res["stress_mae"] = float(torch.cat(ds).abs().mean())
    return res


def _loss(model, b: Batch, t: dict, w_e: float, w_f: float, w_s: float) -> torch.Tensor:
    use_stress = w_s > 0 and bool(t["has_stress"].any()) and bool(b.pbc.all())
    out = model.evaluate_batch(b, forces=True, stress=use_stress, training=True)
    n = b.n_atoms.to(out["energy"].dtype)
    loss = w_e * (((out["energy"] - t["energy"]) / n) ** 2).mean()
    loss = loss + w_f * ((out["forces"] - t["forces"]) ** 2).mean()
    if use_stress:
        m = t["has_stress"]
        loss = loss + w_s * ((out["stress"][m] - t["stress"][m]) ** 2).mean()
    return loss


def _fingerprint(frames) -> str:
    h = hashlib.sha256()
    for a in frames:
        h.update(np.ascontiguousarray(a.numbers, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(a.positions, dtype=np.float64).round(10).tobytes())
    return h.hexdigest()[:16]


def train(model: AtomisticModel, data, *, validation=None, val_fraction: float = 0.1, epochs: int = 100,
          batch_size: int = 8, lr: float = 3e-3, lr_factor: float = 0.5, lr_patience: int = 5,
          min_lr: float = 1e-5, patience: int = 20, energy_weight: float = 1.0, force_weight: float = 1.0,
          stress_weight: float = 0.0, weight_decay: float = 0.0, checkpoint: str | os.PathLike | None = None,
          resume: bool = True, seed: int = 0, progress: bool = True, log: str | os.PathLike | None = None,
          max_time: float | None = None, on_batch: Callable[[int, int], None] | None = None) -> dict:
    """Fit ``model`` (a NeuralPotential or DirectForceModel) to labelled structures, in place.

    data: labelled ``ase.Atoms`` (energy, forces, optionally stress) or a path (extxyz / ASE db);
    validation: a separate validation set, else a seeded random ``val_fraction`` of ``data``.
    Weights: ``energy_weight`` on (eV/atom)^2, ``force_weight`` on (eV/Å)^2 per component,
    ``stress_weight`` on (eV/Å^3)^2. Adam(lr, weight_decay); the learning rate is multiplied by
    ``lr_factor`` after ``lr_patience`` epochs without validation improvement; training stops
    after ``patience`` such epochs, when the learning rate falls below ``min_lr``, after ``epochs``
    epochs or after ``max_time`` seconds. ``checkpoint``: file written atomically every epoch;
    with ``resume`` an existing checkpoint for the same model and data is continued.
    ``on_batch(epoch, step)`` is called after every optimiser step.

    Returns the training summary (also stored as ``model.training_summary`` and saved with the
    model): validation energy MAE per atom (eV/atom), force MAE (eV/Å), epochs, timings, history.
    Sets ``model.pair_min_distance`` (Å, per species pair) from the training frames: the
    training domain the engine adapters check structures against.
    """
    frames = load_frames(data)
    if validation is not None:
        train_frames, val_frames = frames, load_frames(validation)
    else:
        if not 0.0 < val_fraction < 1.0 or len(frames) < 2:
            raise InputError(f"val_fraction={val_fraction} with {len(frames)} frames leaves no train or "
                             "validation set: use 0 < val_fraction < 1 and at least 2 frames, or pass validation=.")
        perm = np.random.default_rng(seed).permutation(len(frames))
        n_val = max(1, int(round(val_fraction * len(frames))))
        val_frames = [frames[k] for k in sorted(perm[:n_val])]
        train_frames = [frames[k] for k in sorted(perm[n_val:])]
    fingerprint = _fingerprint(train_frames) + _fingerprint(val_frames)
    dev = model.device
    train_items = prepare(model, train_frames)
    val_items = prepare(model, val_frames)
    # the training domain, saved with the model: the engine adapters warn below these distances
    model.pair_min_distance = pair_min_distances(Batch.concatenate([b for b, _ in train_items]), model.species)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=lr_factor, patience=lr_patience)
    state = {"epoch": -1, "best_loss": math.inf, "best_state": None, "bad_epochs": 0, "history": [],
             "train_time_s": 0.0, "train_cpu_s": 0.0}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint
    if ckpt is not None and resume and ckpt.exists():
        saved = load_checkpoint(ckpt)
        if saved.get("kind") != model.kind or saved.get("config") != json.dumps(model.config, sort_keys=True):
            raise ModelFileError(f"checkpoint {str(ckpt)!r} belongs to another model ({saved.get('kind')}, "
                                 f"{saved.get('config')}); delete it or pass resume=False.")
        if saved.get("fingerprint") != fingerprint:
            raise ModelFileError(f"checkpoint {str(ckpt)!r} was written for other training data; delete it, "
                                 "pass resume=False, or train on the same data/seed.")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = {k: saved.get(k, v) for k, v in state.items()}
        state["history"] = json.loads(saved["history"])
    else:
        with torch.no_grad():
            _fit_normalisation(model, train_items)

    log_f = open(log, "a", buffering=1) if log is not None else None
    first = state["epoch"] + 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=first, desc=f"train {model.kind}", unit="epoch", dynamic_ncols=True)
    stop_reason = "epochs"
    t_start = time.perf_counter()
    try:
        for epoch in range(first, epochs):
            if state["bad_epochs"] >= patience:
                stop_reason = "early_stopping"
                break
            if opt.param_groups[0]["lr"] < min_lr:
                stop_reason = "min_lr"
                break
            if max_time is not None and state["train_time_s"] >= max_time:
                stop_reason = "max_time"
                break
            t0, c0 = time.perf_counter(), time.process_time()
            model.train()
            g = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
            order = torch.randperm(len(train_items), generator=g).tolist()
            total, n_b = 0.0, 0
            for step, k in enumerate(range(0, len(order), batch_size)):
                b, t = _collate([train_items[q] for q in order[k:k + batch_size]], dev)
                opt.zero_grad(set_to_none=True)
                loss = _loss(model, b, t, energy_weight, force_weight, stress_weight)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                n_b += 1
                if on_batch is not None:
                    on_batch(epoch, step)
            model.eval()
            metrics = evaluate_errors(model, val_items)
            val_loss = (energy_weight * metrics["energy_rmse_per_atom"] ** 2 + force_weight * metrics["force_rmse"] ** 2)
            sched.step(val_loss)
            if val_loss < state["best_loss"]:
                state["best_loss"] = val_loss
                state["best_state"] = copy.deepcopy(model.state_dict())
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
            state["train_time_s"] += time.perf_counter() - t0
            state["train_cpu_s"] += time.process_time() - c0
            state["epoch"] = epoch
            row = {"epoch": epoch, "train_loss": total / max(n_b, 1), "val_loss": val_loss,
                   "lr": opt.param_groups[0]["lr"], **{f"val_{k}": v for k, v in metrics.items()}}
            state["history"].append(row)
            if ckpt is not None:
                save_checkpoint(ckpt, {"kind": model.kind, "config": json.dumps(model.config, sort_keys=True),
                                       "fingerprint": fingerprint, "model": model.state_dict(),
                                       "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                       **{k: v for k, v in state.items() if k != "history"},
                                       "history": json.dumps(state["history"])})
            if log_f is not None:
                log_f.write(json.dumps(row) + "\n")
                log_f.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3g}", E=f"{1e3 * metrics['energy_mae_per_atom']:.2f}meV/at",
                                F=f"{1e3 * metrics['force_mae']:.1f}meV/A", lr=f"{row['lr']:.1e}")
        else:
            stop_reason = "epochs"
    finally:
        if bar is not None:
            bar.close()
        if log_f is not None:
            log_f.close()
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    final = evaluate_errors(model, val_items)
    summary = {
        "kind": model.kind, "n_train": len(train_items), "n_val": len(val_items),
        "n_train_atoms": int(sum(int(b.n_atoms.sum()) for b, _ in train_items)),
        "epochs_run": state["epoch"] + 1, "stop_reason": stop_reason,
        "val_energy_mae_per_atom_eV": final["energy_mae_per_atom"], "val_force_mae_eV_per_A": final["force_mae"],
        "val_energy_rmse_per_atom_eV": final["energy_rmse_per_atom"], "val_force_rmse_eV_per_A": final["force_rmse"],
        "val_stress_mae_eV_per_A3": final.get("stress_mae"),
        "train_time_s": state["train_time_s"], "train_cpu_s": state["train_cpu_s"],
        "wall_time_this_call_s": time.perf_counter() - t_start,
        "weights": {"energy": energy_weight, "forces": force_weight, "stress": stress_weight},
        "seed": seed, "batch_size": batch_size, "lr": lr, "data_fingerprint": fingerprint,
        "history": state["history"],
    }
    model.training_summary = summary
    return summary
