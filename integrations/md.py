"""One MD driver for both engines: NVE (or Langevin NVT) with drift monitoring, in ASE's or
OpenMM's own integrator.

>>> from lawful.integrations.md import run_md
>>> res = run_md(atoms, "cu.lawful", engine="openmm", timestep_fs=2.0, steps=5000, out="md-out")
>>> res.summary.drift_mev_per_atom_per_ps

``model`` is a lawful model, the path of a ``.lawful`` file, or ``"emt"`` for ASE's classical EMT
calculator (the reference the neural models learn from; inside OpenMM it runs through openmm-ml's
``"ase"`` potential). Both engines start from the same positions and the same Maxwell–Boltzmann
velocities (seeded, centre-of-mass motion removed), so their runs are comparable step for step.
These are on-step velocities v(0); OpenMM's integrators (Verlet, LangevinMiddle) are leapfrog and
get v(0) - dt/2 F(0)/m (:func:`lawful.integrations.openmm.set_on_step_velocities`), so an NVE run
follows ASE's trajectory and its first ``drift.csv`` row has ASE's kinetic energy (to 1e-8, the
CODATA difference). md.json's ``initial_temperature_K`` is the on-step temperature over the degrees
of freedom the run's engine counts (ASE's NVT holds the centre of mass with ``FixCom``: 3N - 3, as
its ``drift.csv`` does; 3N otherwise, less fixed atoms), so it is the first row's; an OpenMM NVT
run's first row reports the half-step one (LangevinMiddle's convention), O(dt) apart (1 % for
32 Cu atoms rattled by 0.1 Å at 2 fs).

Velocities (``velocities=``): ``"auto"`` (default) keeps those the structure carries (a frame of an
earlier run's trajectory: a continuation stays one) and draws Maxwell–Boltzmann velocities at
``temperature_K`` when it carries none (all momenta zero); ``"keep"`` always keeps them (none: the
run starts at rest); ``"draw"`` always draws new ones. md.json's ``settings.velocities`` says which
happened and the temperature the run started at.

Plausibility (warned as a ``UserWarning``, recorded as md.json's ``verdict``): a time step below
:data:`MIN_PLAUSIBLE_TIMESTEP_FS` (0.05 fs, ten times finer than even X–H vibrations need) was
most likely typed in ps (``--dt 0.002`` meaning 2 fs); a run in which no atom moved further than
:data:`STILL_ANGSTROM` (0.001 Å, about a hundredth of a thermal vibration amplitude at room
temperature) from its start to its end (a relaxed structure at 0 K, or a step typed in ps) has
sampled no dynamics, and its "perfect" drift figure is meaningless. A run during which the model
warned that it left its training domain (:class:`~lawful.kernels.errors.OutOfDomainWarning`) is
``"suspect"``: its drift figure is that of an extrapolating model; md.json's ``domain_warnings``
holds the messages.

ASE's Langevin (NVT) runs with ``fixcm=False`` and ASE's ``FixCom`` constraint added to the
atoms' own (ASE's recommended form, which samples NVT correctly): the centre of mass stays put.
Atoms with ``FixAtoms`` get no ``FixCom`` (the fixed atoms already hold the frame);
``trajectory.traj`` frames carry the atoms' own constraints only.

OpenMM needs a reduced lower-triangular box: a cell not in that form (ASE's primitive fcc cell,
a skewed or left-handed cell) is rotated and lattice-reduced first
(:func:`lawful.integrations.openmm.openmm_frame`; the same crystal, the same energies), and the
velocities rotated with it. ``trajectory.dcd`` and ``topology.pdb`` are then in OpenMM's frame
(DCD stores the box as lengths and angles, which readers rebuild in exactly that frame);
md.json's ``settings.openmm_frame`` holds the rotation (``v_user = v_openmm @ rotation``) and the
box. The ASE engine's ``trajectory.traj`` is always in the atoms' own frame.

Outputs under ``out`` (when given): ``drift.csv`` (flushed every report), the trajectory
(``trajectory.traj`` for ASE; for OpenMM ``trajectory.dcd`` with its topology ``topology.pdb``
beside it, elements and box included, so ``vmd topology.pdb trajectory.dcd``,
``mdtraj.load("trajectory.dcd", top="topology.pdb")`` and ``MDAnalysis.Universe("topology.pdb",
"trajectory.dcd")`` open it directly) and ``md.json`` with the drift summary. ``out`` and the
OpenMM platform are checked before anything is computed.
"""

from __future__ import annotations

import json
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lawful.integrations import units
from lawful.integrations.monitors import DriftSummary
from lawful.kernels.errors import BackendError, InputError

__all__ = ["MDResult", "run_md", "ENGINES", "ENSEMBLES", "VELOCITIES", "MIN_PLAUSIBLE_TIMESTEP_FS",
           "STILL_ANGSTROM", "run_verdict", "default_timestep_fs", "HYDROGEN_TIMESTEP_FS", "DEFAULT_TIMESTEP_FS"]

ENGINES = ("ase", "openmm")
ENSEMBLES = ("nve", "nvt")
#: where the initial velocities come from (see the module docstring)
VELOCITIES = ("auto", "keep", "draw")
#: a time step below this (fs) is most likely one typed in ps (0.002 ps = 2 fs): even the fastest
#: molecular vibrations (X–H stretches, period ~9 fs) need no finer than ~0.5 fs
MIN_PLAUSIBLE_TIMESTEP_FS = 0.05
#: the default step (fs) for a structure with hydrogen (any atom lighter than
#: :data:`LIGHT_ATOM_AMU`): X–H stretches (period ~9 fs) need about 0.5 fs in NVE without bond
#: constraints (lawful md applies none); ethanol with organic-xtb at 2 fs had 17x the energy error
#: of 0.5 fs and blew up at 3 fs. Without hydrogen the default is :data:`DEFAULT_TIMESTEP_FS`.
HYDROGEN_TIMESTEP_FS = 0.5
DEFAULT_TIMESTEP_FS = 2.0
#: a step above this (fs) with hydrogen warns (the energy error grows as dt²)
MAX_HYDROGEN_TIMESTEP_FS = 1.0
#: atoms lighter than this (atomic mass units) count as hydrogen (H, D, T)
LIGHT_ATOM_AMU = 4.0
#: no atom moving further than this (Å) between the run's first and last frame means nothing moved:
#: thermal vibration amplitudes at room temperature are ~0.1 Å, and a 100-step run at 2 fs moves Cu
#: atoms at 300 K by ~0.3 Å; the drift of a run that sampled less is not a measurement
STILL_ANGSTROM = 1.0e-3


@dataclass
class MDResult:
    """What :func:`run_md` returns: the drift summary and where the outputs are."""

    engine: str
    model: str
    n_atoms: int
    steps: int
    timestep_fs: float
    ensemble: str
    summary: DriftSummary
    seconds: float
    step_seconds: float
    files: dict = field(default_factory=dict)
    #: largest displacement of any atom between the run's first and last frame (Å, unwrapped)
    max_displacement_angstrom: float = float("nan")
    #: the run's other settings (``md.json`` records them; dtype/device: those the model ran in);
    #: two runs that differed only in temperature, seed, platform or precision had the same md.json
    settings: dict = field(default_factory=dict)
    #: the model's out-of-training-domain warnings during the run (their messages, in order)
    domain_warnings: list = field(default_factory=list)

    @property
    def duration_ps(self) -> float:
        """Simulated time, ps (steps x time step)."""
        return self.steps * self.timestep_fs * units.PS_PER_FS

    @property
    def verdict(self) -> str:
        """Whether the drift figure measures anything: :func:`run_verdict` of this run."""
        return run_verdict(self.timestep_fs, self.steps, self.max_displacement_angstrom, self.domain_warnings)

    def as_dict(self) -> dict:
        """JSON-able form (what ``md.json`` holds)."""
        d = {k: getattr(self, k) for k in ("engine", "model", "n_atoms", "steps", "timestep_fs",
                                           "ensemble", "seconds", "step_seconds")}
        d["duration_ps"] = self.duration_ps
        d["max_displacement_angstrom"] = self.max_displacement_angstrom
        d["verdict"] = self.verdict
        d["domain_warnings"] = list(self.domain_warnings)
        d["settings"] = dict(self.settings)
        d["status"] = "complete"
        d["drift"] = self.summary.as_dict()
        if self.ensemble != "nve":
            d["drift"]["meaning"] = NVT_DRIFT_MEANING
        d["files"] = {k: str(v) for k, v in self.files.items()}
        return d


#: what the total-energy slope of a thermostatted run is (md.json and ``lawful md`` say it)
NVT_DRIFT_MEANING = ("under the Langevin thermostat the total-energy slope is heat exchanged with the bath, not "
                     "a conservation error; run --ensemble nve to measure drift")


def _model_label(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return "emt" if str(model).lower() == "emt" else Path(model).name
    return getattr(model, "kind", type(model).__name__)


def _is_emt(model) -> bool:
    return isinstance(model, str) and model.lower() == "emt"


def _initial_velocities(atoms, temperature_K: float, seed: int, velocities: str = "draw") -> dict:
    """Set the atoms' initial velocities as ``velocities`` asks (see the module docstring); returns
    what md.json records of them."""
    from ase.md import velocitydistribution as vd

    carried = bool(np.any(atoms.get_momenta() != 0.0))
    if velocities == "keep" or (velocities == "auto" and carried):
        return {"asked": velocities, "source": "input structure" if carried else "none (the structure carries "
                "none: the run starts at rest)", "initial_temperature_K": float(atoms.get_temperature())}
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29 (MaxwellBoltzmannDistribution deprecated)
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    return {"asked": velocities, "source": (f"drawn: Maxwell-Boltzmann at {float(temperature_K):g} K, seed {int(seed)}, "
                                            "centre-of-mass motion removed")
            + (" (the structure's own velocities were replaced)" if carried else ""),
            "initial_temperature_K": float(atoms.get_temperature())}


def run_verdict(timestep_fs: float, steps: int, max_displacement_angstrom: float,
                domain_warnings=()) -> str:
    """Whether a run's drift figure measures anything (md.json's ``verdict``): ``"ok"``, or a
    sentence starting ``"meaningless:"`` (no atom moved more than :data:`STILL_ANGSTROM`) or
    ``"suspect:"`` (a time step below :data:`MIN_PLAUSIBLE_TIMESTEP_FS`, or the model warned that
    the run left its training domain: ``domain_warnings``, their messages), naming the fix."""
    duration_ps = steps * timestep_fs * units.PS_PER_FS
    if np.isfinite(max_displacement_angstrom) and max_displacement_angstrom < STILL_ANGSTROM:
        return (f"meaningless: no atom moved more than {max_displacement_angstrom:.2g} Å in the {duration_ps:.4g} ps "
                f"run (below {STILL_ANGSTROM:g} Å), so the drift figure measures nothing; give the atoms a temperature "
                "(a structure at rest at an energy minimum does not move) or a plausible time step in fs")
    if timestep_fs < MIN_PLAUSIBLE_TIMESTEP_FS:
        return (f"suspect: the time step {timestep_fs:g} fs is below {MIN_PLAUSIBLE_TIMESTEP_FS:g} fs (a step in ps? "
                f"--dt and timestep_fs are in fs); the drift figure is that of a {duration_ps:.4g} ps run")
    if domain_warnings:
        first = str(domain_warnings[0])
        return (f"suspect: the model warned {len(domain_warnings)} time(s) that the run left its training domain "
                f"(first: {first[:240]}{'...' if len(first) > 240 else ''}), so the drift figure is that of an "
                "extrapolating model; see domain_warnings, and use a model trained on such structures")
    return "ok"


def _has_hydrogen(atoms) -> bool:
    masses = atoms.get_masses()
    return bool(len(masses)) and float(masses.min()) < LIGHT_ATOM_AMU


def default_timestep_fs(atoms) -> float:
    """The step ``run_md`` and ``lawful md`` use when none is given: :data:`HYDROGEN_TIMESTEP_FS`
    (0.5 fs) when ``atoms`` hold hydrogen, else :data:`DEFAULT_TIMESTEP_FS` (2 fs)."""
    return HYDROGEN_TIMESTEP_FS if _has_hydrogen(atoms) else DEFAULT_TIMESTEP_FS


def _warn_timestep(timestep_fs: float, atoms) -> None:
    if timestep_fs > MAX_HYDROGEN_TIMESTEP_FS and _has_hydrogen(atoms):
        warnings.warn(f"timestep_fs={timestep_fs:g} fs with hydrogen atoms: X-H bonds vibrate with a period of about "
                      f"9 fs and lawful md constrains no bond, so the NVE energy error grows as dt² (ethanol at 2 fs: "
                      f"17x that of 0.5 fs; 3 fs blows up); use {HYDROGEN_TIMESTEP_FS:g} fs (the default with hydrogen, "
                      "and the README's molecule runs), at most "
                      f"{MAX_HYDROGEN_TIMESTEP_FS:g} fs.", UserWarning, stacklevel=3)
    if timestep_fs < MIN_PLAUSIBLE_TIMESTEP_FS:
        warnings.warn(f"timestep_fs={timestep_fs:g} fs is implausibly small (below {MIN_PLAUSIBLE_TIMESTEP_FS:g} fs): "
                      f"did you mean ps? --dt and timestep_fs are in fs ({timestep_fs:g} ps = "
                      f"{timestep_fs * units.FS_PER_PS:g} fs); a run this fine moves nothing and its drift figure "
                      "means nothing.", UserWarning, stacklevel=3)


def _warn_still(result: "MDResult") -> None:
    if result.verdict.startswith("meaningless"):
        warnings.warn(f"nothing moved in this MD run: {result.verdict}.", UserWarning, stacklevel=3)


def _max_displacement(start: np.ndarray, end: np.ndarray) -> float:
    """Largest |end - start| over the atoms (Å; unwrapped positions, so no image is needed)."""
    return float(np.sqrt(((np.asarray(end) - np.asarray(start)) ** 2).sum(axis=1)).max()) if len(start) else 0.0


def _check(engine: str, ensemble: str, timestep_fs: float, steps: int, report_interval: int,
           velocities: str = "auto") -> None:
    if velocities not in VELOCITIES:
        raise InputError(f"velocities={velocities!r} is not one of {list(VELOCITIES)}: 'auto' keeps the structure's "
                         "own velocities (or draws them when it has none), 'keep' keeps them, 'draw' draws new ones.")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: use one of {list(ENGINES)}.")
    if ensemble not in ENSEMBLES:
        raise InputError(f"unknown ensemble {ensemble!r}: use one of {list(ENSEMBLES)}.")
    if not (isinstance(timestep_fs, numbers.Real) and timestep_fs > 0 and np.isfinite(timestep_fs)):
        raise InputError(f"timestep_fs={timestep_fs!r} must be a positive number of femtoseconds.")
    for name, value in (("steps", steps), ("report_interval", report_interval)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise InputError(f"{name}={value!r} must be a positive integer number of steps.")
    if steps % report_interval:
        # both engines sample (and write frames) every report_interval steps: the drift fit and the
        # trajectory stopped at the last multiple while the summary reported the whole run
        lo, hi = steps - steps % report_interval, steps + report_interval - steps % report_interval
        raise InputError(f"steps={steps} is not a multiple of report_interval={report_interval}: the drift samples "
                         f"and trajectory frames would end at step {lo} while the run went on to {steps}; run "
                         f"{hi}{f' (or {lo})' if lo > 0 else ''} steps, or pick a report interval that divides "
                         f"{steps}.")


def _temperature_dof(atoms) -> int:
    """The degrees of freedom the run's temperatures count (ASE's rule, which the OpenMM reporter
    matches here): 3N less those the atoms' constraints remove (3 per fixed atom; 3 for the FixCom
    of ASE's NVT)."""
    return int(3 * len(atoms) - sum(c.get_removed_dof(atoms) for c in atoms.constraints))


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=False)


def _run_ase(atoms, model, *, timestep_fs, steps, ensemble, temperature_K, friction_per_ps,
             report_interval, out, seed, dtype, device, progress, strict, on_start=lambda temperature_K, dof: None):
    import ase.units as aseu
    from ase.io.trajectory import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    from lawful.integrations.monitors import DriftObserver

    if _is_emt(model):
        from ase.calculators.emt import EMT

        atoms.calc = EMT()
    else:
        from lawful.integrations.ase import LawfulCalculator

        atoms.calc = LawfulCalculator(model, dtype=dtype, device=device, strict=strict)
    dt = timestep_fs * aseu.fs
    own_constraints = list(atoms.constraints)   # the user's, written with each trajectory frame
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        from ase.constraints import FixAtoms, FixCom

        # ASE's recommended form: fixcm=True does not sample NVT correctly (its FutureWarning in
        # every run); FixCom keeps the centre of mass in place, beside the atoms' own constraints.
        # Fixed atoms already pin the frame (and FixCom would shift them): then no FixCom.
        if not any(isinstance(c, (FixAtoms, FixCom)) for c in own_constraints):
            atoms.set_constraint(own_constraints + [FixCom()])
        dyn = Langevin(atoms, timestep=dt, temperature_K=temperature_K, fixcm=False,
                       friction=friction_per_ps / (1000.0 * aseu.fs), rng=np.random.default_rng(seed + 1))
    files = {}
    on_start(float(atoms.get_temperature()), _temperature_dof(atoms))   # with FixCom: the dof drift.csv counts
    obs = DriftObserver(dyn, csv=(out / "drift.csv") if out else None, nve=ensemble == "nve")
    dyn.attach(obs, interval=report_interval)
    traj = None
    if out:
        files["trajectory"] = out / "trajectory.traj"
        traj = Trajectory(str(files["trajectory"]), "w", atoms)
        from lawful.kernels.modelfile import signals_held

        def write_frame():
            # a Ctrl-C or SIGTERM inside the frame's write (numpy's tofile) came out as a TypeError,
            # exit 1 and a torn last frame: the signal waits until the frame is written
            with signals_held():
                added = atoms.constraints
                atoms.constraints = own_constraints   # the frame carries the user's constraints, not FixCom
                try:
                    traj.write()
                finally:
                    atoms.constraints = added

        dyn.attach(write_frame, interval=report_interval)
    bar = _progress(steps, f"ase {ensemble}", progress)
    # ASE calls observers at step 0 too: the bar counts the steps run (it showed 210 of 200)
    dyn.attach(lambda: bar.update(report_interval) if dyn.nsteps else None, interval=report_interval)
    start = atoms.get_positions()
    t0 = time.perf_counter()
    try:
        dyn.run(steps)
    finally:
        seconds = time.perf_counter() - t0
        bar.close()
        obs.close()
        if traj is not None:
            traj.close()
    if out:
        files["drift_csv"] = out / "drift.csv"
    return obs.summary(), seconds, files, _max_displacement(start, atoms.get_positions())


def _openmm_platform(name: str):
    """The OpenMM platform called ``name``; :class:`BackendError` listing those available."""
    import openmm

    available = [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())]
    if name not in available:
        raise BackendError(f"OpenMM platform {name!r} is not available here (available: {available}): pick one "
                           "of those (Reference is double precision everywhere).")
    return openmm.Platform.getPlatformByName(name)


def _check_out(out) -> Path | None:
    """``out`` as a folder that can be written, made if needed; InputError before any computation."""
    from lawful.kernels.paths import writable_folder

    return None if out is None else writable_folder(out, "out=")


def _openmm_system(atoms, model, dtype, device, strict=False):
    from lawful.integrations.openmm import apply_ase_constraints, system_from_atoms, topology_from_atoms

    if not _is_emt(model):
        return system_from_atoms(atoms, model, backend="python", dtype=dtype, device=device, strict=strict)
    from ase.calculators.emt import EMT
    from openmmml import MLPotential

    from lawful.integrations.openmm import interrupt_message

    class _EMT(EMT):
        """ASE's EMT with a Ctrl-C inside its OpenMM callback kept for lawful_errors (interrupt_message)."""

        def calculate(self, *args, **kwargs):
            try:
                return super().calculate(*args, **kwargs)
            except KeyboardInterrupt as exc:
                raise RuntimeError(interrupt_message(exc)) from None

    top, positions = topology_from_atoms(atoms)
    system = MLPotential("ase").createSystem(top, calculator=_EMT(), removeCMMotion=False)
    for k, m in enumerate(atoms.get_masses()):
        system.setParticleMass(k, float(m))
    apply_ase_constraints(system, atoms)
    return system, top, positions


def _run_openmm(atoms, model, *, timestep_fs, steps, ensemble, temperature_K, friction_per_ps,
                report_interval, out, seed, dtype, device, progress, platform, strict,
                on_start=lambda temperature_K, dof: None):
    import openmm
    from openmm import app
    from openmm import unit as u

    from lawful.integrations.openmm import DriftReporter, lawful_errors, set_on_step_velocities, velocities_from_ase
    from lawful.integrations.monitors import moving_atoms

    platform = _openmm_platform(platform)
    system, top, positions = _openmm_system(atoms, model, dtype, device, strict=strict)
    dt_ps = timestep_fs * units.PS_PER_FS
    if ensemble == "nve":
        integrator = openmm.VerletIntegrator(dt_ps)
    else:
        integrator = openmm.LangevinMiddleIntegrator(temperature_K, friction_per_ps, dt_ps)
        integrator.setRandomNumberSeed(int(seed) + 1)
    sim = app.Simulation(top, system, integrator, platform)
    sim.context.setPositions(positions)
    # the atoms' on-step velocities, in nm/ps and OpenMM's frame (rotated with the positions)
    v_nm_ps = velocities_from_ase(atoms)
    files = {}
    on_start(float(atoms.get_temperature()), _temperature_dof(atoms))   # 3N less fixed atoms: no CMMotionRemover
    # per moving atom, as the ASE engine's DriftObserver counts (FixAtoms-held atoms are massless
    # here): len(atoms) reported a slab with a quarter of its atoms fixed 25 % low (audit)
    reporter = DriftReporter((out / "drift.csv") if out else None, report_interval, n_atoms=moving_atoms(atoms),
                             nve=ensemble == "nve")
    sim.reporters.append(reporter)
    if out:
        files["topology"] = out / "topology.pdb"  # DCD holds coordinates only: its topology beside it
        with open(files["topology"], "w", encoding="utf-8") as fh:
            app.PDBFile.writeFile(top, positions, fh, keepIds=True)
        files["trajectory"] = out / "trajectory.dcd"
        # unwrapped, as ASE's trajectory: the System's forces report no bonds, so OpenMM's wrapping
        # (per molecule) would wrap every atom on its own and tear a molecule across the box apart
        sim.reporters.append(app.DCDReporter(str(files["trajectory"]), report_interval, enforcePeriodicBox=False))
    bar = _progress(steps, f"openmm {ensemble}", progress)
    t0 = time.perf_counter()
    try:
        with lawful_errors():
            # both integrators are leapfrog: v(-dt/2) = v(0) - dt/2 F(0)/m, the same start as ASE's
            # (one force evaluation, here so that an error in it is reported as the run's)
            set_on_step_velocities(sim.context, v_nm_ps)
            reporter.record(sim)
            done = 0
            while done < steps:
                chunk = min(report_interval * 10, steps - done)
                sim.step(chunk)
                done += chunk
                bar.update(chunk)
    finally:
        seconds = time.perf_counter() - t0
        bar.close()
        reporter.close()
        sim.reporters.clear()  # drops the DCDReporter, which closes its file
    if out:
        files["drift_csv"] = out / "drift.csv"
    end = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    start = positions.value_in_unit(u.nanometer)
    return reporter.summary(), seconds, files, _max_displacement(start, end) / units.NM_PER_ANGSTROM


def model_validation(model) -> dict | None:
    """The validation errors a lawful model file records of its training (``training_summary``):
    ``{"force_mae_meV_per_A", "energy_mae_meV_per_atom", "frames"}``, or None (none recorded, or a
    model made in memory). md.json's ``settings.model_validation``: a run's drift says whether energy
    is conserved, not whether the forces are right, and a new user read one for the other."""
    summary = getattr(model, "training_summary", None) or {}
    force, energy = summary.get("val_force_mae_eV_per_A"), summary.get("val_energy_mae_per_atom_eV")
    if not isinstance(force, (int, float)) or not isinstance(energy, (int, float)):
        return None
    return {"force_mae_meV_per_A": 1e3 * float(force), "energy_mae_meV_per_atom": 1e3 * float(energy),
            "frames": summary.get("n_val")}


def run_md(atoms, model, engine: str = "ase", *, timestep_fs: float | None = None, steps: int = 1000,
           ensemble: str = "nve", temperature_K: float = 300.0, friction_per_ps: float = 1.0,
           report_interval: int = 10, out: str | os.PathLike | None = None, seed: int = 0,
           dtype=None, device=None, progress: bool = False, platform: str = "Reference",
           strict: bool = False, velocities: str = "auto", source: str | None = None) -> MDResult:
    """Run MD of ``atoms`` (``ase.Atoms``, copied, not changed) with ``model`` in ``engine``.

    Units: ``timestep_fs`` in fs (None: :func:`default_timestep_fs`, 0.5 fs with hydrogen, else 2
    fs), ``temperature_K`` in K (initial velocities; NVT target),
    ``friction_per_ps`` in 1/ps (NVT only). ``report_interval`` steps between drift samples and
    trajectory frames. ``platform`` is the OpenMM platform (``Reference`` = double precision).
    ``strict``: an out-of-domain structure stops the run (:class:`NumericalError`) instead of
    warning once. Returns an :class:`MDResult`; with ``out`` also writes ``drift.csv``, the
    trajectory (OpenMM: ``trajectory.dcd`` + ``topology.pdb``, in OpenMM's frame: see the module
    docstring) and ``md.json``. ``dtype`` / ``device``: None keeps the model's own; ``settings`` (and
    md.json) record the ones the model ran in. ``velocities``: ``"auto"`` (keep the structure's own,
    draw at ``temperature_K`` when it has none), ``"keep"`` or ``"draw"`` (module docstring).
    md.json's ``settings.structure`` records what ran (formula, periodicity, cell rows in Å) and ``source``,
    where it came from (``lawful md``: the ``--structure`` path or the fcc supercell's element,
    lattice and repeat), when given.

    Warns (``UserWarning``) for a time step below :data:`MIN_PLAUSIBLE_TIMESTEP_FS` (typed in ps?),
    above :data:`MAX_HYDROGEN_TIMESTEP_FS` with hydrogen atoms,
    and after a run in which nothing moved (:data:`STILL_ANGSTROM`); ``result.verdict`` (md.json's
    ``verdict``) says whether the drift figure measures anything.
    """
    if timestep_fs is None:
        timestep_fs = default_timestep_fs(atoms)
    _check(engine, ensemble, timestep_fs, steps, report_interval, velocities)
    if engine == "openmm":
        _openmm_platform(platform)  # before anything is computed or written
    out_dir = _check_out(out)
    _warn_timestep(timestep_fs, atoms)
    atoms = atoms.copy()
    velocity_record = _initial_velocities(atoms, temperature_K, seed, velocities)
    ran_dtype = ran_device = None
    if not _is_emt(model):   # md.json names the dtype/device the model really runs in
        from lawful.integrations.runner import model_device, model_dtype, resolve_model

        # resolved here only to read them: the engines get the model as given, so that a
        # trajectory's calculator still names the file (its path and sha256), not "in memory"
        ran = resolve_model(model, device=device, dtype=dtype)
        ran_dtype, ran_device = str(model_dtype(ran)).removeprefix("torch."), str(model_device(ran))
        validation = model_validation(ran)
        del ran
    else:
        validation = None
    settings = {"model_path": str(model) if isinstance(model, (str, os.PathLike)) and not _is_emt(model) else None,
                "temperature_K": float(temperature_K), "seed": int(seed), "report_interval": int(report_interval),
                "friction_per_ps": float(friction_per_ps) if ensemble == "nvt" else None,
                "platform": platform if engine == "openmm" else None, "strict": bool(strict),
                # EMT is ASE's own calculator (float64, CPU): dtype and device apply to lawful models
                "dtype": "float64 (EMT)" if _is_emt(model) else ran_dtype,
                "device": "cpu (EMT)" if _is_emt(model) else ran_device,
                "velocities": velocity_record, "model_validation": validation}
    if engine == "openmm":
        from lawful.integrations.openmm import openmm_frame

        settings["openmm_frame"] = openmm_frame(atoms).as_dict()   # InputError (a flat cell) before any step
    settings["structure"] = {"formula": atoms.get_chemical_formula(), "pbc": [bool(p) for p in atoms.pbc],
                             "cell_A": [[round(float(x), 9) for x in row] for row in atoms.cell.array],
                             "source": source}
    header = {"engine": engine, "model": _model_label(model), "n_atoms": len(atoms), "steps": steps,
              "timestep_fs": timestep_fs, "ensemble": ensemble, "settings": settings}
    started = []

    def start(temperature_K: float, dof: int) -> None:
        """Called by the engine right before it writes its first output, with the on-step
        temperature over the degrees of freedom it counts: the earlier run's md.json (kept when this
        one was interrupted: a user read A's drift beside B's drift.csv) and the other engine's
        trajectory files go, and md.json says this run is running."""
        # ASE's NVT adds FixCom (3N - 3): drawn velocities counted over 3N read 3 % cold for 32 atoms
        velocity_record["initial_temperature_K"] = temperature_K
        rule = "3N less the degrees of freedom constraints remove (fixed atoms; ASE's NVT adds FixCom: 3)"
        if ensemble == "nve" and dof == 3 * len(atoms) and len(atoms) > 1:
            rule += ("; drawn velocities carry no centre-of-mass motion, which NVE keeps at zero, so counted over "
                     f"3N - 3 these temperatures would read {dof}/{dof - 3} as high")
        settings["temperature_dof"] = {"count": int(dof), "rule": rule}
        started.append(True)
        if out_dir is None:
            return
        for name in _ENGINE_FILES["openmm" if engine == "ase" else "ase"]:
            (out_dir / name).unlink(missing_ok=True)
        _write_md_json(out_dir, {**header, "status": "running"})

    kwargs = dict(timestep_fs=timestep_fs, steps=steps, ensemble=ensemble, temperature_K=temperature_K,
                  friction_per_ps=friction_per_ps, report_interval=report_interval, out=out_dir,
                  seed=seed, dtype=dtype, device=device, progress=progress, strict=strict, on_start=start)
    from lawful.integrations.runner import domain_report_log

    reports: list[str] = []          # what a failed run's md.json holds if it fails before the log opens
    try:
        with domain_report_log() as reports:
            if engine == "ase":
                summary, seconds, files, moved = _run_ase(atoms, model, **kwargs)
            else:
                summary, seconds, files, moved = _run_openmm(atoms, model, platform=platform, **kwargs)
    except BaseException as exc:
        if started and out_dir is not None:
            status = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                      else f"failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''})")
            _write_md_json(out_dir, {**header, "status": status, "domain_warnings": reports,
                                     "note": "the samples up to the stop are in drift.csv; no drift summary"})
        raise
    result = MDResult(engine=engine, model=_model_label(model), n_atoms=len(atoms), steps=steps,
                      timestep_fs=timestep_fs, ensemble=ensemble, summary=summary, seconds=seconds,
                      step_seconds=seconds / steps, files=files, settings=settings, max_displacement_angstrom=moved,
                      domain_warnings=reports)
    _warn_still(result)
    if out_dir is not None:
        result.files["json"] = out_dir / "md.json"
        _write_md_json(out_dir, result.as_dict())
    return result


#: the files each engine writes besides drift.csv and md.json
_ENGINE_FILES = {"ase": ("trajectory.traj",), "openmm": ("trajectory.dcd", "topology.pdb")}


def _write_md_json(out_dir: Path, doc: dict) -> None:
    from lawful.integrations.report import atomic_write_text

    atomic_write_text(out_dir / "md.json", json.dumps(doc, indent=2) + "\n")
