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
uninterrupted run. The loop itself is the shared training core
(:mod:`lawful.kernels.training_core`).

Data parallel: started by ``torchrun`` (RANK / WORLD_SIZE in the environment), every process
takes every ``world_size``-th structure of each global batch of ``batch_size`` (the order is the
seeded one above, identical on all ranks), the model runs inside ``DistributedDataParallel``
(gloo on CPU, NCCL on CUDA) and the loss of each rank's share is normalised by the counts of the
*global* batch, so the weights equal those of one process (forces are gradients of the energy:
the loss's backward is a double backward through DDP's hooks, which works). Validation is
sharded and all-reduced. Rank 0 alone writes the checkpoint and the log; all ranks resume from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch

from lawful.kernels.errors import InputError, ModelFileError
from lawful.kernels.training_core import Hooks, Loop, LoopConfig, check_ema_decay, check_grad_clip

from lawful.forcefields.base import AtomisticModel
from lawful.forcefields.batch import Batch, pair_min_distances

__all__ = ["train", "load_frames", "prepare", "evaluate_errors", "refit_reference_energies"]


#: The data files :func:`load_frames` reads, by suffix: ASE's extended XYZ, its trajectory and its
#: database (a path ending in ``.db`` or any ``ase.db`` URL with ``://``).
DATA_FORMATS = {".extxyz": "extxyz", ".xyz": "extxyz", ".traj": "traj", ".db": "db"}


def data_format(path: str) -> str:
    """The format :func:`load_frames` reads ``path`` in: by suffix (:data:`DATA_FORMATS`), ``"db"``
    for an ``ase.db`` URL; a path of another suffix is recognised by its content
    (``ase.io.formats.filetype``) when it is one of these formats, else :class:`InputError`."""
    if "://" in path:
        return "db"
    suffix = os.path.splitext(path)[1].lower()
    if suffix in DATA_FORMATS:
        return DATA_FORMATS[suffix]
    from ase.io.formats import filetype

    try:
        kind = filetype(path, guess=False)
    except Exception:      # unknown or unreadable content
        kind = None
    if kind in ("extxyz", "traj", "db"):
        return kind
    try:                    # (ext)xyz has no magic number: its first line is the atom count
        with open(path, "rb") as fh:
            if fh.readline().strip().isdigit():
                return "extxyz"
    except OSError:
        pass
    raise InputError(f"data file {path!r} (suffix {suffix or 'none'!r}) is not a format lawful reads labelled "
                     f"frames from: use extended XYZ (.extxyz/.xyz), an ASE trajectory (.traj) or an ASE database "
                     "(.db); convert others with ase.io.read/ase.io.write.")


def load_frames(data, what: str = "training") -> list:
    """``data``: a list of labelled ``ase.Atoms``, or a path to a data file: extended XYZ
    (``.extxyz``/``.xyz``), ASE trajectory (``.traj``; labels come back as a
    SinglePointCalculator) or ASE database (``.db`` or an ``ase.db`` URL) -- :func:`data_format`.
    ``what`` ("training"/"validation") names the data in errors. A missing or unreadable file, or
    one that holds no frame, is an :class:`InputError`."""
    if isinstance(data, (str, os.PathLike)):
        from lawful.forcefields.reference import read_db, read_extxyz

        p = os.fspath(data)
        if "://" not in p and not os.path.isfile(p):
            raise InputError(f"{what} data file {p!r} does not exist (or is not a file).")
        fmt = data_format(p)
        try:
            if fmt == "db":
                frames = read_db(p)
            elif fmt == "extxyz":
                frames = read_extxyz(p)
            else:
                from ase.io import read

                frames = list(read(p, index=":", format=fmt))
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{what} data file {p!r} could not be read as {fmt} ({type(e).__name__}: {e}); "
                             "check that the file is complete and of that format.") from e
        if not frames:
            raise InputError(f"{what} data file {p!r} holds no frames.")
        return frames
    frames = list(data)
    if not frames:
        raise InputError(f"no {what} data: pass labelled ase.Atoms or a data file.")
    return frames


def _label_keys(a) -> list[str]:
    """The names in ``a``'s calculator results, ``info`` and ``arrays`` that look like labels."""
    words = ("energy", "force", "stress", "virial")
    found = [f"results[{k!r}]" for k in sorted(a.calc.results)] if a.calc is not None else []
    for where, keys in (("info", a.info), ("arrays", a.arrays)):
        found += [f"{where}[{k!r}]" for k in sorted(keys) if any(w in k.lower() for w in words)]
    return found


#: a frame's ``energy`` and ``free_energy`` labels closer than this per atom (eV) are the same label
SAME_ENERGY_EV_PER_ATOM = 1e-6


def energy_label(results: dict, n_atoms: int) -> str | None:
    """The name of the calculator result a frame's energy target is read from: ``free_energy`` when
    the frame has it and it differs from ``energy`` (by more than :data:`SAME_ENERGY_EV_PER_ATOM`
    per atom) or has no ``energy``, else ``energy``; None with neither. ASE's forces are the
    derivative of ``free_energy`` (with electronic smearing, as VASP's TOTEN; ``energy`` is then
    the sigma -> 0 extrapolation, not the energy the forces belong to)."""
    if "free_energy" in results and ("energy" not in results or abs(
            float(results["free_energy"]) - float(results["energy"])) > SAME_ENERGY_EV_PER_ATOM * max(n_atoms, 1)):
        return "free_energy"
    return "energy" if "energy" in results else None


def _energy_labels(frames) -> dict:
    """``{"energy": n, "free_energy": m}``: the frames whose energy target is each label."""
    counts = {"energy": 0, "free_energy": 0}
    for a in frames:
        key = energy_label(a.calc.results if a.calc is not None else {}, len(a))
        if key is not None:
            counts[key] += 1
    return counts


def _warn_free_energy(frames, what: str) -> None:
    """Say when frames carry both energies, differing: which one lawful fits and why."""
    gaps = [abs(float(a.calc.results["free_energy"]) - float(a.calc.results["energy"])) / len(a) for a in frames
            if a.calc is not None and "energy" in a.calc.results
            and energy_label(a.calc.results, len(a)) == "free_energy"]
    if gaps:
        warnings.warn(f"{len(gaps)} of {len(frames)} {what} frames carry 'energy' and 'free_energy' labels that differ "
                      f"(by up to {1e3 * max(gaps):.3g} meV/atom: electronic smearing?): lawful fits free_energy, the "
                      "energy whose derivative the forces are (ASE's convention; VASP's TOTEN), so that energy and "
                      "force targets agree. To fit the other, remove free_energy from those frames' results.",
                      UserWarning, stacklevel=3)


def _missing_labels(k: int, a, what: str) -> InputError:
    res = a.calc.results if a.calc is not None else {}
    found = _label_keys(a)
    head = f"frame {k} of the {what} data"
    if not found:
        return InputError(f"{head} has no labels: label it first (lawful.forcefields.reference.label).")
    return InputError(
        f"{head} lacks the energy and forces labels lawful reads (ASE calculator results 'energy', 'forces', "
        f"optionally 'stress'); it has {found}. Rename them to the ASE names, e.g. a.calc = "
        "SinglePointCalculator(a, energy=a.info['REF_energy'], forces=a.arrays['REF_forces']), or with a plain "
        "extxyz file rename the columns/keys to energy/forces/stress.")


def _stress_label(a, res) -> np.ndarray | None:
    """The (3, 3) stress label (eV/Å^3, ASE's sign) of a periodic frame, or None: ASE ``stress``
    (Voigt xx yy zz yz xz xy or 3x3), else a ``virial`` (eV; 3x3, 9 or Voigt 6; results or info),
    the GAP/ACE/MACE extxyz convention, converted by ``stress = -virial / volume``."""
    if not all(a.pbc):
        return None
    s = res.get("stress")
    sign, scale = 1.0, 1.0
    if s is None:
        s = res.get("virial", a.info.get("virial"))
        if s is None:
            return None
        sign, scale = -1.0, 1.0 / a.get_volume()
    s = np.asarray(s, dtype=np.float64)
    if s.shape == (9,):
        s = s.reshape(3, 3)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.shape != (3, 3):
        raise InputError(f"a stress/virial label of shape {s.shape}: give 6 (Voigt), 9 or 3x3 numbers.")
    return sign * scale * s


def _check_species(model, frames, what: str) -> None:
    from lawful.kernels.errors import UnsupportedSpeciesError
    from ase.data import chemical_symbols

    known = set(model.species)
    for k, a in enumerate(frames):
        unknown = sorted({chemical_symbols[z] for z in np.unique(a.numbers)} - known)
        if unknown:
            raise UnsupportedSpeciesError(
                unknown, model.species,
                message=f"frame {k} of the {what} data holds {unknown}, which the model (species "
                        f"{list(model.species)}) does not cover: build the model with species="
                        f"{sorted(known | set(unknown))} (command line: --species "
                        f"{' '.join(sorted(known | set(unknown)))}, or leave --species out to take them from "
                        "the data), or drop those frames.")


def prepare(model: AtomisticModel, frames: Sequence, what: str = "training") -> list[tuple[Batch, dict]]:
    """One cached single-structure :class:`Batch` (neighbour pairs found once, for all frames in one
    build) and its targets (energy eV, forces (N,3) eV/Å, stress (3,3) eV/Å^3 for periodic frames
    with a ``stress`` or ``virial`` label -- :func:`_stress_label`) per labelled frame.

    Refused with an error naming the frame and ``what`` ("training"/"validation") data: an element
    the model does not cover (:class:`UnsupportedSpeciesError`), missing energy or forces labels
    (naming the label-like keys found), forces of the wrong shape, and non-finite energy, forces or
    stress labels (a NaN label in the validation frames would otherwise silently disable the choice
    of the best epoch and the early stop)."""
    targets = _targets(model, frames, what)
    # the pairs of all frames from one neighbour-list build (lawful.forcefields.batch.batched_pairs)
    singles = model.make_batch(list(frames)).split() if len(frames) > 1 else [model.make_batch(list(frames))]
    out = []
    for t, b in zip(targets, singles):
        out.append((b, {name: torch.as_tensor(v, dtype=model.dtype) for name, v in t.items()}))
    return out


def _targets(model, frames, what: str) -> list[dict]:
    """The checks of :func:`prepare` and its targets as float64 numpy arrays."""
    _check_species(model, frames, what)
    targets = []
    for k, a in enumerate(frames):
        res = a.calc.results if a.calc is not None else {}
        key = energy_label(res, len(a))
        if key is None or "forces" not in res:
            raise _missing_labels(k, a, what)
        t = {"energy": np.asarray(res[key], dtype=np.float64), "forces": np.asarray(res["forces"], dtype=np.float64)}
        if t["forces"].shape != (len(a), 3):
            raise InputError(f"frame {k} of the {what} data has forces of shape {t['forces'].shape} for {len(a)} "
                             f"atoms: need ({len(a)}, 3).")
        s = _stress_label(a, res)
        if s is not None:
            t["stress"] = s
        for name, v in t.items():
            if not np.isfinite(v).all():
                raise InputError(f"frame {k} of the {what} data has a non-finite {name} label "
                                 f"({v.ravel()[~np.isfinite(v.ravel())][0]}): drop or fix that frame (a failed "
                                 "reference calculation?) before training.")
        targets.append(t)
    return targets


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
    from lawful.forcefields.potential import strained_geometry

    # one pass per layer: a layer's features depend on the statistics of the layer before it
    for _ in range(getattr(model, "feature_stages", 1)):
        with torch.no_grad():
            feats = []
            for b, _ in items:
                b = b.to(device=dev)
                _, vec = strained_geometry(b, b.positions, None)
                feats.append(model.features(b.positions, b.species, b.edge_i, b.edge_j, vec))
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


def refit_reference_energies(model: AtomisticModel, data, batch_size: int = 16) -> dict:
    """Shift the per-species reference energies ``e0`` of a trained ``model`` (in place) so that
    its energy residuals on ``data`` have the least squares per atom; forces, stress and every
    energy difference at fixed composition are unchanged (a constant per atom of each species).

    A model trained further on new frames of one molecule can drift in the absolute energy of
    the others: ``organic-xtb``'s fifth stage, alanine dipeptide frames only in what was new,
    left the water monomer 1.9 meV/atom low on average (its spread 0.3) though its forces
    improved. This is mace-torch's E0 fit done after training: the residuals ``E_ref - E_model``
    of every frame, weighted by 1/N² (per-atom errors), solved by ridge-regularised least squares
    for one shift per species. ``data``: labelled frames (as :func:`train` takes). Returns
    ``{"shift_eV": {symbol: ...}, "mean_residual_meV_per_atom_before": ..., "..._after": ...}``.
    """
    items = prepare(model, load_frames(data))
    n_s = len(model.species)
    comp = np.zeros((len(items), n_s))
    resid = np.zeros(len(items))
    dev = model.device
    for k0 in range(0, len(items), batch_size):
        chunk = items[k0:k0 + batch_size]
        b, t = _collate(chunk, dev)
        with torch.no_grad():
            e = model.evaluate_batch(b, forces=False)["energy"].detach().double().cpu().numpy()
        for k, (bk, tk) in enumerate(chunk):
            comp[k0 + k] = np.bincount(bk.species.cpu().numpy(), minlength=n_s)
            resid[k0 + k] = float(tk["energy"]) - e[k]
    n = comp.sum(1)
    a, y = comp / n[:, None], resid / n              # per-atom rows: weight 1/N^2 in squares
    reg = 1e-10 * np.eye(n_s) * max(1.0, float((a ** 2).sum()))
    shift = np.linalg.solve(a.T @ a + reg, a.T @ y)
    before = float(np.mean(y))
    model.reference_energies.add_(torch.as_tensor(shift, dtype=model.reference_energies.dtype, device=dev))
    after = float(np.mean(y - a @ shift))
    return {"shift_eV": {sym: float(v) for sym, v in zip(model.species, shift)},
            "mean_residual_meV_per_atom_before": 1e3 * before, "mean_residual_meV_per_atom_after": 1e3 * after,
            "rms_residual_meV_per_atom_before": 1e3 * float(np.sqrt(np.mean(y ** 2))),
            "rms_residual_meV_per_atom_after": 1e3 * float(np.sqrt(np.mean((y - a @ shift) ** 2))),
            "n_frames": len(items)}


def _evaluate(model: AtomisticModel, b: Batch, stress: bool, training: bool) -> dict:
    """Energy, forces and (``stress``) stress of a collated batch. A batch that mixes periodic
    frames with clusters goes through the model's own pass, whose stress is NaN on the clusters
    (they carry no stress label and are masked out); ``evaluate_batch`` refuses stress there, and
    requiring every frame periodic dropped the stress of every batch that held one cluster."""
    if stress and not bool(b.pbc.all()):
        out = model._evaluate_autograd(b, True, True, training)
        return out if training else {k: v.detach() for k, v in out.items()}
    return model.evaluate_batch(b, forces=True, stress=stress, training=training)


def _error_sums(model: AtomisticModel, items, batch_size: int) -> torch.Tensor:
    """(9,) float64 sums over ``items``: |dE/N|, (dE/N)^2, structures, |dF|, dF^2, force
    components, |dsigma|, stress components, dsigma^2 (frames with stress only)."""
    sums = torch.zeros(9, dtype=torch.float64)
    dev = model.device
    for k in range(0, len(items), batch_size):
        b, t = _collate(items[k:k + batch_size], dev)
        with_stress = bool(t["has_stress"].any())     # the frames with a stress label (periodic ones)
        out = _evaluate(model, b, with_stress, training=False)
        de = ((out["energy"] - t["energy"]) / b.n_atoms.to(out["energy"].dtype)).detach().double().cpu()
        df = (out["forces"] - t["forces"]).reshape(-1).detach().double().cpu()
        sums[0:3] += torch.stack([de.abs().sum(), de.pow(2).sum(), torch.tensor(float(de.numel()))])
        sums[3:6] += torch.stack([df.abs().sum(), df.pow(2).sum(), torch.tensor(float(df.numel()))])
        if with_stress:
            m = t["has_stress"]
            ds = (out["stress"][m] - t["stress"][m]).reshape(-1).detach().double().cpu()
            sums[6:9] += torch.stack([ds.abs().sum(), torch.tensor(float(ds.numel())), ds.pow(2).sum()])
    return sums


def _metrics(sums: torch.Tensor) -> dict:
    s = sums.tolist()
    res = {"energy_mae_per_atom": s[0] / s[2], "energy_rmse_per_atom": math.sqrt(s[1] / s[2]),
           "force_mae": s[3] / s[5], "force_rmse": math.sqrt(s[4] / s[5])}
    if s[7] > 0:
        res["stress_mae"] = s[6] / s[7]
        res["stress_rmse"] = math.sqrt(s[8] / s[7])
    return res


def evaluate_errors(model: AtomisticModel, items, batch_size: int = 16, ctx=None) -> dict:
    """Validation metrics of ``model`` on prepared ``items``: energy MAE/RMSE per atom (eV/atom),
    force MAE/RMSE per component (eV/Å), stress MAE (eV/Å^3, frames with stress only).

    ``ctx``: a :class:`~lawful.kernels.distributed.DistContext`; when distributed each rank
    evaluates every ``world_size``-th item and the sums are all-reduced (same result everywhere).
    """
    from lawful.kernels import distributed as dist

    if ctx is not None and ctx.distributed:
        sums = _error_sums(model, items[ctx.rank::ctx.world_size], batch_size).to(model.device)
        sums = dist.all_reduce_sum(sums, ctx).cpu()
    else:
        sums = _error_sums(model, items, batch_size)
    return _metrics(sums)


def _loss_terms(model, b: Batch, t: dict, weights: tuple[float, float, float], norms: dict,
                huber_delta: float | None = None) -> torch.Tensor:
    """This shard's part of the global-batch loss: sums of squared errors divided by the *global*
    counts in ``norms`` (structures, force components, stress components), so the parts of all
    ranks add up to the loss of the whole batch."""
    w_e, w_f, w_s = weights
    use_stress = norms["use_stress"]
    out = _evaluate(model, b, use_stress, training=True)
    n = b.n_atoms.to(out["energy"].dtype)
    loss = w_e * (((out["energy"] - t["energy"]) / n) ** 2).sum() / norms["structures"]
    err = out["forces"] - t["forces"]
    if huber_delta is None:
        f_terms = err ** 2
    else:   # 2 * Huber: e^2 inside delta, linear outside (same scale as the squared error)
        f_terms = 2.0 * torch.nn.functional.huber_loss(err, torch.zeros_like(err), reduction="none", delta=huber_delta)
    loss = loss + w_f * f_terms.sum() / norms["force_components"]
    if use_stress:
        m = t["has_stress"]
        loss = loss + w_s * ((out["stress"][m] - t["stress"][m]) ** 2).sum() / norms["stress_components"]
    return loss


def _norms(items, w_s: float) -> dict:
    """Global counts of one batch (identical on every rank: each knows the whole global batch)."""
    n_struct = len(items)
    n_atoms = sum(int(b.positions.shape[0]) for b, _ in items)
    with_s = sum(1 for _, t in items if "stress" in t)      # prepare() keeps stress of periodic frames only
    return {"structures": float(n_struct), "force_components": float(3 * n_atoms),
            "stress_components": float(9 * with_s), "use_stress": bool(w_s > 0 and with_s > 0)}


def _fingerprint(frames) -> str:
    """The frames' atoms and positions (the ``data_fingerprint`` a model's training summary records)."""
    h = hashlib.sha256()
    for a in frames:
        h.update(np.ascontiguousarray(a.numbers, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(a.positions, dtype=np.float64).round(10).tobytes())
    return h.hexdigest()[:16]


def _labels_fingerprint(frames) -> str:
    """What :func:`_fingerprint` leaves out: each frame's cell, periodicity and labels (energy,
    forces, stress). A checkpoint records it, so relabelled data is never resumed from one."""
    h = hashlib.sha256()
    for a in frames:
        h.update(np.ascontiguousarray(a.cell[:], dtype=np.float64).round(10).tobytes())
        h.update(np.asarray(a.pbc, dtype=bool).tobytes())
        res = a.calc.results if a.calc is not None else {}
        for key in (energy_label(res, len(a)), "forces", "stress"):    # the energy the targets are read from
            if key in res:
                h.update(key.encode())
                h.update(np.ascontiguousarray(np.asarray(res[key], dtype=np.float64)).round(10).tobytes())
        if "stress" not in res and "virial" in a.info:      # read as the stress label (prepare)
            h.update(b"virial")
            h.update(np.ascontiguousarray(np.asarray(a.info["virial"], dtype=np.float64)).round(10).tobytes())
    return h.hexdigest()[:16]


def _structure_key(a) -> bytes:
    """A frame's structure (atomic numbers, positions to 1e-8 Å, cell, periodicity), labels aside:
    equal keys are the same structure."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(a.numbers, dtype=np.int64).tobytes())
    h.update((np.asarray(a.positions, dtype=np.float64) * 1e8).round().tobytes())
    h.update((np.asarray(a.cell[:], dtype=np.float64) * 1e8).round().tobytes())
    h.update(np.asarray(a.pbc, dtype=bool).tobytes())
    return h.digest()


def _split(frames, val_fraction: float, seed: int):
    """The seeded random split of :func:`train`: ``round(val_fraction * n)`` frames (at least one,
    and at most ``n - 1``: one frame is left to train on) for validation. Exact copies of one structure (:func:`_structure_key`; data concatenated from
    overlapping files) all go to the side their first member in the seeded order was drawn for, so
    that no validation frame has a copy in the training split (a validation error that is a
    training error); data without copies is split as before. Warns with the number of copies."""
    perm = np.random.default_rng(seed).permutation(len(frames))
    # at most n - 1: 4 frames at val_fraction 0.9 drew all 4 for validation, and training failed
    # with "no structures given" (which named neither the split nor val_fraction)
    n_val = min(max(1, int(round(val_fraction * len(frames)))), len(frames) - 1)
    keys = [_structure_key(a) for a in frames]
    side = {}
    for rank, k in enumerate(perm):
        side.setdefault(keys[k], rank < n_val)
    val_frames = [frames[k] for k in range(len(frames)) if side[keys[k]]]
    train_frames = [frames[k] for k in range(len(frames)) if not side[keys[k]]]
    copies = len(frames) - len(side)
    if copies:
        if not train_frames or not val_frames:
            raise InputError(f"the {len(frames)} frames hold only {len(side)} distinct structure(s) ({copies} exact "
                             "copies): no split leaves both a training and a validation set. Remove the copies "
                             "or pass validation=.")
        warnings.warn(f"{copies} of the {len(frames)} frames are exact copies of others (same atoms, positions, "
                      "cell); each structure's copies were kept on one side of the train/validation split "
                      f"({len(train_frames)} training, {len(val_frames)} validation frames). Remove the copies "
                      "unless the repetition is meant as a weight.", UserWarning, stacklevel=3)
    return train_frames, val_frames


def _check_not_same_file(data, validation) -> None:
    """Refuse the training file given again as the validation file."""
    if isinstance(data, (str, os.PathLike)) and isinstance(validation, (str, os.PathLike)):
        a, b = os.fspath(data), os.fspath(validation)
        same = a == b if ("://" in a or "://" in b) else (
            os.path.isfile(a) and os.path.isfile(b) and os.path.samefile(a, b))
        if same:
            raise InputError(f"the validation data {b!r} is the training data file: its validation error would be "
                             "a training error (and would choose the epoch to keep). Pass a separate validation "
                             "file, or leave validation out to hold out a seeded val_fraction of the data.")


def _overlap(train_frames, val_frames) -> int:
    """How many validation frames are exact copies of a training frame (:func:`_structure_key`);
    all of them is an :class:`InputError`, some a warning."""
    keys = {_structure_key(a) for a in train_frames}
    n = sum(_structure_key(a) in keys for a in val_frames)
    if n and n == len(val_frames):
        raise InputError(f"all {n} validation frames are exact copies of training frames (same atoms, positions, "
                         "cell): the validation error would be a training error, and it chooses the epoch kept "
                         "and the early stop. Pass validation frames the training data does not hold, or leave "
                         "validation out to hold out a seeded val_fraction of the data.")
    if n:
        warnings.warn(f"{n} of the {len(val_frames)} validation frames are exact copies of training frames (same "
                      "atoms, positions, cell): their validation error is a training error. Remove them from one "
                      "of the sets; the training summary records the count (val_in_train).",
                      UserWarning, stacklevel=3)
    return n


#: The options a checkpoint must have been written with to be resumed (the run's length and
#: stopping rules -- epochs, patience, min_lr, max_time -- may change: extending a run is fine).
_RESUME_OPTIONS = ("batch_size", "lr", "lr_factor", "lr_patience", "weights", "weight_decay", "seed", "force_loss",
                   "huber_delta", "grad_clip", "fit_normalisation")


# gradients on, also when called inside torch.no_grad() / torch.inference_mode() (weight
# gradients and forces are autograd's; a raw RuntimeError named neither)
@torch.inference_mode(False)
@torch.enable_grad()
def train(model: AtomisticModel, data, *, validation=None, val_fraction: float = 0.1, epochs: int = 100,
          batch_size: int = 8, lr: float = 3e-3, lr_factor: float = 0.5, lr_patience: int = 5,
          min_lr: float = 1e-5, patience: int = 20, energy_weight: float = 1.0, force_weight: float = 1.0,
          stress_weight: float = 0.0, weight_decay: float = 0.0, checkpoint: str | os.PathLike | None = None,
          resume: bool = True, seed: int = 0, progress: bool = True, log: str | os.PathLike | None = None,
          max_time: float | None = None, on_batch: Callable[[int, int], None] | None = None,
          force_loss: str = "mse", huber_delta: float | None = None, grad_clip: float = 0.0,
          fit_normalisation: bool = True, check_labels: bool = True, ema_decay: float = 0.0) -> dict:
    """Fit ``model`` (a NeuralPotential or DirectForceModel) to labelled structures, in place.

    data: labelled ``ase.Atoms`` (energy, forces, optionally stress) or a path (extxyz, ASE
    trajectory or ASE db, :func:`load_frames`). Stress labels: ASE ``stress`` (eV/Å^3) of periodic
    frames, or an extxyz ``virial`` (eV, the GAP/ACE convention) read as ``stress = -virial /
    volume``. validation: a separate validation set, else a seeded random ``val_fraction`` of
    ``data`` (exact copies of one structure stay on one side of the split, with a warning). A
    validation file that is the training file, or validation frames that are all copies of
    training frames, are refused; some copies give a warning and ``val_in_train`` in the summary.
    Energy labels: a frame's ``free_energy`` when it has one that differs from its ``energy``
    (electronic smearing: the forces are its derivative; a warning says so), else ``energy``
    (:func:`energy_label`; counts in the summary's ``energy_labels``).
    Refused before training too (:func:`prepare`, errors naming the frame and the set): elements
    the model does not cover, missing or non-finite labels; a model species with no atom in the
    training frames (with ``fit_normalisation``: it would stay untrained and be evaluated without a
    warning), and ``stress_weight > 0`` with no stress label in the training frames.
    Weights: ``energy_weight`` on (eV/atom)^2, ``force_weight`` on (eV/Å)^2 per component,
    ``stress_weight`` on (eV/Å^3)^2. Adam(lr, weight_decay); the learning rate is multiplied by
    ``lr_factor`` after ``lr_patience`` epochs without validation improvement; training stops
    after ``patience`` such epochs, when the learning rate falls below ``min_lr``, after ``epochs``
    epochs or after ``max_time`` seconds. ``checkpoint``: file written atomically every epoch;
    with ``resume`` an existing checkpoint for the same model and data is continued.
    ``on_batch(epoch, step)`` is called after every optimiser step.
    ``force_loss``: ``"mse"`` (default) or ``"huber"``: per force component ``e^2`` below
    ``huber_delta`` (eV/Å, default 0.1; only with ``"huber"``) and ``2 delta |e| - delta^2``
    above it, so that a few frames with very large forces (rattled or hot configurations) cannot
    dominate the loss. ``grad_clip``: clip the
    gradient norm to this value (0: off), against the rare batch whose gradient explodes.
    ``ema_decay``: validate, keep and return an exponential moving average of the weights,
    updated after every optimiser step (:class:`lawful.kernels.training_core.LoopConfig`; 0: off,
    0.99-0.999 usual): it averages out the last steps' noise of small-batch Adam, as MACE and
    NequIP train by default.
    ``fit_normalisation``: fit the per-species reference energies, feature statistics and scales
    on the training split before the first epoch (default); False keeps the model's own, to go on
    training a trained model (e.g. on more data): refitting them would invalidate its weights.
    ``check_labels``: before anything else, check that the energy and force labels describe one
    potential (:func:`lawful.forcefields.label_consistency.check_label_consistency`: between nearby
    frames the energy differences must be the work of the forces, not -1x it (forces stored as
    gradients) or 23x (energies in kcal/mol), ...; with ``stress_weight > 0`` the stress labels
    across cells too: not -1x (VASP's sign) or 1/160 (GPa)), raising :class:`InputError` naming
    the likely cause; the check's figures go to the summary's ``label_check``. False skips it.

    Returns the training summary (also stored as ``model.training_summary`` and saved with the
    model): validation energy MAE per atom (eV/atom), force MAE (eV/Å), epochs, timings, history,
    the frames with stress labels (``n_train_with_stress``, ``n_val_with_stress``), the training
    atoms per species and ``val_in_train``.
    Sets ``model.pair_min_distance`` (Å, per species pair) from the training frames: the
    training domain the engine adapters check structures against. Going on training a trained
    model (``fit_normalisation=False``) keeps what it learned before: the record becomes the
    smaller distance of the old and the new one per pair, and pairs only the old data had stay.
    A pair of training species that never came within the cutoff in the training frames (Cu-Ag
    in frames of pure Cu and pure Ag, O-O in water monomers) is recorded at the cutoff: the model
    saw no such pair closer, so one closer than ``DOMAIN_TOLERANCE`` x the cutoff is outside its
    domain (:func:`_with_unseen_pairs`).
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError(f"every weight of this {model.kind} is frozen (requires_grad=False), so training would "
                         "change nothing: a model an engine loaded (LawfulCalculator, create_force or MLPotential given "
                         "a path or name) is frozen for speed. Load the file with lawful.forcefields.load_model(path) "
                         "to train it, or call model.requires_grad_(True) first.")
    if force_loss not in ("mse", "huber"):
        raise InputError(f"force_loss={force_loss!r} is not known: pass 'mse' or 'huber'.")
    if force_loss == "mse" and huber_delta is not None:
        raise InputError(f"huber_delta={huber_delta!r} is only used with force_loss='huber' (the squared error "
                         "has no delta): pass force_loss='huber' too, or drop huber_delta.")
    if force_loss == "huber":
        huber_delta = 0.1 if huber_delta is None else huber_delta
        if not (math.isfinite(huber_delta) and huber_delta > 0):
            raise InputError(f"huber_delta={huber_delta!r} must be a positive force in eV/Å, e.g. 0.1.")
    grad_clip = check_grad_clip(grad_clip)
    ema_decay = check_ema_decay(ema_decay)
    frames = load_frames(data)
    _targets(model, frames, "training")     # labels and species first: their errors index the data as given
    label_check = None
    if check_labels:
        from lawful.forcefields.label_consistency import check_label_consistency

        label_check = {"training": check_label_consistency(frames, "training", stress=stress_weight > 0)}
    if validation is not None:
        _check_not_same_file(data, validation)
        train_frames, val_frames = frames, load_frames(validation, "validation")
        if check_labels:
            label_check["validation"] = check_label_consistency(val_frames, "validation", stress=stress_weight > 0)
        overlap = _overlap(train_frames, val_frames)
    else:
        if not 0.0 < val_fraction < 1.0 or len(frames) < 2:
            raise InputError(f"val_fraction={val_fraction} with {len(frames)} frames leaves no train or "
                             "validation set: use 0 < val_fraction < 1 and at least 2 frames, or pass validation=.")
        train_frames, val_frames = _split(frames, val_fraction, seed)
        overlap = 0
    _warn_free_energy(train_frames, "training")
    _warn_free_energy(val_frames, "validation")
    fingerprint = _fingerprint(train_frames) + _fingerprint(val_frames)
    from lawful.kernels import distributed as dist

    ctx = dist.context(model.device)
    summary = _train(model, train_frames, val_frames, fingerprint, ctx, dict(
        epochs=epochs, batch_size=batch_size, lr=lr, lr_factor=lr_factor, lr_patience=lr_patience,
        min_lr=min_lr, patience=patience, weights=(energy_weight, force_weight, stress_weight),
        weight_decay=weight_decay, checkpoint=checkpoint, resume=resume, seed=seed, progress=progress,
        log=log, max_time=max_time, on_batch=on_batch, force_loss=force_loss,
        huber_delta=None if huber_delta is None else float(huber_delta),
        grad_clip=float(grad_clip), fit_normalisation=bool(fit_normalisation), ema_decay=ema_decay,
        labels_fingerprint=_labels_fingerprint(train_frames) + _labels_fingerprint(val_frames),
        val_in_train=overlap, energy_labels=_energy_labels(train_frames), label_check=label_check))
    # leave the process group (if train joined it) only after a clean finish: after an interrupt a
    # peer may be gone, and the process's exit releases the group anyway
    ctx.close()
    return summary


#: how to start afresh from a checkpoint that does not fit (Python and ``lawful train`` alike)
_FRESH_START = ("delete the checkpoint (lawful train: or write to another --out), or pass resume=False to "
                "train()")


class _ForceFieldHooks(Hooks):
    """The force-field task for the training core: epochs over seeded global batches."""

    def __init__(self, model, train_items, val_items, fingerprint: str, opts: dict):
        self.model = model
        self.train_items = train_items
        self.val_items = val_items
        self.fingerprint = fingerprint
        self.opts = opts

    def loss(self, b, t, norms, weight):
        return weight * _loss_terms(self.model, b, t, self.opts["weights"], norms, self.opts["huber_delta"])

    def train_unit(self, loop: Loop, epoch: int) -> dict:
        o = self.opts
        self.model.train()
        g = torch.Generator().manual_seed(int(o["seed"]) * 100_003 + epoch)
        order = torch.randperm(len(self.train_items), generator=g).tolist()
        total = torch.zeros((), dtype=torch.float64, device=self.model.device)
        n_b = 0
        bs = o["batch_size"]
        for step, k in enumerate(range(0, len(order), bs)):
            global_batch = [self.train_items[q] for q in order[k:k + bs]]
            local, weight = loop.shard(global_batch)
            b, t = _collate(local, self.model.device)
            total = total + loop.optimise(b, t, _norms(global_batch, o["weights"][2]), weight).double()
            n_b += 1
            if o["on_batch"] is not None:
                o["on_batch"](epoch, step)
        total = loop.reduce(total)
        return {"epoch": epoch, "train_loss": float(total) / max(n_b, 1)}

    def validate(self, loop: Loop, epoch: int):
        self.model.eval()
        metrics = evaluate_errors(self.model, self.val_items, ctx=loop.ctx)
        w_e, w_f, w_s = self.opts["weights"]
        # the validation score follows the loss: squared RMSE for mse, squared MAE for huber (robust);
        # with a stress weight the stress too (it chooses the best epoch and the early stop)
        f_err = metrics["force_mae"] if self.opts["force_loss"] == "huber" else metrics["force_rmse"]
        val_loss = w_e * metrics["energy_rmse_per_atom"] ** 2 + w_f * f_err ** 2
        if w_s > 0 and "stress_rmse" in metrics:
            val_loss = val_loss + w_s * metrics["stress_rmse"] ** 2
        return val_loss, {"val_loss": val_loss, **{f"val_{k}": v for k, v in metrics.items()}}

    def _options(self) -> str:
        options = {k: self.opts[k] for k in _RESUME_OPTIONS}
        if self.opts.get("ema_decay"):      # only when on: checkpoints of runs without one stay resumable
            options["ema_decay"] = self.opts["ema_decay"]
        return json.dumps(options, sort_keys=True, default=list)

    def identity(self):
        return {"data": self.fingerprint, "labels": self.opts.get("labels_fingerprint"), "options": self._options()}

    def state(self, loop: Loop) -> dict:
        return {"kind": self.model.kind, "config": json.dumps(self.model.config, sort_keys=True),
                "fingerprint": self.fingerprint, "epoch": loop.done - 1,
                "labels": self.opts.get("labels_fingerprint"), "options": self._options(),
                "dtype": str(self.model.dtype).removeprefix("torch.")}

    def check_resume(self, saved: dict, path) -> None:
        if saved.get("kind") != self.model.kind or saved.get("config") != json.dumps(self.model.config,
                                                                                       sort_keys=True):
            raise ModelFileError(f"checkpoint {str(path)!r} belongs to another model ({saved.get('kind')}, "
                                 f"{saved.get('config')}); {_FRESH_START}.")
        if saved.get("fingerprint") != self.fingerprint:
            raise ModelFileError(f"checkpoint {str(path)!r} was written for other training data; "
                                 f"{_FRESH_START}, or train on the same data/seed.")
        # checked when the checkpoint records them (older ones do not): without this, relabelled
        # data or other settings resumed the old run, or handed back its finished weights
        if saved.get("labels") is not None and saved.get("labels") != self.opts.get("labels_fingerprint"):
            raise ModelFileError(f"checkpoint {str(path)!r} was written for the same structures with other labels "
                                 "(energies, forces, stress, cell or periodicity): it would give back a model of the "
                                 f"old labels: {_FRESH_START}.")
        dtype = str(self.model.dtype).removeprefix("torch.")
        if saved.get("dtype") is not None and saved["dtype"] != dtype:
            raise ModelFileError(f"checkpoint {str(path)!r} is of a {saved['dtype']} run, the model is {dtype}: "
                                 "resuming would go on with rounded (or widened) weights and optimiser state, "
                                 f"neither run. Train in the checkpoint's dtype, or {_FRESH_START}.")
        if saved.get("options") is not None and saved.get("options") != self._options():
            raise ModelFileError(f"checkpoint {str(path)!r} was written with other training options "
                                 f"({saved['options']}; now {self._options()}): it would continue, or give back, a "
                                 f"run of those: {_FRESH_START} (epochs, patience, min_lr and "
                                 "max_time may change).")

    def upgrade(self, saved: dict, path) -> dict:
        """A checkpoint of train() before the training core (epoch, best_loss, bad_epochs)."""
        try:
            return {**saved, "done": int(saved["epoch"]) + 1, "best_score": float(saved["best_loss"]),
                    "best_unit": None, "bad_validations": int(saved["bad_epochs"])}
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"checkpoint {str(path)!r} lacks the epoch counters of a lawful training "
                                 f"checkpoint; {_FRESH_START}.") from None

    def postfix(self, row: dict) -> dict:
        return dict(loss=f"{row['train_loss']:.3g}", E=f"{1e3 * row['val_energy_mae_per_atom']:.2f}meV/at",
                    F=f"{1e3 * row['val_force_mae']:.1f}meV/A", lr=f"{row['lr']:.1e}")


def _species_counts(model, items) -> dict:
    """Atoms per model species over ``items`` (prepared frames)."""
    counts = np.zeros(len(model.species), dtype=np.int64)
    for b, _ in items:
        counts += np.bincount(b.species.cpu().numpy(), minlength=len(model.species))
    return {sp: int(c) for sp, c in zip(model.species, counts)}


def _check_training_labels(model, train_items, o: dict) -> dict:
    """Refuse what training cannot do with these frames, before any epoch: a model species with no
    atom in the training frames (its reference energy and network would stay untrained, and the
    model would evaluate it without a warning) when the normalisation is fitted, and a stress
    weight with no stress label to fit. Returns the atoms per species."""
    counts = _species_counts(model, train_items)
    absent = [sp for sp, c in counts.items() if c == 0]
    if absent and o["fit_normalisation"]:
        present = [sp for sp, c in counts.items() if c > 0]
        raise InputError(f"species {absent} of the model have no atom in the {len(train_items)} training frames: "
                         "their reference energies and networks would stay untrained, and the model would "
                         f"evaluate them without a warning. Build the model with species={present} (command line: "
                         "--species, or leave it out to take the species from the data), or add training frames "
                         f"that contain {absent}.")
    n_stress = sum("stress" in t for _, t in train_items)
    if o["weights"][2] > 0 and n_stress == 0:
        raise InputError(f"stress_weight={o['weights'][2]} but none of the {len(train_items)} training frames has a "
                         "stress label lawful can use (a periodic frame with ASE 'stress', eV/Å^3, or an extxyz "
                         "'virial', eV, read as stress = -virial / volume); the stress term would be silently off. "
                         "Pass stress_weight=0 (command line: --stress-weight 0), or add stress labels.")
    return counts


def _with_unseen_pairs(record: dict, model, species_counts: dict) -> dict:
    """``record`` (:func:`~lawful.forcefields.batch.pair_min_distances` of the training frames, Å)
    with every pair of species present in them (``species_counts``: atoms per species) that it
    lacks set to the model's cutoff: no such pair came closer than the cutoff in training.

    Left out, such a pair had no limit and was never out of domain (``domain_limits`` gives it
    0): a model trained on frames of pure Cu and of pure Ag evaluated a Cu-Ag pair 1.0 Å apart
    without a warning, though it never saw a Cu-Ag interaction at any distance."""
    from lawful.forcefields.batch import pair_key

    present = [sp for sp in model.species if species_counts.get(sp, 0) > 0]
    out = dict(record)
    for k, a in enumerate(present):
        for b in present[k:]:
            out.setdefault(pair_key(a, b), float(model.cutoff))
    return out


def _refuse_cutoff_without_pairs(model, frames) -> None:
    """InputError: no two atoms of the training frames are within the model's cutoff, so it would
    learn no interaction at all (a constant energy per atom, zero forces everywhere) -- usually a
    cutoff in nm (0.45 for 4.5 Å). Names the closest pair of the first frames."""
    import numpy as np

    closest = math.inf
    for a in frames[:50]:
        if len(a) > 1:
            d = a.get_all_distances(mic=bool(np.any(a.pbc)))
            closest = min(closest, float(d[~np.eye(len(a), dtype=bool)].min()))
    seen = f"the closest pair in the data is {closest:.3g} Å apart" if math.isfinite(closest) else \
        "every frame holds a single atom"
    raise InputError(f"no two atoms of the training data are within the model's cutoff of {model.cutoff:g} Å ({seen}): "
                     "it would learn no interaction and give zero forces everywhere. The cutoff is in Å "
                     "(4.5 Å, not 0.45 nm): raise it above the nearest-neighbour distance.")


def _record_training_domain(model, batches, fresh: bool) -> None:
    """Set ``model.training_compositions`` and ``model.neighbour_density`` from the training
    batches (merged with the model's own records when training continues: ``fresh`` False)."""
    from lawful.forcefields.domain import batch_neighbour_weights, composition_record, neighbour_density_record

    numbers, densities = [], []
    for b in batches:
        per_structure = torch.bincount(b.batch, minlength=b.n_structures).tolist()
        numbers += [z.tolist() for z in b.numbers.split(per_structure)]
        w = batch_neighbour_weights(b, model.cutoff)
        rho = torch.zeros(b.positions.shape[0], dtype=torch.float64, device=w.device).index_add_(0, b.edge_i, w)
        densities.append((b.species.numpy(force=True), rho.numpy(force=True)))
    old_c = None if fresh else getattr(model, "training_compositions", None)
    old_n = None if fresh else getattr(model, "neighbour_density", None)
    if not fresh and not old_n and getattr(model, "neighbour_counts", None):
        warnings.warn(
            "training continues from a model whose file records neighbour counts but no neighbour density "
            "(written before 2026-12): the density range it gets now covers this run's training frames only, and "
            "the engines check the density, so environments only its earlier data had may be reported as outside "
            "its training domain. Include the earlier training frames to cover them.", UserWarning, stacklevel=3)
    model.training_compositions = composition_record(numbers, model.species, old=old_c)
    model.neighbour_density = neighbour_density_record(densities, model.species, old=old_n)
    if fresh:
        model.neighbour_counts = {}     # the older record (counts), superseded by the density


def _record_training_charges(model, frames, fresh: bool) -> None:
    """Set ``model.training_charges`` from the training frames' stated total charges."""
    from lawful.forcefields.domain import charge_record, structure_charge

    model.training_charges = charge_record([structure_charge(a) for a in frames],
                                           old=None if fresh else getattr(model, "training_charges", None))


def _train(model, train_frames, val_frames, fingerprint: str, ctx, o: dict) -> dict:
    train_items = prepare(model, train_frames, "training")
    val_items = prepare(model, val_frames, "validation")
    species_counts = _check_training_labels(model, train_items, o)
    # the training domain, saved with the model: the engine adapters warn below these distances
    new = pair_min_distances(Batch.concatenate([b for b, _ in train_items]), model.species)
    if not new:
        _refuse_cutoff_without_pairs(model, train_frames)
    new = _with_unseen_pairs(new, model, species_counts)
    old = dict(getattr(model, "pair_min_distance", None) or {}) if not o["fit_normalisation"] else {}
    # replaced, a record from new data alone dropped the pairs only the earlier data had (their
    # structures then went unchecked) and was stricter than what the model had learned
    model.pair_min_distance = {k: min(old.get(k, math.inf), new.get(k, math.inf)) for k in sorted(set(old) | set(new))}
    # and the compositions and neighbour counts it saw (lawful.forcefields.domain), merged likewise
    _record_training_domain(model, [b for b, _ in train_items], o["fit_normalisation"])
    _record_training_charges(model, train_frames, o["fit_normalisation"])

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=o["lr_factor"], patience=o["lr_patience"])
    hooks = _ForceFieldHooks(model, train_items, val_items, fingerprint, o)
    cfg = LoopConfig(units=int(o["epochs"]), unit="epoch", checkpoint=o["checkpoint"], resume=o["resume"],
                     patience=o["patience"], min_lr=o["min_lr"], max_time=o["max_time"], progress=o["progress"],
                     desc=f"train {model.kind}", log=o["log"], stop_label="epochs",
                     find_unused_parameters=len(model.species) > 1, grad_clip=o["grad_clip"],   # a species may be absent from a share
                     ema_decay=o["ema_decay"])
    loop = Loop(model, opt, sched, hooks, cfg, ctx=ctx)
    if not loop.resume() and o["fit_normalisation"]:
        with torch.no_grad():
            _fit_normalisation(model, train_items)
    t_start = time.perf_counter()
    stop_reason = loop.run()
    model.eval()
    final = evaluate_errors(model, val_items, ctx=ctx)
    w_e, w_f, w_s = o["weights"]
    summary = {
        "kind": model.kind, "n_train": len(train_items), "n_val": len(val_items),
        "n_train_atoms": int(sum(int(b.n_atoms.sum()) for b, _ in train_items)),
        "epochs_run": loop.done, "stop_reason": stop_reason,
        "val_energy_mae_per_atom_eV": final["energy_mae_per_atom"], "val_force_mae_eV_per_A": final["force_mae"],
        "val_energy_rmse_per_atom_eV": final["energy_rmse_per_atom"], "val_force_rmse_eV_per_A": final["force_rmse"],
        "val_stress_mae_eV_per_A3": final.get("stress_mae"),
        "train_time_s": loop.train_time_s, "train_cpu_s": loop.train_cpu_s,
        "wall_time_this_call_s": time.perf_counter() - t_start,
        "weights": {"energy": w_e, "forces": w_f, "stress": w_s},
        "n_train_with_stress": sum("stress" in t for _, t in train_items),
        "n_val_with_stress": sum("stress" in t for _, t in val_items),
        "train_atoms_per_species": species_counts, "val_in_train": o.get("val_in_train", 0),
        "energy_labels": o.get("energy_labels"), "label_check": o.get("label_check"),
        "seed": o["seed"], "batch_size": o["batch_size"], "lr": o["lr"], "data_fingerprint": fingerprint,
        "fit_normalisation": o["fit_normalisation"], "ema_decay": o["ema_decay"],
        "world_size": ctx.world_size, "communication_s": loop.comm_s,
        "history": loop.history,
    }
    model.training_summary = summary
    return summary
