"""OpenMM as a reference-data labeller: an ASE calculator over an ``openmm.System`` and TIP3P
water-cluster data sets made with it.

The engine-neutral sampling, labelling and storage live in :mod:`lawful.forcefields.reference`;
this adapter sits with the other OpenMM code so that ``lawful.forcefields`` imports no engine.
Units: OpenMM speaks nm and kJ/mol; energies are converted to eV and forces to eV/Å with the one
unit table :mod:`lawful.kernels.units` (CODATA 2018, OpenMM's own values).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from lawful.forcefields.reference import label, md_snapshots, rattled
from lawful.kernels import units as _units
from lawful.kernels.errors import InputError

__all__ = ["OpenMMCalculator", "water_cluster_system", "water_cluster_dataset"]


class OpenMMCalculator(Calculator):
    """An ASE calculator evaluating an ``openmm.System`` (classical force field) on the CPU.

    ``system``: the OpenMM System (its particle order is the Atoms order); ``platform``: an
    OpenMM platform name ("Reference" by default: double precision, deterministic). Periodic
    Atoms send their cell as box vectors (OpenMM needs a reduced triclinic box). Energies are
    converted from kJ/mol to eV and forces from kJ/mol/nm to eV/Å with CODATA-2018 constants.

    The Atoms' ``pbc`` must agree with the System (:class:`InputError` otherwise): all three
    directions periodic for a System that uses periodic boundary conditions (OpenMM has no partly
    periodic box), none for one that does not. Without that check a periodic System evaluated
    ``pbc=False`` Atoms in whatever box the Context held last (895 TIP3P waters: -373.39 eV after a
    call with their own 30 Å box, -318.64 eV after one with a 33 Å box, for the same positions),
    ``pbc=[True, True, False]`` was silently periodic along z, and periodic Atoms on a
    non-periodic System got the energy without images (-307.24 eV instead of -373.39 eV).
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, system, platform: str = "Reference", **kwargs):
        super().__init__(**kwargs)
        import openmm

        self.system = system
        self._integrator = openmm.VerletIntegrator(0.001)
        self._context = openmm.Context(system, self._integrator, openmm.Platform.getPlatformByName(platform))
        # what the Context evaluates (it copied the System now): the identity of this labeller
        self._system_sha256 = hashlib.sha256(openmm.XmlSerializer.serialize(system).encode()).hexdigest()

    def todict(self) -> dict:
        """The System's digest (SHA-256 of its XML when this calculator was made) and the platform:
        what tells one force field's labels from another's (a label cache keys its frames by it,
        :func:`lawful.forcefields.xtb_data.labeller_id`; ASE's default, the keyword parameters,
        was empty for every System, and a cache returned one force field's labels for another's)."""
        return {"system_sha256": self._system_sha256, "platform": self._context.getPlatform().getName()}

    def _check_periodicity(self, pbc) -> None:
        """InputError unless ``pbc`` (the Atoms' three flags) matches the System's periodicity."""
        flags = [bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))]
        periodic = self.system.usesPeriodicBoundaryConditions()
        if any(flags) and not all(flags):
            raise InputError(f"atoms.pbc={flags}: an OpenMM box is periodic in all three directions; use pbc=True "
                             "(with a vacuum gap along the open direction if needed) or pbc=False.")
        if all(flags) and not periodic:
            raise InputError("the Atoms are periodic (pbc=True) but the OpenMM System uses no periodic boundary "
                             "conditions (e.g. nonbondedMethod=NoCutoff), so their cell would be ignored: make the "
                             "System periodic (PME, CutoffPeriodic) or set atoms.pbc=False for a structure in vacuum.")
        if not any(flags) and periodic:
            raise InputError("the OpenMM System uses periodic boundary conditions but the Atoms have pbc=False, so "
                             "the energy would be that of the box the Context held last (not set from the Atoms): "
                             "give the Atoms their periodic cell and pbc=True, or make the System non-periodic "
                             "(nonbondedMethod=NoCutoff).")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import openmm
        from openmm import unit

        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) != self.system.getNumParticles():
            raise InputError(f"the Atoms have {len(self.atoms)} atoms but the OpenMM System has "
                             f"{self.system.getNumParticles()} particles.")
        self._check_periodicity(self.atoms.pbc)
        if self.atoms.pbc.all():
            cell = np.asarray(self.atoms.cell) * _units.NM_PER_ANGSTROM
            self._context.setPeriodicBoxVectors(*[openmm.Vec3(*row) * unit.nanometer for row in cell])
        self._context.setPositions(self.atoms.positions * _units.NM_PER_ANGSTROM * unit.nanometer)
        state = self._context.getState(getEnergy=True, getForces=True)
        e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        self.results["energy"] = e * _units.EV_PER_KJMOL
        self.results["forces"] = np.asarray(f) * _units.FORCE_ASE_PER_OPENMM


def water_cluster_system(n_molecules: int = 4):
    """A cluster of ``n_molecules`` flexible TIP3P waters cut from OpenMM's ``tip3p.pdb`` box and
    its ``openmm.System`` (amber14 + TIP3P, no cutoff, no constraints, flexible O-H bonds).
    Returns (ase.Atoms, openmm.System)."""
    import openmm.app as app
    from openmm import unit

    pdb_path = Path(app.__file__).parent / "data" / "tip3p.pdb"
    pdb = app.PDBFile(str(pdb_path))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    residues = list(modeller.topology.residues())
    modeller.delete(residues[n_molecules:])
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    pos = np.asarray(modeller.positions.value_in_unit(unit.nanometer)) * _units.ANGSTROM_PER_NM
    numbers = [a.element.atomic_number for a in modeller.topology.atoms()]
    atoms = Atoms(numbers=numbers, positions=pos, pbc=False)
    atoms.positions -= atoms.get_center_of_mass()
    return atoms, system


def water_cluster_dataset(n_molecules: int = 4, n_md: int = 20, temperatures: Sequence[float] = (200, 300),
                          n_rattled: int = 10, seed: int = 0) -> list[Atoms]:
    """TIP3P water clusters labelled through :class:`OpenMMCalculator`: MD snapshots (0.5 fs
    steps) and rattled copies."""
    atoms, system = water_cluster_system(n_molecules)
    calc = OpenMMCalculator(system)
    frames = md_snapshots(atoms, calc, temperatures, n_md, interval=10, timestep_fs=0.5, equilibration=20,
                          seed=seed)
    frames += rattled(atoms, n_rattled, 0.05, seed=seed + 1)
    return label(frames, calc)
