"""Energy-drift monitors: one accumulator, two engine adapters.

:class:`DriftAccumulator` takes a stream of samples ``(time_ps, potential_eV, kinetic_eV)`` for a
system of ``n_atoms`` atoms and keeps O(1) running sums (no growing arrays), from which
:meth:`DriftAccumulator.summary` reports, all per atom:

- ``drift_mev_per_atom_per_ps`` — the secular drift: slope of the least-squares line through the
  total energy E(t) = U + K, in meV/atom/ps;
- ``rms_fluctuation_mev_per_atom`` — RMS of E(t) about that line (the fluctuation left once the
  drift is taken out), meV/atom;
- ``max_abs_deviation_mev_per_atom`` — max |E(t) − E(t₀)|, meV/atom;
- ``sigma_kinetic_mev_per_atom`` — standard deviation of the kinetic energy, meV/atom: the natural
  scale of energy exchange in the run;
- ``drift_over_sigma_ke`` — |slope × duration| / σ(K): how much the total energy drifted over the
  whole run compared with the kinetic-energy fluctuation (dimensionless; ≪ 1 for a healthy NVE run).

The two adapters feed the same accumulator from inside each engine's own MD loop:

- :class:`DriftObserver` for ASE dynamics: ``dyn.attach(DriftObserver(dyn), interval=10)``;
- :class:`lawful.integrations.openmm.DriftReporter` for OpenMM simulations (a reporter).

Both can write a CSV (one row per sample, flushed after each row).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import ase.units as _ase_units

from lawful.integrations import units
from lawful.kernels.errors import InputError, NumericalError

__all__ = ["DriftAccumulator", "DriftSummary", "DriftObserver", "CsvLog", "CSV_COLUMNS", "BLOWUP_EV_PER_ATOM"]

#: A total energy this far (eV per atom) from the first sample means the run has blown up: no
#: stable MD of a bound system moves it that far (the largest excursion in the project's drift
#: results, the non-conservative controls included, is 0.013 eV/atom), and it is of the order of a
#: bond energy. An engine with no domain check of its own (ASE's EMT at a 50 fs step: 1e7 eV/atom)
#: would otherwise finish "complete" with a drift of 1e8 meV/atom/ps.
BLOWUP_EV_PER_ATOM = 1.0

#: Columns of the drift CSV files written by :class:`DriftObserver` and ``DriftReporter``.
CSV_COLUMNS = ("step", "time_ps", "potential_eV", "kinetic_eV", "total_eV", "temperature_K")

_MEV_PER_EV = 1.0e3  # a prefix, not a physical constant


@dataclass(frozen=True)
class DriftSummary:
    """What :meth:`DriftAccumulator.summary` reports (energies per atom, see the module doc, but
    ``mean_total_ev``: the whole system's mean total energy, eV)."""

    n_samples: int
    n_atoms: int
    duration_ps: float
    drift_mev_per_atom_per_ps: float
    rms_fluctuation_mev_per_atom: float
    max_abs_deviation_mev_per_atom: float
    sigma_kinetic_mev_per_atom: float
    drift_over_sigma_ke: float
    mean_total_ev: float

    def as_dict(self) -> dict:
        """The summary as a plain dict (JSON-able)."""
        return asdict(self)


class DriftAccumulator:
    """Streaming energy-drift statistics for an NVE run (see the module docstring).

    Parameters
    ----------
    n_atoms:
        number of atoms the energies belong to (used for the per-atom normalisation).
    blowup_ev_per_atom:
        :meth:`add` raises :class:`NumericalError` when the total energy has moved further than
        this from the first sample (eV per atom; default :data:`BLOWUP_EV_PER_ATOM`; None: never).
    conserving:
        True (NVE): a move either way counts. False (a thermostat or barostat exchanges energy):
        only a rise counts, since a thermostat legitimately carries off the heat of a structure
        relaxing from a poor start.

    Feed it with :meth:`add`; every quantity is kept as a running sum centred on the first sample
    (numerically safe in float64 for millions of samples), so memory use is constant.
    """

    def __init__(self, n_atoms: int, blowup_ev_per_atom: float | None = BLOWUP_EV_PER_ATOM,
                 conserving: bool = True):
        n_atoms = int(n_atoms)
        if n_atoms <= 0:
            raise InputError(f"n_atoms must be a positive integer, got {n_atoms}.")
        if blowup_ev_per_atom is not None and not (float(blowup_ev_per_atom) > 0.0):
            raise InputError(f"blowup_ev_per_atom must be a positive energy in eV/atom or None (no check), got "
                             f"{blowup_ev_per_atom!r}.")
        self.n_atoms = n_atoms
        self.blowup_ev_per_atom = None if blowup_ev_per_atom is None else float(blowup_ev_per_atom)
        self.conserving = bool(conserving)
        self.reset()

    def reset(self) -> None:
        """Forget every sample."""
        self.n = 0
        self._t0 = self._e0 = None
        self._t_last = 0.0
        self._st = self._se = self._stt = self._ste = self._see = 0.0
        self._max_dev = 0.0
        self._k_mean = self._k_m2 = 0.0  # Welford for the kinetic energy

    def add(self, time_ps: float, potential_ev: float, kinetic_ev: float) -> None:
        """Add one sample: time (ps), potential and kinetic energy of the whole system (eV).

        Times must not decrease from one sample to the next (an :class:`InputError` otherwise, the
        sample not added): one series is one run's clock."""
        t, u, k = float(time_ps), float(potential_ev), float(kinetic_ev)
        if not (math.isfinite(t) and math.isfinite(u) and math.isfinite(k)):
            raise NumericalError(
                f"non-finite sample at t={t} ps: potential={u} eV, kinetic={k} eV — the simulation "
                "has blown up; reduce the time step or check the starting structure."
            )
        e = u + k
        if self._t0 is None:
            self._t0, self._e0 = t, e
        x, y = t - self._t0, e - self._e0
        if self.n and x < self._t_last:
            # a second run fed into the same accumulator with its own clock (a new ASE dynamics
            # object starts at t = 0): its samples were fitted on top of the first run's times, so
            # 2 x 50 steps of Cu reported 2.1x the drift over half the duration, with no error (audit)
            raise InputError(
                f"drift sample at t={t:.6g} ps is earlier than the previous one (t={self._t0 + self._t_last:.6g} ps): "
                "the time must not go back within one drift series. A new dynamics object starts its clock at "
                "t = 0: continue the same one (dyn.run(more_steps) appends), give the new run its own "
                "accumulator, or call reset() to start the series again.")
        moved = (abs(y) if self.conserving else y) / self.n_atoms
        if self.blowup_ev_per_atom is not None and moved > self.blowup_ev_per_atom:
            raise NumericalError(
                f"the total energy {'rose' if y > 0 else 'fell'} by {abs(y) / self.n_atoms:.4g} eV/atom between "
                f"t={self._t0:.6g} ps and t={t:.6g} ps (more than {self.blowup_ev_per_atom:g} eV/atom: "
                "no stable MD moves it that far) — the simulation has blown up; reduce the time step or "
                "check the starting structure.")
        self.n += 1
        self._t_last = x
        self._st += x
        self._se += y
        self._stt += x * x
        self._ste += x * y
        self._see += y * y
        self._max_dev = max(self._max_dev, abs(y))
        dk = k - self._k_mean
        self._k_mean += dk / self.n
        self._k_m2 += dk * (k - self._k_mean)

    def summary(self) -> DriftSummary:
        """The drift statistics of every sample so far (needs at least two samples at two times)."""
        n = self.n
        if n < 2:
            raise InputError(f"drift needs at least 2 samples, got {n}: run more steps or report more often.")
        sxx = self._stt - self._st * self._st / n
        sxy = self._ste - self._st * self._se / n
        syy = self._see - self._se * self._se / n
        if sxx <= 0.0:
            raise InputError("all drift samples are at the same time: the time must advance between samples.")
        slope = sxy / sxx  # eV/ps (whole system)
        ssr = max(syy - slope * sxy, 0.0)
        rms = math.sqrt(ssr / n)
        sigma_k = math.sqrt(max(self._k_m2, 0.0) / (n - 1))
        duration = self._t_last
        per_atom_mev = _MEV_PER_EV / self.n_atoms
        total_drift = abs(slope * duration)
        ratio = total_drift / sigma_k if sigma_k > 0.0 else math.inf
        return DriftSummary(
            n_samples=n,
            n_atoms=self.n_atoms,
            duration_ps=duration,
            drift_mev_per_atom_per_ps=slope * per_atom_mev,
            rms_fluctuation_mev_per_atom=rms * per_atom_mev,
            max_abs_deviation_mev_per_atom=self._max_dev * per_atom_mev,
            sigma_kinetic_mev_per_atom=sigma_k * per_atom_mev,
            drift_over_sigma_ke=ratio,
            mean_total_ev=self._e0 + self._se / n,
        )


class CsvLog:
    """A CSV file of drift samples, one row per :meth:`write`, flushed after every row.

    ``path`` is opened for writing (truncated) and the header :data:`CSV_COLUMNS` written at once.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fh = open(self.path, "w", encoding="utf-8", newline="")
        self._fh.write(",".join(CSV_COLUMNS) + "\n")
        self._fh.flush()

    def write(self, step: int, time_ps: float, potential_ev: float, kinetic_ev: float,
              temperature_k: float) -> None:
        """Append one row and flush it to the operating system."""
        total = potential_ev + kinetic_ev
        self._fh.write(f"{int(step)},{time_ps:.10g},{potential_ev:.16g},{kinetic_ev:.16g},"
                       f"{total:.16g},{temperature_k:.8g}\n")
        self._fh.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._fh.closed:
            self._fh.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def moving_atoms(atoms) -> int:
    """The atoms of ``atoms`` not held in place by an ASE ``FixAtoms`` constraint or a
    ``FixCartesian`` that fixes all three directions (at least 1): the count a drift per atom
    divides by. (A ``FixCartesian`` of all three directions holds an atom as ``FixAtoms`` does; it
    was counted as moving. One of fewer directions leaves the atom moving.)"""
    import numpy as np
    from ase.constraints import FixAtoms, FixCartesian

    fixed = set()
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed.update(int(i) for i in c.get_indices())
        elif isinstance(c, FixCartesian):
            mask = np.asarray(c.mask, dtype=bool).reshape(-1, 3)
            index = np.asarray(c.index).reshape(-1)
            held = mask.all(axis=1) if mask.shape[0] == index.shape[0] else np.repeat(mask.all(), index.shape[0])
            fixed.update(int(i) for i in index[held])
    return max(1, len(atoms) - len(fixed))


#: ASE's internal time unit expressed in ps (ASE times are multiples of ``ase.units.fs``).
_PS_PER_ASE_TIME = units.PS_PER_FS / _ase_units.fs


class DriftObserver:
    """An ASE dynamics observer feeding a :class:`DriftAccumulator`.

    >>> dyn = VelocityVerlet(atoms, timestep=1 * ase.units.fs)
    >>> obs = DriftObserver(dyn, csv="nve.csv")
    >>> dyn.attach(obs, interval=10)
    >>> dyn.run(1000); print(obs.summary())

    Each call reads the dynamics' time (``dyn.get_time()``, converted to ps), the potential energy
    (eV, from the atoms' calculator — already computed by the integrator, so no extra force call)
    and the kinetic energy (eV). Call it once before ``dyn.run`` to record t = 0, or rely on ASE
    calling attached observers at step 0 (it does). ``nve``: the dynamics conserve energy (False
    for a thermostat: see ``conserving`` of :class:`DriftAccumulator`, which stops a blown-up run).
    Per atom means per moving atom: atoms held by ASE's ``FixAtoms`` are not counted, as OpenMM's
    :class:`~lawful.integrations.openmm.DriftReporter` does not count particles of zero mass (how
    OpenMM fixes atoms), so one system reports the same meV/atom/ps in both engines.
    """

    def __init__(self, dyn, csv: str | os.PathLike | None = None, accumulator: DriftAccumulator | None = None,
                 nve: bool = True):
        self.dyn = dyn
        self.atoms = dyn.atoms
        self.accumulator = (accumulator if accumulator is not None
                            else DriftAccumulator(moving_atoms(self.atoms), conserving=bool(nve)))
        self.log = CsvLog(csv) if csv is not None else None
        self._last_step = None

    def __call__(self) -> None:
        step = int(getattr(self.dyn, "nsteps", 0))
        if step == self._last_step:  # ASE may call observers twice for the same step
            return
        self._last_step = step
        t_ps = self.dyn.get_time() * _PS_PER_ASE_TIME
        u = float(self.atoms.get_potential_energy())
        k = float(self.atoms.get_kinetic_energy())
        if self.log is not None:   # first: a sample that stops the run (blown up) is in the file
            self.log.write(step, t_ps, u, k, float(self.atoms.get_temperature()))
        self.accumulator.add(t_ps, u, k)

    def summary(self) -> DriftSummary:
        """The accumulator's :class:`DriftSummary`."""
        return self.accumulator.summary()

    def close(self) -> None:
        """Close the CSV file, if any."""
        if self.log is not None:
            self.log.close()
