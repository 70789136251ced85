"""Drift-measurement audit: the meV/atom/ps a run reports is recomputed here from the raw total
energies and times the monitor saw (least-squares slope over the samples, eV -> meV, divided by the
atoms that move), in real short runs of the shipped ``cu-emt`` model."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest

from lawful.integrations.monitors import DriftAccumulator
from lawful.kernels.errors import InputError

STEP_FS = 4.0          # a large step for Cu: a drift well above round-off in 40 steps


def _copper(fixed: int):
    from ase.build import bulk
    from ase.constraints import FixAtoms

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)      # 32 atoms
    atoms.rattle(0.05, seed=1)
    if fixed:
        atoms.set_constraint(FixAtoms(indices=range(fixed)))
    return atoms


def _csv_drift(path, n_moving: int) -> float:
    """meV per moving atom per ps: least-squares slope of drift.csv's total energy against the step
    times (steps x the time step, not the file's own time column)."""
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    t_ps = np.array([int(r["step"]) for r in rows]) * STEP_FS * 1e-3
    e_ev = np.array([float(r["total_eV"]) for r in rows])
    return 1e3 * np.polyfit(t_ps, e_ev, 1)[0] / n_moving


@pytest.mark.parametrize("fixed", [0, 8, 16])
def test_openmm_md_drift_is_per_moving_atom_as_in_ase(tmp_path, fixed):
    """run_md's OpenMM engine divided the drift by every atom (DriftReporter(n_atoms=len(atoms)))
    while the ASE engine divides by the atoms FixAtoms leaves free: the same slab with 8 of 32 atoms
    fixed reported 0.0427 meV/atom/ps in OpenMM and 0.0570 in ASE (25 % low; 50 % with 16 fixed).
    Both now count moving atoms and agree with the recomputation from drift.csv."""
    from lawful.integrations.md import run_md

    atoms = _copper(fixed)
    n_moving = len(atoms) - fixed
    drift = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for engine in ("ase", "openmm"):
            res = run_md(atoms, "cu-emt", engine, timestep_fs=STEP_FS, steps=40, report_interval=5,
                         temperature_K=600.0, seed=3, out=tmp_path / engine)
            assert res.summary.n_atoms == n_moving
            expected = _csv_drift(tmp_path / engine / "drift.csv", n_moving)
            assert res.summary.drift_mev_per_atom_per_ps == pytest.approx(expected, rel=1e-8)
            drift[engine] = res.summary.drift_mev_per_atom_per_ps
    assert abs(drift["ase"]) > 1e-3                              # a slope well above round-off
    assert drift["openmm"] == pytest.approx(drift["ase"], rel=1e-5)   # same start, same trajectory


def _ase_cu_dynamics(dyn_for):
    """Two 40-step VelocityVerlet segments of 32 Cu atoms: ``dyn_for`` "same" continues one dynamics
    object, "new" makes a second one (its clock starts again at 0) fed into the first observer's
    accumulator. Returns (observer of the last segment, raw (t ps, total eV) of every sample)."""
    import ase.units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    from lawful.integrations.ase import LawfulCalculator
    from lawful.integrations.monitors import DriftObserver

    atoms = _copper(0)
    if hasattr(vd, "thermalize_momenta"):   # ASE >= 3.29 (MaxwellBoltzmannDistribution deprecated)
        vd.thermalize_momenta(atoms, 600.0, rng=np.random.default_rng(3))
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=600.0, rng=np.random.default_rng(3))
    atoms.calc = LawfulCalculator("cu-emt")
    raw = []
    dyn = VelocityVerlet(atoms, timestep=STEP_FS * ase.units.fs)
    obs = DriftObserver(dyn)
    dyn.attach(obs, interval=5)
    dyn.attach(lambda: raw.append((dyn.nsteps * STEP_FS * 1e-3, atoms.get_total_energy())), interval=5)
    dyn.run(40)
    if dyn_for == "same":
        dyn.run(40)
        return obs, np.array(raw).T
    dyn2 = VelocityVerlet(atoms, timestep=STEP_FS * ase.units.fs)
    obs2 = DriftObserver(dyn2, accumulator=obs.accumulator)
    dyn2.attach(obs2, interval=5)
    return obs2, (dyn2, np.array(raw).T)


def test_appended_ase_run_continues_the_clock():
    """dyn.run twice on one dynamics object: one series, the same drift as the raw samples give."""
    obs, (t, e) = _ase_cu_dynamics("same")
    s = obs.summary()
    assert s.n_samples == len(t) == 17 and s.duration_ps == pytest.approx(80 * STEP_FS * 1e-3)
    assert s.drift_mev_per_atom_per_ps == pytest.approx(1e3 * np.polyfit(t, e, 1)[0] / 32, rel=1e-8)


def test_second_dynamics_into_one_accumulator_is_refused():
    """A second ASE dynamics object (clock back at 0) fed into the first run's accumulator was fitted
    on top of the first run's times: 2 x 40 steps of Cu reported 2.1x the true drift over half the
    duration, no error. Now the first sample of the second run is refused and the first run's
    summary is untouched."""
    obs2, (dyn2, (t, e)) = _ase_cu_dynamics("new")
    before = obs2.accumulator.summary()
    with pytest.raises(InputError, match="earlier than the previous one"):
        dyn2.run(40)
    after = obs2.accumulator.summary()
    assert after == before and after.n_samples == len(t) == 9
    assert after.drift_mev_per_atom_per_ps == pytest.approx(1e3 * np.polyfit(t, e, 1)[0] / 32, rel=1e-8)


@pytest.mark.parametrize("times, refused", [
    ([0.0, 0.1, 0.2, 0.3], False),
    ([0.0, 0.1, 0.1, 0.2], False),     # a repeated time is not a step back (summary checks sxx)
    ([0.0, 0.1, 0.2, 0.0], True),      # a new clock
    ([5.0, 5.1, 5.2, 5.15], True),     # any step back, not only to 0
])
def test_accumulator_time_must_not_go_back(times, refused):
    acc = DriftAccumulator(4)
    for t in times[:-1]:
        acc.add(t, -10.0 + 0.01 * t, 1.0)
    if refused:
        with pytest.raises(InputError, match="earlier than the previous one"):
            acc.add(times[-1], -10.0, 1.0)
        assert acc.n == len(times) - 1
    else:
        acc.add(times[-1], -10.0 + 0.01 * times[-1], 1.0)
        assert acc.summary().drift_mev_per_atom_per_ps == pytest.approx(1e3 * 0.01 / 4, rel=1e-9)


@pytest.mark.parametrize("constraints, moving", [
    (lambda: [], 32),
    (lambda: [__import__("ase.constraints", fromlist=["x"]).FixAtoms(indices=range(8))], 24),
    (lambda: [__import__("ase.constraints", fromlist=["x"]).FixCartesian(range(4), mask=(True, True, True))], 28),
    (lambda: [__import__("ase.constraints", fromlist=["x"]).FixCartesian(range(4), mask=(False, False, True))], 32),
    (lambda: [__import__("ase.constraints", fromlist=["x"]).FixAtoms(indices=range(8)),
              __import__("ase.constraints", fromlist=["x"]).FixCartesian(range(4, 12), mask=(True, True, True))], 20),
])
def test_moving_atoms_counts_atoms_held_in_all_three_directions(constraints, moving):
    """FixCartesian of x, y and z holds an atom as FixAtoms does: it was counted as moving (the
    drift per atom then divided by too many); one direction fixed leaves it moving."""
    from lawful.integrations.monitors import moving_atoms

    atoms = _copper(0)
    atoms.set_constraint(constraints())
    assert moving_atoms(atoms) == moving


def test_mlmm_nve_counts_the_atoms_its_drift_is_per():
    """mlmm.run_nve's n_atoms was System.getNumParticles(), virtual sites included, beside a drift
    per particle with mass (DriftReporter): for a TIP4P-like System the two disagreed. Three
    massive particles and one massless site: n_atoms is 3, and the drift per atom is the total
    energy's drift over 3."""
    import numpy as np
    import openmm
    from openmm import app
    from openmm import unit as u

    from lawful.integrations import mlmm

    system = openmm.System()
    for m in (16.0, 1.0, 1.0, 0.0):
        system.addParticle(m)
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(0, 1, 0.1, 2e5)
    bonds.addBond(0, 2, 0.1, 2e5)
    bonds.addBond(1, 2, 0.16, 2e5)
    system.addForce(bonds)
    system.setVirtualSite(3, openmm.ThreeParticleAverageSite(0, 1, 2, 0.8, 0.1, 0.1))
    top = app.Topology()
    res = top.addResidue("HOH", top.addChain())
    for name, el in (("O", "O"), ("H1", "H"), ("H2", "H"), ("M", None)):
        top.addAtom(name, None if el is None else app.Element.getBySymbol(el), res)
    pos = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [-0.03, 0.095, 0.0], [0.006, 0.0095, 0.0]]) * u.nanometer
    out = mlmm.run_nve(system, top, pos, steps=50, timestep_fs=0.25, platform="Reference")
    assert out.n_atoms == 3
    assert out.summary is not None and out.summary.n_atoms == 3
