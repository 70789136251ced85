"""The drift accumulator against a direct numpy computation, its error cases, and the CSV log."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from lawful.integrations.monitors import CSV_COLUMNS, CsvLog, DriftAccumulator
from lawful.kernels.errors import InputError, NumericalError


def _synthetic(n=2000, n_atoms=50, slope=0.02, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 5.0, n)  # ps
    k = 2.0 + 0.3 * np.sin(7.0 * t) + 0.05 * rng.standard_normal(n)  # eV
    e_total = -150.0 + slope * t + 1e-3 * rng.standard_normal(n)  # eV
    return t, e_total - k, k, n_atoms


def test_matches_numpy_linear_fit():
    t, u, k, n_atoms = _synthetic()
    acc = DriftAccumulator(n_atoms)
    for row in zip(t, u, k):
        acc.add(*row)
    s = acc.summary()
    e = u + k
    slope, intercept = np.polyfit(t, e, 1)
    resid = e - (slope * t + intercept)
    assert s.n_samples == len(t)
    assert s.duration_ps == pytest.approx(5.0)
    assert s.drift_mev_per_atom_per_ps == pytest.approx(slope * 1e3 / n_atoms, rel=1e-9)
    assert s.rms_fluctuation_mev_per_atom == pytest.approx(np.sqrt(np.mean(resid**2)) * 1e3 / n_atoms, rel=1e-6)
    assert s.max_abs_deviation_mev_per_atom == pytest.approx(np.max(np.abs(e - e[0])) * 1e3 / n_atoms, rel=1e-12)
    assert s.sigma_kinetic_mev_per_atom == pytest.approx(np.std(k, ddof=1) * 1e3 / n_atoms, rel=1e-9)
    assert s.drift_over_sigma_ke == pytest.approx(abs(slope) * 5.0 / np.std(k, ddof=1), rel=1e-6)
    assert s.mean_total_ev == pytest.approx(np.mean(e), rel=1e-12)
    assert set(s.as_dict()) >= {"drift_mev_per_atom_per_ps", "drift_over_sigma_ke"}


def test_drift_sign_and_zero_drift():
    acc = DriftAccumulator(10)
    for i in range(100):
        acc.add(0.01 * i, -1.0 * i * 0.01 - 5.0 + 0.1 * math.cos(i), 0.1 * (1 - math.cos(i)) + 1.0)
    s = acc.summary()
    assert s.drift_mev_per_atom_per_ps == pytest.approx(-1.0 * 1e3 / 10, rel=1e-9)
    acc.reset()
    for i in range(100):  # exact exchange between U and K: no drift, no fluctuation
        acc.add(0.01 * i, -5.0 - math.sin(i), 1.0 + math.sin(i))
    s = acc.summary()
    assert abs(s.drift_mev_per_atom_per_ps) < 1e-9
    assert s.rms_fluctuation_mev_per_atom < 1e-9
    assert s.sigma_kinetic_mev_per_atom > 1.0


def test_large_offsets_are_numerically_safe():
    # a total energy of -1e6 eV and a drift of 1e-6 eV/ps: running sums are centred on sample 0
    acc = DriftAccumulator(1000)
    for i in range(10000):
        t = 1000.0 + 1e-3 * i
        acc.add(t, -1.0e6 + 1e-6 * (t - 1000.0) - (i % 2), 10.0 + (i % 2))
    # float64 spacing at 1e6 eV is 1.2e-10 eV against a total drift of 1e-5 eV
    assert acc.summary().drift_mev_per_atom_per_ps == pytest.approx(1e-6 * 1e3 / 1000, rel=1e-4)


def test_bad_inputs():
    with pytest.raises(InputError):
        DriftAccumulator(0)
    acc = DriftAccumulator(3)
    with pytest.raises(InputError):
        acc.summary()
    acc.add(0.0, 1.0, 1.0)
    acc.add(0.0, 1.0, 1.0)
    with pytest.raises(InputError, match="same time"):
        acc.summary()
    with pytest.raises(NumericalError, match="nan"):
        acc.add(0.1, float("nan"), 1.0)


def test_csv_log_is_flushed_each_row(tmp_path):
    path = tmp_path / "drift.csv"
    log = CsvLog(path)
    log.write(0, 0.0, -10.0, 1.0, 300.0)
    log.write(10, 0.01, -10.5, 1.5, 310.0)
    rows = list(csv.DictReader(path.open()))  # read while the file is still open
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 2 and float(rows[1]["total_eV"]) == pytest.approx(-9.0)
    log.close()


@pytest.mark.parametrize("conserving, move_ev_per_atom, stops", [
    (True, +1.5, True),       # NVE: a rise past the limit is a blow-up
    (True, -1.5, True),       # NVE: so is a fall
    (True, +0.9, False),      # inside the limit
    (False, -1.5, False),     # thermostat: carrying off a relaxing start's heat is legitimate
    (False, +1.5, True),      # thermostat: heating past the limit is still a blow-up
    (None, +1e6, False),      # blowup_ev_per_atom=None: no check
])
def test_a_blown_up_total_energy_stops_the_accumulator(conserving, move_ev_per_atom, stops):
    n = 4
    acc = (DriftAccumulator(n, blowup_ev_per_atom=None) if conserving is None
           else DriftAccumulator(n, conserving=conserving))
    acc.add(0.0, -10.0, 1.0)
    if stops:
        with pytest.raises(NumericalError, match="blown up") as err:
            acc.add(0.1, -10.0 + n * move_ev_per_atom, 1.0)
        assert f"{abs(move_ev_per_atom):.4g} eV/atom" in str(err.value)
        assert acc.n == 1   # the sample that stopped it is not in the statistics
    else:
        acc.add(0.1, -10.0 + n * move_ev_per_atom, 1.0)
        assert acc.summary().max_abs_deviation_mev_per_atom == pytest.approx(1e3 * abs(move_ev_per_atom))


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_blowup_limit_must_be_a_positive_energy(value):
    with pytest.raises(InputError, match="blowup_ev_per_atom"):
        DriftAccumulator(3, blowup_ev_per_atom=value)


@pytest.mark.parametrize("fixed, expected", [(None, 32), ([0, 1, 2, 3], 28), ("bottom", 16), ("all_but_one", 1)])
def test_ase_drift_is_per_moving_atom_as_openmms(fixed, expected):
    """OpenMM's DriftReporter divides by the particles with mass (OpenMM fixes an atom by zeroing
    its mass); ASE's DriftObserver divided by every atom, FixAtoms-held ones too: one slab with
    its bottom half fixed reported half the meV/atom/ps in ASE (audit). Both count moving atoms."""
    from ase.build import fcc111
    from ase.calculators.emt import EMT
    from ase.constraints import FixAtoms
    from ase.md.verlet import VelocityVerlet
    from ase import units as ase_units

    from lawful.integrations.monitors import DriftObserver

    atoms = fcc111("Cu", size=(2, 4, 4), vacuum=6.0)
    if fixed == "bottom":
        atoms.set_constraint(FixAtoms(mask=atoms.positions[:, 2] < atoms.positions[:, 2].mean()))
    elif fixed == "all_but_one":
        atoms.set_constraint(FixAtoms(indices=range(1, len(atoms))))
    elif fixed is not None:
        atoms.set_constraint(FixAtoms(indices=fixed))
    atoms.rattle(0.05, seed=2)
    atoms.calc = EMT()
    dyn = VelocityVerlet(atoms, timestep=8.0 * ase_units.fs)    # a large step: a visible slope
    obs = DriftObserver(dyn)
    rows = []
    dyn.attach(obs, interval=1)
    dyn.attach(lambda: rows.append((dyn.get_time() / (1000 * ase_units.fs), atoms.get_total_energy())), interval=1)
    dyn.run(40)
    assert obs.accumulator.n_atoms == expected
    t, e = np.array(rows).T
    slope = np.polyfit(t, e, 1)[0]                                   # eV/ps of the whole system
    assert obs.summary().drift_mev_per_atom_per_ps == pytest.approx(1e3 * slope / expected, rel=1e-6, abs=1e-9)
