"""TorchScript export against the python path (audit): the module's periodicity from ``pbc`` and
its out-of-domain reports next to the engine runner's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from lawful.forcefields import export_torchscript, load_model
from lawful.integrations.runner import ModelRunner
from lawful.kernels.errors import InputError, OutOfDomainWarning

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def organic():
    return load_model("organic-xtb")


@pytest.fixture(scope="module")
def copper():
    return load_model("cu-emt")


def _call(module, atoms, cell=None):
    cell = np.asarray(atoms.cell) if cell is None else cell
    return module(torch.tensor(atoms.positions), torch.tensor(atoms.numbers), torch.tensor(cell, dtype=torch.float64))


@pytest.mark.parametrize("pbc", [[False, False, False], np.array([False, False, False]), (False,) * 3, False,
                                 np.bool_(False)])
def test_open_pbc_given_as_three_flags_makes_an_open_module(organic, pbc):
    """``bool([False, False, False])`` is True: export_torchscript(model, pbc=atoms.pbc.tolist())
    made a periodic module, and ethanol in a 6 Å box met its images (energy 0.013 eV off, forces
    0.42 eV/Å, no error). Three equal flags now mean that periodicity."""
    atoms = molecule("CH3CH2OH")
    atoms.center()            # a 6 Å cube around it: images within the 5 Å cutoff if it were periodic
    atoms.set_cell([6.0, 6.0, 6.0])
    ref = organic.evaluate(atoms.positions, atoms.numbers)
    e, f = _call(export_torchscript(organic, pbc=pbc), atoms)
    assert float(e) == pytest.approx(float(ref["energy"]), rel=1e-12, abs=1e-9)
    assert np.max(np.abs(f.numpy() - ref["forces"].numpy())) < 1e-10


@pytest.mark.parametrize("pbc", [[True, True, True], np.array([True, True, True]), True])
def test_periodic_pbc_flags_make_a_periodic_module(copper, pbc):
    atoms = bulk("Cu", "fcc", a=3.61).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=3)
    ref = copper.evaluate(atoms.positions, atoms.numbers, cell=np.asarray(atoms.cell), pbc=True)
    e, f = _call(export_torchscript(copper, pbc=pbc), atoms)
    assert float(e) == pytest.approx(float(ref["energy"]), rel=1e-12, abs=1e-12)
    assert np.max(np.abs(f.numpy() - ref["forces"].numpy())) < 1e-12


@pytest.mark.parametrize("pbc", [[True, True, False], np.array([True, False, False]), [False, False], "yes", None])
def test_partly_periodic_or_unreadable_pbc_is_refused(copper, pbc):
    """A slab's ``[True, True, False]`` made a module periodic along its vacuum axis too."""
    with pytest.raises(InputError, match="pbc="):
        export_torchscript(copper, pbc=pbc)


def _reports(got, scripted):
    if scripted:
        return [str(w.message) for w in got if "training domain" in str(w.message)
                and not issubclass(w.category, OutOfDomainWarning)]
    return [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]


@pytest.mark.parametrize("strict", [False])
def test_module_reports_again_after_a_volume_change_like_the_runner(copper, strict):
    """An EOS scan (or a barostat) through the openmm-torch module: the runner reported each cell
    whose volume per atom moved by more than 2 % from the last report (a = 4.2, 4.5, 4.8 Å: three
    reports), the module only the first, so a copper lattice 3x the training volume ran silently
    with backend='torch'. The module now follows the runner's rule, kind by kind."""
    module = export_torchscript(copper, pbc=True)
    runner = ModelRunner(copper, bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2).numbers)
    counts = []
    for a in (3.61, 4.2, 4.2, 4.21, 4.5, 4.8, 4.8):
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(2)
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            e, f = _call(module, atoms)
            ref = runner.evaluate(atoms.positions, cell=np.asarray(atoms.cell), pbc=True)
        s, p = _reports(got, True), _reports(got, False)
        counts.append((len(s), len(p)))
        assert float(e) == pytest.approx(float(ref["energy"]), rel=1e-12, abs=1e-12)
        if s:
            assert "too few neighbours are not reported by this force unless the cell's volume" in s[0]
            assert f"here in a cell of {a ** 3 / 4:.3f} Angstrom^3/atom" in s[0]
    assert counts == [(0, 0), (1, 1), (0, 0), (0, 0), (1, 1), (1, 1), (0, 0)]


def test_module_close_pairs_reported_again_after_a_volume_change(copper):
    """The close-pair kind follows the same rule; an open structure is reported once."""
    module = export_torchscript(copper, pbc=True)
    seen = []
    for a in (3.61, 3.0 * 1.05, 3.61):
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(2)
        atoms.positions[1] = atoms.positions[0] + [0.0, 0.0, 1.5]          # below 0.9 x 1.865 Å
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            _call(module, atoms)
        seen.append(len([m for m in _reports(got, True) if "Angstrom apart" in m]))
    assert seen == [1, 1, 1]
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        _call(module, atoms)                                              # the same cell again: once
    assert [m for m in _reports(got, True) if "Angstrom apart" in m] == []


def test_export_is_a_snapshot_of_the_model(organic):
    """Documented: the module keeps the weights of the export (openmm-torch serialises it); the
    model object evaluates its own current weights."""
    import copy

    model = copy.deepcopy(organic)
    atoms = molecule("CH3CH2OH")
    module = export_torchscript(model, pbc=False)
    e0, _ = _call(module, atoms, np.zeros((3, 3)))
    with torch.no_grad():
        model.energy_scale.mul_(1.5)
    e1, _ = _call(module, atoms, np.zeros((3, 3)))
    assert float(e1) == float(e0)
    assert float(model.evaluate(atoms.positions, atoms.numbers)["energy"]) != pytest.approx(float(e0), abs=1e-3)


def test_module_and_runner_share_the_rereport_rule():
    from lawful.forcefields import domain
    from lawful.integrations import runner

    assert domain.REREPORT_VOLUME_CHANGE == runner.REREPORT_VOLUME_CHANGE
