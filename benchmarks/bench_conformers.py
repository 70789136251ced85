"""Alanine dipeptide conformers: relative energies of the organic model against GFN2-xTB.

The issue-14 target: C7eq, C5 and αR minimised with GFN2-xTB (the reference), then re-minimised
with the model in ASE starting from the xTB minima; the model's relative energies (to C7eq) within
1 kcal/mol of xTB's for every conformer. αR is not a vacuum GFN2-xTB minimum, so it is minimised
with φ, ψ fixed by ASE's FixInternals, for xTB and for the model alike
(:mod:`lawful.forcefields.conformers`). BFGS to fmax <= 0.01 eV/Å.

Reported per conformer: energies (eV), relative energies (kcal/mol) of both, |difference|, φ/ψ
before and after each minimisation, all-atom RMSD (Å, after superposition) between the xTB and
the model minima, BFGS steps and the model's out-of-domain warnings. The restrained map points
(:data:`~lawful.forcefields.conformers.MAP_POINTS`, φ -150…-110°, ψ -80…-25°: where the v4 model's
ML/MM run sat) are minimised the same way and reported apart (``map_points``); the target is judged
on the three conformers. Two controls run the same
re-minimisation with other potentials: GFN2-xTB itself (``control_gfn2_xtb``: the differences the
pipeline alone leaves, from the minimisation tolerance) and GFN1-xTB (``control_gfn1_xtb``: another
sensible potential, the size of differences between two reasonable methods).

``--model NAME|FILE`` (default the shipped ``organic-xtb``). Cheap: xTB takes about 6 ms per call,
the whole run well under a minute. ``LAWFUL_BENCH_QUICK=1`` changes nothing (it is already small);
``LAWFUL_BENCH_TINY=1``: loose tolerance (fmax 0.05 eV/Å) and at most 300 steps, a smoke run, not a result.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import warnings

import torch

from lawful.integrations.benchmarking import quick_requested, tiny_requested, write_result

MODEL = "organic-xtb"
#: the issue's target: |model - xTB| of every relative energy, kcal/mol
TARGET_KCAL_MOL = 1.0
FMAX = 0.01
STEPS = 2000
_SCALARS = ("energy_eV", "relative_kcal_mol", "phi_start_deg", "psi_start_deg", "phi_deg", "psi_deg",
            "fmax_eV_A", "steps", "converged", "restrained", "failure", "torsion_shift_deg", "basin_kept")


def _entry(e: dict, extra: tuple = ()) -> dict:
    return {k: e[k] for k in _SCALARS + extra if k in e}


def _model_sha256(name_or_path: str) -> str:
    from lawful.forcefields.shipped import resolve_model_path

    return hashlib.sha256(resolve_model_path(name_or_path).read_bytes()).hexdigest()


def compare(reference: dict, other: dict, target: float = TARGET_KCAL_MOL) -> dict:
    """Per-conformer comparison of ``other`` (re-minimised from the reference minima) with the
    reference. The target is judged on the named conformers (:data:`CONFORMERS`); the restrained
    map points (:data:`MAP_POINTS`) are reported apart, with their own largest error."""
    from lawful.forcefields.conformers import MAP_POINTS

    rows = {}
    for name, e in other["conformers"].items():
        row = _entry(e, ("rmsd_A", "reference_relative_kcal_mol", "relative_error_kcal_mol"))
        row["abs_relative_error_kcal_mol"] = abs(e["relative_error_kcal_mol"])
        # a minimum that left the named conformer's basin is another conformer: never within target
        row["within_target"] = bool(e["converged"] and e.get("basin_kept", True)
                                    and row["abs_relative_error_kcal_mol"] <= target)
        rows[name] = row
    named = {n: r for n, r in rows.items() if n not in MAP_POINTS}
    points = {n: r for n, r in rows.items() if n in MAP_POINTS}
    errs = [r["abs_relative_error_kcal_mol"] for n, r in named.items() if n != reference["reference_conformer"]]
    out = {"conformers": named, "max_abs_relative_error_kcal_mol": max(errs, default=0.0),
           "all_converged": all(r["converged"] for r in named.values()),
           "all_within_target": all(r["within_target"] for r in named.values())}
    if points:
        out["map_points"] = points
        out["map_points_max_abs_relative_error_kcal_mol"] = max(r["abs_relative_error_kcal_mol"]
                                                               for r in points.values())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=MODEL, help="shipped model name or .lawful file (default organic-xtb)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from importlib import metadata

    from lawful.forcefields.conformers import CONFORMERS, MAP_POINTS, minimise_conformers
    from lawful.forcefields.xtb_data import xtb_calculator
    from lawful.integrations.ase import LawfulCalculator
    from lawful.kernels.errors import OutOfDomainWarning

    tiny = tiny_requested()
    fmax, steps = (0.05, 300) if tiny else (FMAX, STEPS)
    t0 = time.process_time()
    # a new tblite instance per conformer (reused within its minimisation): results independent of order
    names = list(CONFORMERS) + list(MAP_POINTS)
    reference = minimise_conformers(lambda: xtb_calculator(fresh_guess=False), names, fmax=fmax, steps=steps)
    t_ref = time.process_time() - t0

    t0 = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OutOfDomainWarning)
        model = minimise_conformers(lambda: LawfulCalculator(args.model), names, reference=reference, fmax=fmax,
                                    steps=steps, require_convergence=False)
    t_model = time.process_time() - t0
    ood = [str(w.message) for w in caught if issubclass(w.category, OutOfDomainWarning)]

    controls = {f"control_{m.lower().replace('-', '_')}": compare(reference, minimise_conformers(
        lambda: xtb_calculator(m, fresh_guess=False), names, reference=reference, fmax=fmax, steps=steps,
        require_convergence=False)) for m in ("GFN2-xTB", "GFN1-xTB")}

    model_cmp = compare(reference, model)
    figures = {
        "xtb": {n: _entry(e) for n, e in reference["conformers"].items()},
        "model": model_cmp,
        "model_out_of_domain_warnings": len(ood),
        "model_first_out_of_domain_warning": ood[0] if ood else None,
        **controls,
        "cpu_s": {"xtb_minimisations": t_ref, "model_minimisations": t_model},
    }
    try:
        tblite_version = metadata.version("tblite")
    except metadata.PackageNotFoundError:
        tblite_version = None
    params = dict(model=args.model, model_sha256=_model_sha256(args.model), reference_method="GFN2-xTB",
                  tblite=tblite_version, fmax_eV_A=fmax, max_steps=steps, optimiser="ase.optimize.BFGS",
                  target_kcal_mol=TARGET_KCAL_MOL,
                  conformers={n: dict(phi_deg=c.phi, psi_deg=c.psi, restrained=c.restrained)
                              for n, c in CONFORMERS.items()},
                  map_points={n: dict(phi_deg=c.phi, psi_deg=c.psi, restrained=c.restrained)
                              for n, c in MAP_POINTS.items()},
                  restraint="ase.constraints.FixInternals on phi (atoms 1,3,5,11) and psi (3,5,11,13) at the "
                            "conformer's values, for restrained conformers, in both minimisations",
                  start="model minimisations start from the xTB minima", quick=quick_requested(), tiny=tiny)
    path = write_result("conformers", figures, dtype="float64", device="cpu", params=params)
    print(f"wrote {path}")
    for n, r in {**model_cmp["conformers"], **model_cmp.get("map_points", {})}.items():
        print(f"{n:12s} xTB {r['reference_relative_kcal_mol']:7.3f}  model {r['relative_kcal_mol']:10.3f}  "
              f"|diff| {r['abs_relative_error_kcal_mol']:9.3f} kcal/mol  RMSD {r['rmsd_A']:.3f} Å  "
              f"converged {r['converged']}")


if __name__ == "__main__":
    main()
