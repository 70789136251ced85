"""ASE and OpenMM start NVE from the same state (audit U1; float64, Reference platform).

ASE's ``VelocityVerlet`` holds on-step velocities v(t); OpenMM's ``VerletIntegrator`` is leapfrog
and holds v(t - dt/2). ``run_md(engine="openmm")`` used to set ASE's v(0) there as it was, which
is another initial state: on a rattled Cu cell the potential energies of the two engines were
~0.1 eV apart after 10 steps and OpenMM's first kinetic energy 0.7 % low. It now sets
v(0) - dt/2 F(0)/m (:func:`lawful.integrations.openmm.set_on_step_velocities`).

What agrees to what, after the fix (every ``drift.csv`` row, ``report_interval=1``):

- potential energy: ASE's and OpenMM's at every step, to 1e-6 eV (measured ~1e-9 to 1e-8: round-off
  and ASE's CODATA-2014 time unit against OpenMM's 2018 constants);
- kinetic energy at step 0: OpenMM reports, for its leapfrog, the kinetic energy of the mean of the
  half-step velocities around t, v(t - dt/2) + dt/2 F(t)/m; at t = 0 that is exactly the v(0) that
  was set, so it equals ASE's on-step kinetic energy to ~8e-9 relative (the CODATA 2014/2018
  difference of the dalton-to-eV ratio, audit U5), and both first rows' temperatures equal
  md.json's ``settings.velocities.initial_temperature_K`` (on-step) to 3.4e-7 (ASE's
  ``get_temperature`` uses CODATA 2014's k_B, ``drift.csv`` 2018's);
- kinetic energy at later steps: the same mean is velocity Verlet's on-step velocity, so ASE's and
  OpenMM's agree to 1e-6 relative at every step.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import openmm
import pytest
from ase.build import bulk
from ase.constraints import FixAtoms
from openmm import unit as u

from lawful.integrations import units
from lawful.integrations.md import run_md

from test_openmm_pairmodel import MorsePairModel, rattled_copper


def _rows(folder):
    with (folder / "drift.csv").open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _primitive_copper():
    """27 Cu atoms in ASE's primitive fcc cell, rattled: OpenMM runs it rotated (openmm_frame)."""
    atoms = bulk("Cu", "fcc", a=3.61).repeat((3, 3, 3))
    atoms.rattle(0.1, seed=4)
    return atoms


def _fixed_copper():
    atoms = rattled_copper(seed=5, amp=0.1)
    atoms.set_constraint(FixAtoms(indices=list(range(0, len(atoms), 4))))   # mass 0 in OpenMM
    return atoms


CASES = {   # name: (structure, model, time step in fs)
    "morse-1fs": (lambda: rattled_copper(seed=5, amp=0.1), MorsePairModel, 1.0),
    "morse-2fs": (lambda: rattled_copper(seed=5, amp=0.1), MorsePairModel, 2.0),
    "morse-fixatoms-2fs": (_fixed_copper, MorsePairModel, 2.0),
    "morse-rotated-cell-2fs": (_primitive_copper, MorsePairModel, 2.0),
    "emt-2fs": (lambda: rattled_copper(seed=5, amp=0.1), lambda: "emt", 2.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ase_and_openmm_nve_agree_step_by_step(case, tmp_path):
    make_atoms, make_model, dt = CASES[case]
    atoms = make_atoms()
    rows, initial_T = {}, {}
    for engine in ("ase", "openmm"):   # the same atoms and seed: the same drawn on-step velocities
        run_md(atoms, make_model(), engine, timestep_fs=dt, steps=10, report_interval=1, seed=3,
               temperature_K=300.0, out=tmp_path / engine)
        rows[engine] = _rows(tmp_path / engine)
        md = json.loads((tmp_path / engine / "md.json").read_text())
        initial_T[engine] = md["settings"]["velocities"]["initial_temperature_K"]
    a, o = rows["ase"], rows["openmm"]
    assert [r["step"] for r in a] == [r["step"] for r in o] == list(range(11))
    gap = max(abs(ra["potential_eV"] - ro["potential_eV"]) for ra, ro in zip(a, o))
    assert gap < 1e-6, f"potential energies {gap:.3g} eV apart within 10 steps (~0.1 eV with v(0) as v(-dt/2))"
    # the run moves: the potential energy changes far more than the tolerance
    assert max(abs(r["potential_eV"] - a[0]["potential_eV"]) for r in a) > 1e-3
    # t = 0: OpenMM's reported kinetic energy is that of the v(0) set, ASE's on-step one (CODATA: 8e-9)
    assert o[0]["kinetic_eV"] == pytest.approx(a[0]["kinetic_eV"], rel=2e-8)
    assert initial_T["openmm"] == initial_T["ase"]
    for engine in ("ase", "openmm"):   # md.json's on-step temperature is the first row's (3.4e-7: ASE's
        # get_temperature uses CODATA 2014's k_B, drift.csv 2018's; the column has 8 digits)
        assert rows[engine][0]["temperature_K"] == pytest.approx(initial_T[engine], rel=1e-6)
    for ra, ro in zip(a, o):
        assert ro["kinetic_eV"] == pytest.approx(ra["kinetic_eV"], rel=1e-6)


def _leapfrog_start(integrator_name, dt_fs=2.0):
    """An OpenMM Context of the rattled cell with ``integrator_name`` (frictionless for Langevin),
    started by set_on_step_velocities from ASE-drawn on-step velocities, and the ASE atoms."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from lawful.integrations.openmm import set_on_step_velocities, system_from_atoms, velocities_from_ase

    atoms = rattled_copper(seed=5, amp=0.1)
    thermalize_momenta(atoms, 300.0, rng=np.random.default_rng(3))
    Stationary(atoms)
    model = MorsePairModel()
    system, _, positions = system_from_atoms(atoms, model, backend="python")
    dt_ps = dt_fs * units.PS_PER_FS
    integrator = {"VerletIntegrator": lambda: openmm.VerletIntegrator(dt_ps),
                  "LangevinMiddleIntegrator": lambda: openmm.LangevinMiddleIntegrator(300.0, 0.0, dt_ps),
                  "LangevinIntegrator": lambda: openmm.LangevinIntegrator(300.0, 0.0, dt_ps)}[integrator_name]()
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    v_set = set_on_step_velocities(ctx, velocities_from_ase(atoms))
    return ctx, atoms, model, v_set, system


@pytest.mark.parametrize("integrator_name", ["VerletIntegrator", "LangevinMiddleIntegrator", "LangevinIntegrator"])
def test_the_shift_gives_velocity_verlets_trajectory_in_each_leapfrog_integrator(integrator_name):
    """Why the NVT integrators get the same shift: without friction each is the leapfrog scheme,
    and from v(0) - dt/2 F/m it follows ASE's velocity Verlet. Verlet reports the kinetic
    energy of v(0) at t = 0; the Langevin integrators report that of the stored v(-dt/2)."""
    from ase import units as ase_units
    from ase.md.verlet import VelocityVerlet

    from lawful.integrations.ase import LawfulCalculator

    ctx, atoms, model, v_set, system = _leapfrog_start(integrator_name)
    ke0 = ctx.getState(getEnergy=True).getKineticEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL
    m = np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(len(atoms))])
    ke_half = 0.5 * np.sum(m[:, None] * v_set ** 2) * units.EV_PER_KJMOL   # dalton nm²/ps² = kJ/mol
    atoms.calc = LawfulCalculator(model)
    ke_on_step = atoms.get_kinetic_energy()
    assert abs(ke_half / ke_on_step - 1.0) > 1e-3   # the shift is not negligible here
    if integrator_name == "VerletIntegrator":
        assert ke0 == pytest.approx(ke_on_step, rel=2e-8)
    else:
        assert ke0 == pytest.approx(ke_half, rel=1e-12)
    dyn = VelocityVerlet(atoms, timestep=2.0 * ase_units.fs)
    for _ in range(10):
        dyn.run(1)
        ctx.getIntegrator().step(1)
        e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        assert e * units.EV_PER_KJMOL == pytest.approx(atoms.get_potential_energy(), abs=1e-6)


def test_set_on_step_velocities_refuses_what_it_cannot_place():
    from lawful.integrations.openmm import set_on_step_velocities, system_from_atoms
    from lawful.kernels.errors import InputError, ShapeError

    atoms = rattled_copper(seed=5, amp=0.1)
    system, _, positions = system_from_atoms(atoms, MorsePairModel(), backend="python")
    ctx = openmm.Context(system, openmm.CustomIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    v = np.ones((len(atoms), 3))
    with pytest.raises(InputError, match="half_step=True"):
        set_on_step_velocities(ctx, v)
    assert np.array_equal(set_on_step_velocities(ctx, v, half_step=False), v)
    got = ctx.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond)
    assert np.array_equal(got, v)
    with pytest.raises(ShapeError, match=r"expected \(32, 3\)"):
        set_on_step_velocities(ctx, v[:-1], half_step=False)
