"""Do a data set's energy and force labels describe one potential? The work check.

For two frames of one structure (the same atoms in the same order) a small step apart, the energy
difference is minus the work of the forces along the step:

    E_b - E_a = -∫ F · dR  ≈  W = -½ (F_a + F_b) · (R_b - R_a)      (trapezoid rule, error O(|ΔR|³))

The median of ``ΔE / W`` over the nearby frame pairs of a data set, ``s``, is 1 for consistent
labels (0.94-1.07 on the nine committed GFN2-xTB sets, 1.00 on an EMT MD run; the median, not a
least-squares slope, which the steepest pairs and their trapezoid error pull to 0.7-0.9).
Anything else is a convention mixed up on the way in, which training would not report: it would
fit a compromise between energies and forces that disagree, and the model would be silently
worse than its data. ``s ≈ -1``: the "forces" are energy gradients dE/dR; ``s`` ≈ kcal/mol per eV
(:data:`~lawful.kernels.units.KCALMOL_PER_EV`): energies in kcal/mol beside forces in eV/Å; its
inverse: forces in kcal/mol/Å beside energies in eV; the Hartree and bohr factors likewise
(:data:`KNOWN_FACTORS`); 1/N: energies per atom, not per frame.

:func:`work_check` finds the pairs and computes ``s``; :func:`check_label_consistency` raises
:class:`~lawful.kernels.errors.InputError` when the verdict is clear (at least :data:`MIN_PAIRS`
pairs doing :data:`MIN_WORK` of work, :data:`MIN_AGREEING` of them within :data:`AGREE_FACTOR` of
``s``) and ``s`` is outside :data:`TRAPEZOID_RANGE` (between it and :data:`CONSISTENT_RANGE`: undetermined,
the trapezoid rule's error on large steps), naming the likely cause.
:func:`lawful.forcefields.train` makes the check before any epoch.

Pairs: frames are grouped by their atomic numbers (in order) and periodicity; in a group of
molecules (no periodic axis) each frame is paired with its nearest other frame (RMS step per
atom, up to :data:`MAX_FRAMES_PER_GROUP` frames evenly chosen), in a periodic group with the next
frame in the data's order (an MD trajectory's) and with its nearest frame in the same cell (data
shuffled before it was saved; up to :data:`MAX_PERIODIC_FRAMES` per cell), steps taken to the
nearest image. Pairs further
apart than ``max_step`` (RMS per atom, Å) are not used: the trapezoid rule is only good for small
steps. Units: Å, eV, eV/Å, eV/Å³.

Stress labels get the same check across cells: for two periodic frames whose cells differ by a
small deformation D (``h_b = h_a (1 + D)``, rows are lattice vectors; every component <=
:data:`MAX_STRAIN`), the energy change left after the forces' work on the non-affine step is the
stress's work, ``½ (V_a σ_a + V_b σ_b) : D`` (ASE's stress, (1/V) dE/dstrain), and the median
ratio of the two must be 1 too: -1 for the opposite sign convention (VASP's), 1/160 for GPa,
-1/1602 for VASP's kbar (:data:`STRESS_FACTORS`). Figures under ``"stress"``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lawful.kernels.units import (ANGSTROM_PER_BOHR, EV_PER_HARTREE, GPA_PER_EV_PER_A3, KCALMOL_PER_EV,
                                  KJMOL_PER_EV)

__all__ = ["MAX_STEP", "MAX_STRAIN", "MIN_PAIRS", "MIN_WORK", "AGREE_FACTOR", "MIN_AGREEING", "CONSISTENT_RANGE",
           "TRAPEZOID_RANGE",
           "MIN_PART", "MIN_PART_FRAMES", "FLAT_RATIO", "FORCE_SUSPECT",
           "KNOWN_FACTORS", "STRESS_FACTORS", "work_check", "check_label_consistency", "nearest_factor"]

#: Largest RMS step per atom (Å) of a frame pair the check uses.
MAX_STEP = 0.15
#: Fewest usable pairs for a verdict.
MIN_PAIRS = 5
#: Smallest |work| (eV) of a usable pair: below it label noise decides the ratio.
MIN_WORK = 1e-3
#: A pair agrees with the median ratio ``s`` when its own ratio lies within this factor of it.
AGREE_FACTOR = 1.5
#: Smallest share of agreeing pairs for a verdict.
MIN_AGREEING = 0.5
#: Fitted ``s`` in this range: consistent labels (the trapezoid rule's error stays well inside it).
CONSISTENT_RANGE = (0.8, 1.25)
#: Fitted ``s`` outside :data:`CONSISTENT_RANGE` but inside this range: "undetermined", not refused.
#: No unit or sign mix-up lands here (the nearest, Hartree with Hartree/bohr, is 0.53), while
#: correct labels of frames far apart do: a committed GFN2-xTB set whose pairs all step 0.10-0.15 Å
#: (alanine dipeptide over its barrier, validation) gave 0.75 from the trapezoid rule's error and
#: was refused as a unit mix-up.
TRAPEZOID_RANGE = (0.6, 1.6)
#: Smallest share of all pairs at one known factor (or of the paired frames, for frames spread
#: among right ones), the median agreeing, that refuses the data as partly mixed up (a merged
#: source with another convention; on correct noisy data the largest such cluster was 1.9 %).
MIN_PART = 0.05
#: Fewest frames of a mix-up spread among right ones that refuse the data.
MIN_PART_FRAMES = 3
#: A pair whose energy changes by less than this fraction of its forces' work: "flat" energies.
FLAT_RATIO = 0.2
#: Median |F| per atom (eV/Å) above which consistent labels are said to be likely in kcal/mol or
#: kJ/mol both (a warning: the ratio cannot see a unit the two share; MD in eV/Å sits near 1).
FORCE_SUSPECT = 10.0
#: Frames per group compared pairwise (more are thinned evenly).
MAX_FRAMES_PER_GROUP = 2000
#: Largest cell deformation (any component of D) of a periodic pair the check uses.
MAX_STRAIN = 0.05
#: Periodic frames per cell compared pairwise for the nearest frame (more are thinned evenly).
MAX_PERIODIC_FRAMES = 500

#: ``s`` -> the likely cause, for the check's message.
KNOWN_FACTORS = {
    -1.0: "the 'forces' are energy gradients dE/dR, not forces -dE/dR: negate them",
    KCALMOL_PER_EV: "energies in kcal/mol beside forces in eV/Å: convert the energies to eV "
                    f"(divide by {KCALMOL_PER_EV:.2f})",
    1.0 / KCALMOL_PER_EV: "forces in kcal/mol/Å beside energies in eV: convert the forces to eV/Å "
                          f"(divide by {KCALMOL_PER_EV:.2f})",
    1.0 / EV_PER_HARTREE: "energies in Hartree beside forces in eV/Å: convert the energies to eV "
                          f"(multiply by {EV_PER_HARTREE:.2f})",
    EV_PER_HARTREE: "forces in Hartree/Å beside energies in eV: convert the forces to eV/Å "
                    f"(multiply by {EV_PER_HARTREE:.2f})",
    EV_PER_HARTREE / ANGSTROM_PER_BOHR: "forces in Hartree/bohr beside energies in eV: convert the forces to "
                                        f"eV/Å (multiply by {EV_PER_HARTREE / ANGSTROM_PER_BOHR:.2f})",
    1.0 / ANGSTROM_PER_BOHR: "energies in Hartree and forces in Hartree/bohr: convert the energies to eV "
                             f"(x {EV_PER_HARTREE:.2f}) and the forces to eV/Å "
                             f"(x {EV_PER_HARTREE / ANGSTROM_PER_BOHR:.2f})",
    KJMOL_PER_EV: "energies in kJ/mol beside forces in eV/Å: convert the energies to eV "
                  f"(divide by {KJMOL_PER_EV:.2f})",
    1.0 / KJMOL_PER_EV: "forces in kJ/mol/Å beside energies in eV: convert the forces to eV/Å",
}

#: The likely cause named when ``s`` x atoms is 1 (the whole data, or a part of it).
PER_ATOM_CAUSE = ("energies per atom (eV/atom) where lawful reads each frame's total energy (eV): multiply them "
                  "by the number of atoms")


def _labels(a) -> tuple[float, np.ndarray, np.ndarray | None] | None:
    """(energy eV, forces (N,3) eV/Å, stress (3,3) eV/Å³ in ASE's sign or None) of a labelled frame
    as training reads them, or None."""
    from lawful.forcefields.training import _stress_label, energy_label

    res = a.calc.results if getattr(a, "calc", None) is not None else {}
    key = energy_label(res, len(a))
    if key is None or "forces" not in res:
        return None
    f = np.asarray(res["forces"], dtype=np.float64)
    if f.shape != (len(a), 3):
        return None
    try:
        stress = _stress_label(a, res)
    except Exception:      # a malformed stress label is training's to refuse, with its own message
        stress = None
    return float(np.asarray(res[key], dtype=np.float64)), f, stress


def _groups(frames) -> dict:
    groups: dict = {}
    for k, a in enumerate(frames):
        pbc = tuple(bool(p) for p in a.pbc)
        groups.setdefault((tuple(int(z) for z in a.numbers), pbc), []).append(k)
    return groups


def _periodic_step(a, b, pbc) -> tuple[np.ndarray, np.ndarray] | None:
    """(non-affine step (N,3) Å, cell deformation D (3,3)) from frame ``a`` to ``b``: ``b``'s cell
    is ``a``'s times (1 + D) (rows are lattice vectors) and the step is ``(s_b - s_a) h_b`` with
    the fractional step wrapped to the nearest image on periodic axes; None for a cell without
    volume."""
    ha = np.asarray(a.cell.array, dtype=np.float64)
    hb = np.asarray(b.cell.array, dtype=np.float64)
    if not (_has_volume(ha) and _has_volume(hb)):
        return None
    d = np.linalg.solve(ha, hb) - np.eye(3)
    ds = (np.asarray(b.positions, dtype=np.float64) @ np.linalg.inv(hb)
          - np.asarray(a.positions, dtype=np.float64) @ np.linalg.inv(ha))
    return _nearest_image(ds, pbc, hb), d


def _has_volume(cell: np.ndarray) -> bool:
    """False for a cell without volume (a 2D lattice's c = 0): no fractional coordinates."""
    return abs(np.linalg.det(cell)) >= 1e-9


def _nearest_image(frac_step: np.ndarray, pbc, cell: np.ndarray) -> np.ndarray:
    """Fractional steps (..., 3) wrapped to the nearest image on the periodic axes, in Å."""
    mask = np.asarray(pbc, dtype=np.float64)
    return (frac_step - mask * np.round(frac_step)) @ cell


def _same_cell_nearest(frames, keep: list, pbc, max_step: float) -> set:
    """``{(a, b)}``, a < b: each periodic frame of ``keep`` with its nearest other frame in the same
    cell (RMS step per atom to the nearest image, at most ``max_step``), up to
    :data:`MAX_PERIODIC_FRAMES` frames per cell (thinned evenly)."""
    cells: dict = {}
    for k in keep:
        cells.setdefault(tuple(np.round(np.asarray(frames[k].cell.array, dtype=np.float64).ravel(), 9)), []).append(k)
    out = set()
    for ks in cells.values():
        if len(ks) < 2:
            continue
        if len(ks) > MAX_PERIODIC_FRAMES:
            ks = [ks[int(i)] for i in np.linspace(0, len(ks) - 1, MAX_PERIODIC_FRAMES)]
        cell = np.asarray(frames[ks[0]].cell.array, dtype=np.float64)
        if not _has_volume(cell):
            continue
        inv = np.linalg.inv(cell)
        frac = np.stack([np.asarray(frames[k].positions, dtype=np.float64) @ inv for k in ks])   # (m, N, 3)
        for i in range(len(ks)):
            d = _nearest_image(frac - frac[i], pbc, cell)
            rms = np.sqrt((d * d).sum(axis=(1, 2)) / d.shape[1])
            rms[i] = np.inf
            j = int(np.argmin(rms))
            if rms[j] <= max_step:
                out.add((min(ks[i], ks[j]), max(ks[i], ks[j])))
    return out


def _nearest_pairs(x: np.ndarray) -> list[tuple[int, int, float]]:
    """(i, j, RMS step) of each row's nearest other row of ``x`` (n, 3N), each pair once."""
    n, width = x.shape
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, np.inf)
    j = np.argmin(d2, axis=1)
    pairs = {(min(i, int(jj)), max(i, int(jj))) for i, jj in enumerate(j)}
    return [(i, jj, float(np.sqrt(d2[i, jj] * 3.0 / width))) for i, jj in sorted(pairs)]


def work_check(frames: Sequence, max_step: float = MAX_STEP) -> dict:
    """The ratio ``s`` of energy differences to the forces' work over the nearby frame pairs of
    ``frames`` (labelled ``ase.Atoms``; see the module docstring). Returns ``{"pairs": n used,
    "scale": s (median of ΔE/W), "agreeing": share of pairs within AGREE_FACTOR of s, "max_step_A":
    max_step, "verdict": "consistent" | "inconsistent" | "undetermined"}`` (``scale`` and
    ``agreeing`` None with fewer than :data:`MIN_PAIRS` pairs)."""
    de, w, n, fr = [], [], [], []   # pairs in one cell: energy difference, forces' work, atoms, frames
    group_of = []                   # and each such pair's group (atomic numbers, pbc)
    ends = []                       # and each pair's (E_a, E_b, W_a, W_b): W = W_a + W_b, W_k = -1/2 F_k . d
    de_s, w_s, fr_s = [], [], []    # pairs across cells: energy difference less the forces' work, strain work
    norms = []                      # |F| of every atom of the frames in groups of two or more
    for (numbers, pbc), idx in _groups(frames).items():
        if len(idx) < 2:
            continue
        lab = {k: l for k, l in ((k, _labels(frames[k])) for k in idx) if l is not None}
        keep = [k for k in idx if k in lab]
        norms.extend(np.linalg.norm(lab[k][1], axis=1) for k in keep)
        if len(keep) < 2:
            continue
        if not any(pbc):
            if len(keep) > MAX_FRAMES_PER_GROUP:
                keep = [keep[int(i)] for i in np.linspace(0, len(keep) - 1, MAX_FRAMES_PER_GROUP)]
            x = np.stack([np.asarray(frames[k].positions, dtype=np.float64).ravel() for k in keep])
            for i, j, step in _nearest_pairs(x):
                if step <= max_step:
                    a, b = keep[i], keep[j]
                    d = (x[j] - x[i]).reshape(-1, 3)
                    wa, wb = -0.5 * float((lab[a][1] * d).sum()), -0.5 * float((lab[b][1] * d).sum())
                    de.append(lab[b][0] - lab[a][0])
                    w.append(wa + wb)
                    n.append(len(numbers))
                    group_of.append((numbers, pbc))
                    fr.append((a, b))
                    ends.append((lab[a][0], lab[b][0], wa, wb))
            continue
        # along the data's order (an MD run's; cells may differ: the stress part), and each frame
        # with its nearest frame in the same cell (shuffled data)
        pairs = sorted(set(zip(keep[:-1], keep[1:])) | _same_cell_nearest(frames, keep, pbc, max_step))
        for a, b in pairs:
            step = _periodic_step(frames[a], frames[b], pbc)
            if step is None:
                continue
            d, strain = step
            if np.sqrt((d * d).sum() / len(d)) > max_step or np.abs(strain).max() > MAX_STRAIN:
                continue
            (ea, fa, sa), (eb, fb, sb) = lab[a], lab[b]
            wa, wb = -0.5 * float((fa * d).sum()), -0.5 * float((fb * d).sum())
            work_f = wa + wb
            if np.abs(strain).max() < 1e-12:
                de.append(eb - ea)
                w.append(work_f)
                n.append(len(numbers))
                group_of.append((numbers, pbc))
                fr.append((a, b))
                ends.append((ea, eb, wa, wb))
            elif sa is not None and sb is not None:
                # dE = V sigma : d(strain) (ASE's stress), trapezoid over the two ends
                vs = 0.5 * (abs(np.linalg.det(frames[a].cell.array)) * sa
                            + abs(np.linalg.det(frames[b].cell.array)) * sb)
                de_s.append(eb - ea - work_f)
                w_s.append(float((vs * strain).sum()))
                fr_s.append((a, b))
    out = _ratio_verdict(de, w, n, fr, KNOWN_FACTORS, ends)
    if out["verdict"] != "inconsistent" and len(set(group_of)) > 1:
        # each structure (molecule, cell) on its own: pooled, a part of one unit beside a part of another
        # gave a median of neither ("undetermined": a trimer with kcal/mol energies and eV/bohr forces
        # merged with a right hexamer passed), or a minority part at an unknown factor hid in the median
        for g in dict.fromkeys(group_of):
            sel = [i for i, x in enumerate(group_of) if x == g]
            r = _ratio_verdict([de[i] for i in sel], [w[i] for i in sel], [n[i] for i in sel], [fr[i] for i in sel],
                               KNOWN_FACTORS, [ends[i] for i in sel])
            if r["verdict"] == "inconsistent":
                numbers, pbc = g
                from ase import Atoms

                frames_in = sorted({k for i in sel for k in fr[i]})
                r["group"] = {"formula": Atoms(numbers=list(numbers)).get_chemical_formula(), "pbc": list(pbc),
                              "frames": frames_in[:5], "pooled_scale": out["scale"]}
                out.update(r)
                break
    out["max_step_A"] = float(max_step)
    out["median_force"] = float(np.median(np.concatenate(norms))) if norms else None
    stress = _ratio_verdict(de_s, w_s, None, fr_s, STRESS_FACTORS)
    out["stress"] = stress if out["verdict"] != "inconsistent" else dict(stress, verdict="undetermined")
    return out


def _ratio_verdict(de, w, atoms=None, frames=None, factors=None, ends=None) -> dict:
    """``{"pairs", "pairs_near", "scale", "agreeing", "verdict"}`` of the median ratio ``de / w``
    (module docstring; ``pairs_near``: all the nearby pairs, ``pairs`` those doing
    :data:`MIN_WORK`); with ``atoms`` (each pair's atom count) also ``scale_times_atoms``, the median
    of ratio x atoms: energies per atom instead of per frame give ``s = 1/N``, and this 1.

    Two verdicts besides the median's (``verdict`` "inconsistent", ``reason`` saying which):
    ``"part"`` -- the median agrees but at least :data:`MIN_PAIRS` pairs and :data:`MIN_PART` of them
    sit at one factor of ``factors`` (a table like :data:`KNOWN_FACTORS`; or 1/N, energies per
    atom): part of the data (merged from another source?) has that mix-up, which the median of the
    rest hides; ``part`` gives the factor, its pairs and up to five of their ``frames`` (index
    pairs). ``"flat"`` -- the ratios do not cluster at their median (a unit factor would) but at
    least :data:`MIN_AGREEING` of the pairs change the energy by less than :data:`FLAT_RATIO` of
    the forces' work: the energies do not follow the forces at all (total energies, potential +
    kinetic, of an NVE run; a constant or another structure's energy)."""
    de_a, w_a = np.asarray(de, dtype=np.float64), np.asarray(w, dtype=np.float64)
    use = np.abs(w_a) >= MIN_WORK
    out = {"pairs": int(use.sum()), "pairs_near": int(len(de_a)), "scale": None, "agreeing": None,
           "verdict": "undetermined"}
    if atoms is not None:
        out["scale_times_atoms"] = None
    if out["pairs"] < MIN_PAIRS:
        return out
    ratio = de_a[use] / w_a[use]
    s = float(np.median(ratio))
    per_atom = None
    if atoms is not None:
        per_atom = ratio * np.asarray(atoms, dtype=np.float64)[use]
        out["scale_times_atoms"] = float(np.median(per_atom))
    agrees = (ratio / s >= 1.0 / AGREE_FACTOR) & (ratio / s <= AGREE_FACTOR) if s != 0 else np.zeros_like(use[use])
    agree = float(np.mean(agrees))
    out.update(scale=s, agreeing=agree)
    if agree >= MIN_AGREEING:
        if CONSISTENT_RANGE[0] <= s <= CONSISTENT_RANGE[1]:
            out["verdict"] = "consistent"
        elif TRAPEZOID_RANGE[0] <= s <= TRAPEZOID_RANGE[1]:
            out["reason"] = "trapezoid"     # undetermined: large steps' error, or a factor nobody uses
        else:
            out["verdict"] = "inconsistent"
    elif float(np.mean(np.abs(ratio) < FLAT_RATIO)) >= MIN_AGREEING:
        # ratios near 0 that do not cluster at one value (a unit factor would): flat energies
        out.update(verdict="inconsistent", reason="flat")
        return out
    if out["verdict"] == "consistent" and factors:
        part = _mixed_part(ratio, per_atom, ~agrees, factors)
        if part is not None:
            idx = np.flatnonzero(use)[part.pop("mask")]
            if frames is not None:
                part["frames"] = [tuple(int(k) for k in frames[i]) for i in idx[:5]]
            out.update(verdict="inconsistent", reason="part", part=part)
    if (frames is not None and ends is not None and factors and out["verdict"] != "inconsistent"
            and CONSISTENT_RANGE[0] <= s <= CONSISTENT_RANGE[1]):
        # frames spread among right ones (also when they are so many that under half the pairs agree)
        used = np.flatnonzero(use)
        part = _mixed_frames([frames[i] for i in used], np.asarray(ends, dtype=np.float64)[use],
                             np.asarray(atoms if atoms is not None else [1] * len(de))[use], ~agrees, s, factors)
        if part is not None:
            out.update(verdict="inconsistent", reason="part", part=part)
    return out


def _mixed_frames(frames, ends, atoms, off, s: float, factors) -> dict | None:
    """Frames of a mix-up spread among right ones, where each bad frame pairs with right ones and
    no pair sits at the factor itself: ``{"factor", "cause", "frames" (up to five), "n_frames",
    "share", "pairs", "per_frame": True}`` when at least :data:`MIN_PART_FRAMES` frames and
    :data:`MIN_PART` of the paired frames each have two or more disagreeing pairs (``off``) that
    all agree with ``s`` once that frame alone is read at one factor of ``factors`` -- its energy
    divided by it, its forces multiplied by it, or its energy per atom times the atoms; else None.
    ``ends`` (P, 4): each pair's E_a, E_b, W_a, W_b (the work's two halves)."""
    bad_pairs: dict = {}
    for i in np.flatnonzero(off):
        for k in frames[i]:
            bad_pairs.setdefault(k, []).append(i)
    hyps = [(c, cause, kind) for c, cause in factors.items() for kind in ("E", "F")] + [("1/N", PER_ATOM_CAUSE, "N")]
    found: dict = {}
    for k, idx in bad_pairs.items():
        if len(idx) < 2:
            continue
        for h, (c, _cause, kind) in enumerate(hyps):
            for i in idx:
                e = ends[i].copy()
                e_at, w_at = (0, 2) if frames[i][0] == k else (1, 3)
                if kind == "E":
                    e[e_at] /= c
                elif kind == "F":
                    e[w_at] *= c
                else:
                    e[e_at] *= atoms[i]
                w = e[2] + e[3]
                ratio = (e[1] - e[0]) / w if abs(w) >= MIN_WORK else np.inf
                if not (1.0 / AGREE_FACTOR <= ratio / s <= AGREE_FACTOR):
                    break
            else:
                found.setdefault(h, []).append(k)
    if not found:
        return None
    h, ks = max(found.items(), key=lambda item: len(item[1]))
    paired = {k for pair in frames for k in pair}
    if len(ks) < MIN_PART_FRAMES or len(ks) < MIN_PART * len(paired):
        return None
    c, cause, _kind = hyps[h]
    return {"factor": c if isinstance(c, str) else float(c), "cause": cause, "frames": sorted(int(k) for k in ks)[:5],
            "n_frames": len(ks), "share": len(ks) / len(paired), "pairs": sum(len(bad_pairs[k]) for k in ks),
            "per_frame": True}


def _mixed_part(ratio, per_atom, off, factors) -> dict | None:
    """The largest cluster of the disagreeing pairs ``off`` at one factor of ``factors`` (within
    10 % in log) or, with ``per_atom`` (ratio x atoms), at 1/N: ``{"factor", "cause", "pairs",
    "share", "mask"}`` when it holds at least :data:`MIN_PAIRS` pairs and :data:`MIN_PART` of all;
    else None."""
    best = None
    candidates = [(c, ratio, cause) for c, cause in factors.items()]
    if per_atom is not None:
        candidates.append((None, per_atom, PER_ATOM_CAUSE))
    for c, values, cause in candidates:
        target = 1.0 if c is None else c
        with np.errstate(divide="ignore", invalid="ignore"):
            near = off & (np.sign(values) == np.sign(target)) & (np.abs(np.log(np.abs(values / target))) < 0.1)
        k = int(near.sum())
        if k >= MIN_PAIRS and k >= MIN_PART * len(ratio) and (best is None or k > best["pairs"]):
            best = {"factor": "1/N" if c is None else float(c), "cause": cause, "pairs": k,
                    "share": k / len(ratio), "mask": near}
    return best


#: ``s`` of the stress check -> the likely cause.
STRESS_FACTORS = {
    -1.0: "the stress has the opposite sign (a pressure-positive convention, as VASP's OUTCAR prints, or a "
          "virial-like sign): lawful reads ASE's stress, (1/V) dE/dstrain, negative under compression",
    1.0 / GPA_PER_EV_PER_A3: "the stress is in GPa: convert it to eV/Å³ (divide by 160.2)",
    -1.0 / GPA_PER_EV_PER_A3: "the stress is in GPa and of the opposite sign: convert it to eV/Å³ (divide by "
                              "-160.2)",
    1.0 / (10 * GPA_PER_EV_PER_A3): "the stress is in kbar: convert it to eV/Å³ (divide by 1602)",
    -1.0 / (10 * GPA_PER_EV_PER_A3): "the stress is in kbar with the opposite sign (VASP's convention): "
                                     "convert it to eV/Å³ (divide by -1602)",
}


def nearest_factor(s: float, table: dict, tolerance: float = 0.1):
    """The value of ``table`` whose key (a nonzero factor) has ``s``'s sign and lies within
    ``tolerance`` of it in log (0.1: 10 %), the nearest such; None when there is none. How a
    measured ratio is read as a known unit or sign mix-up (here and in
    :meth:`~lawful.forcefields.dynamics_data.DynamicsDataset.from_trajectories`)."""
    if s == 0:
        return None
    same = [c for c in table if np.sign(c) == np.sign(s)]
    if not same:
        return None
    best = min(same, key=lambda c: abs(np.log(s / c)))
    return table[best] if abs(np.log(s / best)) < tolerance else None


def _likely_cause(s: float, s_times_atoms: float | None = None) -> str:
    cause = nearest_factor(s, KNOWN_FACTORS)
    if s_times_atoms is not None and CONSISTENT_RANGE[0] <= s_times_atoms <= CONSISTENT_RANGE[1]:
        return PER_ATOM_CAUSE if cause is None else f"{PER_ATOM_CAUSE}; or {cause}"
    if cause is not None:
        return cause
    if s < 0:
        return "the forces point up the energy (gradients dE/dR, not forces -dE/dR?) and their units differ too"
    return "energies and forces are in units that do not match (lawful reads eV and eV/Å)"


def check_label_consistency(frames: Sequence, what: str = "training", max_step: float = MAX_STEP,
                            stress: bool = True) -> dict:
    """:func:`work_check` of ``frames``; raises :class:`~lawful.kernels.errors.InputError` when its
    verdict is "inconsistent" (naming ``what`` data, the factor, the pairs and the likely cause),
    and, with ``stress`` (the stress labels are used), when its stress verdict is (without: a
    warning); returns the check's figures otherwise."""
    r = work_check(frames, max_step)
    fix = "If the labels are right, pass check_labels=False (command line: --no-label-check)."
    if r["verdict"] == "inconsistent":
        from lawful.kernels.errors import InputError

        s = r["scale"]
        near = f"between {r['pairs']} pairs of nearby frames (RMS step <= {max_step:g} Å per atom)"
        if "group" in r:
            g = r["group"]
            near += (f" of the structure {g['formula']} (frames {', '.join(map(str, g['frames']))}, ...; one of "
                     "several structures in the data, each checked on its own)")
        if r.get("reason") == "flat":
            raise InputError(
                f"the {what} data's energy labels do not follow its forces: {near} the forces do work (over "
                f"{MIN_WORK:g} eV each) but the energies barely change (median energy difference {s:.3g}x the work, 1 "
                "for consistent labels). Likely: total energies (potential + kinetic, as an NVE run's conserved "
                "energy; ASE get_total_energy, LAMMPS etotal) where lawful needs the potential energy; or one "
                f"energy copied to every frame, or energies of other structures. Training would fit a compromise "
                f"between the two and report no error. {fix}")
        if r.get("reason") == "part":
            raise InputError(_part_message(what, "energy and force labels", r, near, fix))
        raise InputError(
            f"the {what} data's energy and force labels do not describe one potential: {near} the energy "
            f"differences are {s:.4g}x the work "
            f"of the forces (-1/2 (F_a + F_b) . (R_b - R_a); the median ratio, 1 for consistent labels; "
            f"{100 * r['agreeing']:.0f} % of the pairs agree with it within a factor {AGREE_FACTOR:g}). Likely: "
            f"{_likely_cause(s, r.get('scale_times_atoms'))}. Training would fit a "
            f"compromise between the two and report no error. {fix}")
    if r["verdict"] == "consistent" and (r.get("median_force") or 0.0) > FORCE_SUSPECT:
        import warnings

        warnings.warn(
            f"the {what} data's forces are {r['median_force']:.3g} eV/Å per atom (the median |F|; MD and "
            f"rattled data in eV/Å sit near 0.1-3): energies and forces in kcal/mol (as the MD17 files give "
            f"them; x {KCALMOL_PER_EV:.2f}) or kJ/mol? Both in one unit pass the work check (ratio 1), but "
            "a model trained on them is that many times too strong in eV: convert both to eV and eV/Å.",
            stacklevel=2)
    st = r["stress"]
    if st["verdict"] == "inconsistent":
        from lawful.kernels.errors import InputError

        s = st["scale"]
        near = f"between {st['pairs']} pairs of nearby frames in different cells (strain <= {MAX_STRAIN:g})"
        if st.get("reason") == "part":
            said = _part_message(what, "stress labels", st, near, fix)
        elif st.get("reason") == "flat":
            said = (f"the {what} data's stress labels do not follow its energies: {near} the energy changes by the "
                    f"stress's work but the stress hardly does any ({s:.3g}x the energy change left after the "
                    "forces' work, 1 for consistent labels). Likely: stress labels that are all zero or of other "
                    f"structures. {fix}")
        else:
            cause = nearest_factor(s, STRESS_FACTORS) or ("the stress labels are in other units or another sign "
                                                          "convention than ASE's eV/Å³, (1/V) dE/dstrain")
            said = (f"the {what} data's stress labels do not describe the energy: {near} the energy change left "
                    f"after the forces' work is "
                    f"{s:.4g}x the stress's work (V sigma : strain; the median ratio, 1 for consistent labels; "
                    f"{100 * st['agreeing']:.0f} % of the pairs agree with it within a factor {AGREE_FACTOR:g}). "
                    f"Likely: {cause}. A stress weight would fit it with no error reported. {fix}")
        if not stress:       # not fitted: said, not refused (a model's stress will not match these labels)
            import warnings

            warnings.warn(f"{said.split(' If the labels are right')[0]} They are not fitted (stress weight 0), "
                          "but a model's stress will not match them.", stacklevel=3)
            return r
        raise InputError(said)
    return r


def _part_message(what: str, labels: str, r: dict, near: str, fix: str) -> str:
    """The refusal of a data set whose pairs mostly agree but a part sits at a known factor (a
    cluster of pairs, or frames spread among right ones)."""
    part = r["part"]
    factor = part["factor"] if isinstance(part["factor"], str) else f"{part['factor']:.4g}"
    tail = (f"Training would fit both and report no error. Fix those frames; {fix[0].lower()}{fix[1:]}")
    if part.get("per_frame"):
        frames = ", ".join(str(k) for k in part["frames"])
        return (f"part of the {what} data's {labels} carry a mix-up: {near} the median ratio is {r['scale']:.2f} "
                f"(consistent), but {part['n_frames']} frames ({100 * part['share']:.0f} % of those paired; e.g. "
                f"frames {frames}, indices into the data) disagree with every frame they are paired with, and agree "
                f"once their own labels are read at {factor}, which means {part['cause']}. Frames from another "
                f"source, or recomputed with another code? {tail}")
    frames = ", ".join(f"{a} & {b}" for a, b in part.get("frames", []))
    return (f"part of the {what} data's {labels} carry a mix-up: {near} the median ratio is {r['scale']:.2f} "
            f"(consistent), but {part['pairs']} pairs ({100 * part['share']:.0f} %) sit at {factor}, "
            f"which means {part['cause']}"
            f"{f' (frames {frames}, indices into the data)' if frames else ''}. A data set merged from sources with "
            f"different conventions? {tail}")