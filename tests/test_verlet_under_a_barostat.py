"""ASE NPT with lawful's calculator: the Verlet list survives the barostat's cell changes.

Under a barostat or a cell filter the cell moves at every step, and the list used to be rebuilt
at every step (401 builds in 400 steps, 8-24 % of the step; ASE audit). It is kept now while the
strain and the atoms' non-affine motion stay within the skin; the energies, forces and stress
along the run are those of a fresh calculator to round-off."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.md import velocitydistribution as vd

from lawful.integrations.ase import LawfulCalculator


def test_npt_keeps_the_list_and_the_numbers():
    from ase.md.nptberendsen import NPTBerendsen

    atoms = bulk("Cu", "fcc", a=3.66, cubic=True).repeat(2)        # +1.4 %: the barostat works on the cell
    atoms.rattle(0.03, seed=2)
    if hasattr(vd, "thermalize_momenta"):                          # ASE >= 3.29
        vd.thermalize_momenta(atoms, 300, rng=np.random.default_rng(3))
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(3))
    calc = LawfulCalculator("cu-emt")
    atoms.calc = calc
    dyn = NPTBerendsen(atoms, timestep=2 * units.fs, temperature_K=300, pressure_au=0.0, taut=50 * units.fs,
                       taup=200 * units.fs, compressibility_au=1.0 / (140 * units.GPa))
    worst = {"e": 0.0, "f": 0.0, "s": 0.0}
    volumes = []

    def compare():
        fresh = atoms.copy()
        fresh.calc = LawfulCalculator("cu-emt")
        worst["e"] = max(worst["e"], abs(atoms.get_potential_energy() - fresh.get_potential_energy()))
        worst["f"] = max(worst["f"], float(np.abs(atoms.get_forces() - fresh.get_forces()).max()))
        worst["s"] = max(worst["s"], float(np.abs(atoms.get_stress() - fresh.get_stress()).max()))
        volumes.append(atoms.get_volume())

    dyn.attach(compare, interval=5)
    dyn.run(100)
    assert max(volumes) - min(volumes) > 0.05                      # the cell did move
    assert worst["e"] < 1e-10 and worst["f"] < 1e-10 and worst["s"] < 1e-12, worst
    rebuilds = calc._runner._verlet.rebuilds
    assert rebuilds < 30, rebuilds                                  # was one per step (101)
