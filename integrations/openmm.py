"""The OpenMM way in: :func:`create_force` and the :class:`DriftReporter`.

>>> from lawful.integrations.openmm import create_force, DriftReporter
>>> system.addForce(create_force("cu.lawful", topology=topology))          # whole system
>>> system.addForce(create_force(model, topology=topology, atoms=ligand))   # ML/MM: a subset
>>> simulation.reporters.append(DriftReporter("drift.csv", 100))

Two backends return an ``openmm.Force``:

- ``backend="python"``: an ``openmm.PythonForce`` whose callback hands OpenMM's positions (a
  float64 NumPy array in nm) straight to torch: one copy into a preallocated tensor scaled to Å,
  the model, one scaled copy of the forces into a preallocated NumPy array in kJ/mol/nm. A Verlet
  neighbour list (cutoff + skin) is reused between steps when the model accepts prebuilt pairs.
  ``setParticles`` restricts it to an ML subset, ``setUsesPeriodicBoundaryConditions`` hands it
  the box for periodic systems.
- ``backend="torch"``: an ``openmmtorch.TorchForce`` running a TorchScript export of the model
  (see :mod:`lawful.integrations.torchscript_force`); needs the optional ``openmmtorch`` package.
  ``"auto"`` picks it when ``openmmtorch`` imports, else the python backend.

Units are converted only here, with the constants of :mod:`lawful.integrations.units`.

Errors raised inside an OpenMM force callback reach Python as ``openmm.OpenMMException`` (OpenMM
crosses C++ in between) with lawful's message; wrap the MD loop in :func:`lawful_errors` to get
the original :class:`lawful.kernels.LawfulError` subclass back.
"""

from __future__ import annotations

import contextlib
import os
import threading

import ase.units as _ase_units
import numpy as np
import openmm
import torch
from openmm import unit as _omm_unit

from lawful.integrations import units
from lawful.integrations.runner import ModelRunner, resolve_model
from lawful.integrations.monitors import CsvLog, DriftAccumulator, DriftSummary
from lawful.kernels.errors import BackendError, InputError, LawfulError, NumericalError

__all__ = ["create_force", "numbers_from_topology", "topology_from_atoms", "system_from_atoms", "DriftReporter", "lawful_errors", "LawfulComputation",
           "available_backends"]

_BACKENDS = ("auto", "python", "torch")
# The last lawful error raised inside a force callback. Process-wide on purpose: OpenMM platforms
# may call the callback from their own worker threads, not the thread that called step().
_last_error: list = [None]
_error_lock = threading.Lock()


def _record_error(exc: LawfulError) -> None:
    with _error_lock:
        _last_error[0] = exc


@contextlib.contextmanager
def lawful_errors():
    """Re-raise lawful's own exception when a lawful force fails inside OpenMM.

    >>> with lawful_errors():
    ...     simulation.step(1000)

    OpenMM turns exceptions raised in a force callback into ``openmm.OpenMMException``; inside
    this context the original :class:`LawfulError` subclass (e.g. ``NumericalError`` for NaN
    positions) is raised instead, chained to OpenMM's exception; OpenMM's own NaN errors become
    :class:`NumericalError` too.
    """
    with _error_lock:
        _last_error[0] = None
    try:
        yield
    except openmm.OpenMMException as exc:
        with _error_lock:
            err, _last_error[0] = _last_error[0], None
        if err is not None:
            raise err from exc
        if "nan" in str(exc).lower():  # OpenMM's own NaN checks (e.g. the CPU platform's)
            raise NumericalError(
                f"OpenMM reports NaN: {exc}. The simulation has blown up: reduce the time step, "
                "minimise the structure first, or check the starting velocities."
            ) from exc
        raise


def available_backends() -> list[str]:
    """The backends that work here: always ``"python"``, plus ``"torch"`` when openmmtorch imports."""
    out = ["python"]
    try:
        import openmmtorch  # noqa: F401

        out.append("torch")
    except ImportError:
        pass
    return out


def numbers_from_topology(topology, atoms=None) -> np.ndarray:
    """Atomic numbers (int64) of the topology's atoms, or of the ``atoms`` subset (indices).

    Raises :class:`InputError` for an atom without an element (a virtual site or dummy atom) or
    an index outside the topology.
    """
    all_atoms = list(topology.atoms())
    chosen = range(len(all_atoms)) if atoms is None else atoms
    out = []
    for idx in chosen:
        if not 0 <= idx < len(all_atoms):
            raise InputError(f"atom index {idx} is outside the topology ({len(all_atoms)} atoms).")
        a = all_atoms[idx]
        if a.element is None:
            raise InputError(
                f"topology atom {idx} ({a.name!r} in residue {a.residue.name!r} {a.residue.id}) has no "
                "element, so the model cannot handle it: leave it out of atoms=[...] (ML/MM) or give "
                "it an element in the topology."
            )
        out.append(a.element.atomic_number)
    return np.asarray(out, dtype=np.int64)


def _subset(atoms, n_total: int | None) -> list[int] | None:
    if atoms is None:
        return None
    idx = [int(i) for i in atoms]
    if not idx:
        raise InputError("atoms=[] selects no atom: pass the indices of the ML subset, or atoms=None for all.")
    if len(set(idx)) != len(idx):
        raise InputError(f"atoms contains repeated indices: {sorted(i for i in set(idx) if idx.count(i) > 1)}.")
    if n_total is not None and (min(idx) < 0 or max(idx) >= n_total):
        raise InputError(f"atoms indices must lie in [0, {n_total}), got min {min(idx)} and max {max(idx)}.")
    return idx


class LawfulComputation:
    """The callback of the python backend: ``computation(state) -> (energy kJ/mol, forces kJ/mol/nm)``.

    ``state.getPositions()`` holds only the ML particles when the force has a subset
    (``setParticles``). Buffers are allocated once; per call: one copy of the positions into a
    torch tensor (nm -> Å), the model, one scaled copy of the forces into a NumPy array.
    Pickles compactly (model + numbers + options), as OpenMM does when it copies a System.
    """

    def __init__(self, model, numbers, periodic: bool, skin: float = 0.5):
        self.model = model
        self.periodic = bool(periodic)
        self.skin = float(skin)
        self.runner = ModelRunner(model, numbers, skin=skin)
        self._forces = np.zeros((self.runner.n_atoms, 3), dtype=np.float64)
        self.calls = 0

    def __reduce__(self):
        return (LawfulComputation, (self.model, self.runner.numbers_np, self.periodic, self.skin))

    def __call__(self, state):
        try:
            pos_nm = state.getPositions(asNumpy=True).value_in_unit(_omm_unit.nanometer)
            if self.periodic:
                box_nm = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(_omm_unit.nanometer)
                out = self.runner.evaluate(pos_nm, cell=box_nm, pbc=True, length_scale=units.ANGSTROM_PER_NM)
            else:
                out = self.runner.evaluate(pos_nm, cell=None, pbc=False, length_scale=units.ANGSTROM_PER_NM)
        except LawfulError as exc:
            _record_error(exc)
            raise
        self.calls += 1
        f = out["forces"]
        if f.dtype != torch.float64 or f.device.type != "cpu":
            f = f.to("cpu", torch.float64)
        np.multiply(f.numpy(), units.FORCE_OPENMM_PER_ASE, out=self._forces)
        return float(out["energy"]) * units.KJMOL_PER_EV, self._forces


def create_force(model, topology=None, numbers=None, atoms=None, periodic=None, backend: str = "auto", *,
                 device=None, dtype=None, skin: float = 0.5, force_group: int = 0) -> openmm.Force:
    """An ``openmm.Force`` computing a lawful model's energy and forces.

    Parameters
    ----------
    model:
        a lawful model object or the path of a ``.lawful`` file.
    topology:
        an ``openmm.app.Topology``: gives the elements and, by its box vectors, periodicity.
    numbers:
        atomic numbers instead of (or to check against) the topology: one per System particle, or
        one per atom of the ``atoms`` subset.
    atoms:
        indices of the particles the model acts on (ML/MM); ``None``: every particle.
    periodic:
        whether the model sees the periodic box; ``None``: periodic iff the topology has box
        vectors.
    backend:
        ``"python"`` (openmm.PythonForce), ``"torch"`` (openmmtorch.TorchForce) or ``"auto"``
        (torch when openmmtorch imports and the model has a TorchScript export, else python).
    device, dtype:
        torch device and dtype (``None``: the model's own, float64 for MD).
    skin:
        Verlet skin in Å for the reused neighbour list (python backend).
    force_group:
        the OpenMM force group of the returned force.

    The force's name, ``LawfulForce[<backend>,<dtype>,<device>]``, reports what is used.
    Raises :class:`UnsupportedSpeciesError` for elements the model does not know,
    :class:`ModelFileError` for a missing/invalid model file, :class:`BackendError` when
    ``backend="torch"`` but openmmtorch is not installed.
    """
    if backend not in _BACKENDS:
        raise InputError(f"unknown backend {backend!r}: use one of {list(_BACKENDS)}.")
    auto = backend == "auto"
    if auto:
        backend = "torch" if "torch" in available_backends() else "python"
    n_total = topology.getNumAtoms() if topology is not None else None
    subset = _subset(atoms, n_total)
    if topology is not None:
        z = numbers_from_topology(topology, subset)
        if numbers is not None:
            given = np.asarray(numbers, dtype=np.int64).reshape(-1)
            if subset is not None and given.shape[0] == n_total:
                given = given[subset]
            if not np.array_equal(given, z):
                raise InputError("numbers disagree with the topology's elements: pass one or the other.")
    elif numbers is not None:
        z = np.asarray(numbers, dtype=np.int64).reshape(-1)
        if subset is not None and z.shape[0] != len(subset):
            if z.shape[0] <= max(subset):
                raise InputError(f"numbers has {z.shape[0]} entries but atoms selects index {max(subset)}: "
                                 "pass one number per System particle or one per selected atom.")
            z = z[subset]
    else:
        raise InputError("create_force needs the elements: pass topology=... or numbers=[...].")
    if periodic is None:
        periodic = topology is not None and topology.getPeriodicBoxVectors() is not None
    model = resolve_model(model, device=device, dtype=dtype)
    force = None
    if backend == "torch":
        from lawful.integrations.torchscript_force import create_torch_force

        try:
            force = create_torch_force(model, z, subset, n_total, periodic=bool(periodic))
        except BackendError:
            if not auto:
                raise
            backend = "python"  # "auto": a model without a TorchScript export (DirectForceModel)
    if force is None:
        force = openmm.PythonForce(LawfulComputation(model, z, bool(periodic), skin=skin))
        force.setUsesPeriodicBoundaryConditions(bool(periodic))
        if subset is not None:
            force.setParticles(subset)
    force.setForceGroup(int(force_group))
    # what is actually used, readable from the System (e.g. after XML serialisation)
    dev = getattr(model, "device", "cpu")
    force.setName(f"LawfulForce[{backend},{str(getattr(model, 'dtype', '')).replace('torch.', '')},{dev}]")
    return force


def topology_from_atoms(atoms):
    """An ``openmm.app.Topology`` (one residue per atom) and positions (``Quantity``, nm) for
    ``ase.Atoms``; periodic atoms give the topology their cell as box vectors (nm)."""
    from openmm import app

    top = app.Topology()
    chain = top.addChain()
    for k, z in enumerate(atoms.numbers):
        el = app.Element.getByAtomicNumber(int(z))
        res = top.addResidue(el.symbol, chain)
        top.addAtom(el.symbol, el, res, id=str(k + 1))
    if atoms.pbc.any():
        if not atoms.pbc.all():
            raise InputError(f"OpenMM boxes are periodic in all three directions; atoms.pbc={list(atoms.pbc)}: "
                             "use pbc=True (with a vacuum gap if needed) or pbc=False.")
        box = np.asarray(atoms.cell.array) * units.NM_PER_ANGSTROM
        top.setPeriodicBoxVectors([openmm.Vec3(*row) for row in box] * _omm_unit.nanometer)
    positions = _omm_unit.Quantity(np.asarray(atoms.positions) * units.NM_PER_ANGSTROM, _omm_unit.nanometer)
    return top, positions


def system_from_atoms(atoms, model, backend: str = "auto", **kwargs):
    """A System for ``ase.Atoms`` with one lawful force (masses from the atoms, amu = dalton),
    plus its topology and positions (nm): ``system, topology, positions``. ``kwargs`` go to
    :func:`create_force`. No CMMotionRemover and no thermostat: ready for NVE."""
    top, positions = topology_from_atoms(atoms)
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))  # ASE masses are in amu = dalton, OpenMM's mass unit
    if top.getPeriodicBoxVectors() is not None:
        system.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
    system.addForce(create_force(model, topology=top, backend=backend, **kwargs))
    return system, top, positions


_KB_EV = _ase_units.create_units(units.CODATA_VERSION)["kB"]


class DriftReporter:
    """An OpenMM reporter measuring energy drift inside OpenMM's own MD loop.

    >>> reporter = DriftReporter("drift.csv", reportInterval=10)
    >>> simulation.reporters.append(reporter)
    >>> reporter.record(simulation)          # optional: include t = 0
    >>> simulation.step(10000)
    >>> reporter.summary().drift_mev_per_atom_per_ps

    Every ``reportInterval`` steps it asks OpenMM for the energies, converts them to eV (lawful's
    units module), feeds one :class:`DriftAccumulator` and, when ``file`` is given, appends a CSV
    row (columns :data:`lawful.integrations.monitors.CSV_COLUMNS`), flushed each report.
    ``n_atoms`` defaults to the number of particles with non-zero mass.
    """

    def __init__(self, file: str | os.PathLike | None, reportInterval: int, n_atoms: int | None = None):
        if int(reportInterval) <= 0:
            raise InputError(f"reportInterval must be a positive number of steps, got {reportInterval}.")
        self._interval = int(reportInterval)
        self._file = file
        self._n_atoms = n_atoms
        self.log: CsvLog | None = None
        self.accumulator: DriftAccumulator | None = None
        self._dof = None
        self._last_step = None

    def describeNextReport(self, simulation):
        """OpenMM reporter protocol: steps to the next report, and that energies are needed."""
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": ["energy"]}

    def _setup(self, simulation) -> None:
        system = simulation.system
        masses = [system.getParticleMass(i).value_in_unit(_omm_unit.dalton) for i in range(system.getNumParticles())]
        n_real = sum(1 for m in masses if m > 0.0)
        n_atoms = self._n_atoms if self._n_atoms is not None else n_real
        self.accumulator = DriftAccumulator(n_atoms)
        dof = 3 * n_real - system.getNumConstraints()
        if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
            dof -= 3
        self._dof = max(dof, 1)
        if self._file is not None:
            self.log = CsvLog(self._file)

    def report(self, simulation, state) -> None:
        """OpenMM reporter protocol: record the state's potential and kinetic energy."""
        if self.accumulator is None:
            self._setup(simulation)
        step = int(state.getStepCount()) if hasattr(state, "getStepCount") else int(simulation.currentStep)
        if step == self._last_step:
            return
        self._last_step = step
        t_ps = state.getTime().value_in_unit(_omm_unit.picosecond)
        u = state.getPotentialEnergy().value_in_unit(_omm_unit.kilojoule_per_mole) * units.EV_PER_KJMOL
        k = state.getKineticEnergy().value_in_unit(_omm_unit.kilojoule_per_mole) * units.EV_PER_KJMOL
        self.accumulator.add(t_ps, u, k)
        if self.log is not None:
            self.log.write(step, t_ps, u, k, 2.0 * k / (self._dof * _KB_EV))

    def record(self, simulation) -> None:
        """Record the current state now (e.g. t = 0 before ``simulation.step``)."""
        groups = simulation.integrator.getIntegrationForceGroups()
        self.report(simulation, simulation.context.getState(getEnergy=True, groups=groups))

    def summary(self) -> DriftSummary:
        """The :class:`DriftSummary` of every report so far."""
        if self.accumulator is None:
            raise InputError("the DriftReporter has not reported yet: run simulation.step(...) first.")
        return self.accumulator.summary()

    def close(self) -> None:
        """Close the CSV file, if any."""
        if self.log is not None:
            self.log.close()
