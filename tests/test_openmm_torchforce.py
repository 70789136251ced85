"""backend="torch": the TorchScript module handed to openmmtorch.TorchForce gives the python
backend's numbers to 1e-9 (checked as plain TorchScript, so it runs without openmmtorch); the
TorchForce itself is checked when openmmtorch imports (float64, Reference platform)."""

from __future__ import annotations

import io
import re

import numpy as np
import openmm
import pytest
import torch
from ase.build import molecule

from lawful.integrations import units
from lawful.integrations.openmm import available_backends, create_force, system_from_atoms
from lawful.integrations.torchscript_force import openmm_torch_module
from lawful.kernels.errors import BackendError

from test_openmm_force import _openmm_energy_forces, _rel
from test_openmm_pairmodel import MorsePairModel, rattled_copper  # noqa: F401

forcefields = pytest.importorskip("lawful.forcefields")
if not hasattr(forcefields, "export_torchscript"):
    pytest.skip("lawful.forcefields.export_torchscript is not available yet", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
needs_openmmtorch = pytest.mark.skipif("torch" not in available_backends(), reason="openmmtorch is not installed")


def _neural(species):
    torch.manual_seed(0)
    return forcefields.NeuralPotential(species=list(species), cutoff=4.5, dtype=torch.float64)


def _case(kind):
    if kind == "periodic_cu":
        return rattled_copper(seed=12), _neural(["Cu"])
    return molecule("CH3CH2OH"), _neural(["H", "C", "O"])


@pytest.mark.parametrize("kind", ["periodic_cu", "molecule"])
def test_script_module_matches_python_backend(kind):
    atoms, model = _case(kind)
    periodic = bool(atoms.pbc.all())
    system, _, positions = system_from_atoms(atoms, model, backend="python")
    e_py, f_py = _openmm_energy_forces(system, positions)  # eV, eV/Å
    module = openmm_torch_module(model, atoms.numbers, None, len(atoms), periodic)
    buf = io.BytesIO()  # openmm-torch stores the module serialised: round-trip it
    torch.jit.save(module, buf)
    buf.seek(0)
    module = torch.jit.load(buf)
    pos_nm = torch.tensor(np.asarray(positions.value_in_unit(openmm.unit.nanometer)), dtype=torch.float64)
    box_nm = torch.tensor(atoms.cell.array * units.NM_PER_ANGSTROM, dtype=torch.float64)
    e, f = module(pos_nm, box_nm)
    assert float(e) * units.EV_PER_KJMOL == pytest.approx(e_py, rel=1e-9)
    assert _rel(f.numpy() * units.FORCE_ASE_PER_OPENMM, f_py) <= 1e-9


def test_script_module_subset_scatters_forces():
    atoms, model = _case("molecule")
    n_extra = 4
    numbers = np.concatenate([[8] * n_extra, atoms.numbers])  # 4 particles outside the ML subset
    subset = list(range(n_extra, n_extra + len(atoms)))
    module = openmm_torch_module(model, numbers[subset], subset, len(numbers), periodic=False)
    pos_nm = np.concatenate([np.random.default_rng(0).normal(size=(n_extra, 3)) * 3.0,
                             atoms.positions * units.NM_PER_ANGSTROM])
    e, f = module(torch.tensor(pos_nm), torch.zeros(3, 3, dtype=torch.float64))
    ref = model.evaluate(atoms.positions, atoms.numbers)
    assert float(e) == pytest.approx(float(ref["energy"]) * units.KJMOL_PER_EV, rel=1e-9)
    assert np.all(f.numpy()[:n_extra] == 0.0)
    assert _rel(f.numpy()[n_extra:], ref["forces"].numpy() * units.FORCE_OPENMM_PER_ASE) <= 1e-9


def test_non_scriptable_model_is_a_backend_error():
    with pytest.raises(BackendError, match="backend='python'"):
        openmm_torch_module(MorsePairModel(), [29], None, 1, periodic=False)


@needs_openmmtorch
@pytest.mark.torchforce
@pytest.mark.parametrize("kind", ["periodic_cu", "molecule"])
def test_torchforce_matches_python_backend(kind):
    atoms, model = _case(kind)
    sys_py, _, positions = system_from_atoms(atoms, model, backend="python")
    sys_t, _, _ = system_from_atoms(atoms, model, backend="torch")
    assert type(sys_t.getForce(0)).__name__ == "TorchForce"
    e_py, f_py = _openmm_energy_forces(sys_py, positions)
    e_t, f_t = _openmm_energy_forces(sys_t, positions)
    assert e_t == pytest.approx(e_py, rel=1e-9)
    assert _rel(f_t, f_py) <= 1e-9


@pytest.mark.skipif("torch" in available_backends(), reason="openmmtorch is installed")
def test_torch_backend_without_openmmtorch():
    with pytest.raises(BackendError, match="openmmtorch"):
        create_force(_neural(["Cu"]), numbers=[29], periodic=False, backend="torch")


def _squeezed_water(oh_angstrom):
    """Water with its first O-H bond set to ``oh_angstrom`` (organic-xtb trained down to 0.62 Å)."""
    w = molecule("H2O")
    d = w.positions[1] - w.positions[0]
    w.positions[1] = w.positions[0] + d * (oh_angstrom / np.linalg.norm(d))
    return w


@pytest.mark.parametrize("oh, strict, expect", [
    (0.96, False, "nothing"),     # the equilibrium bond: in the domain
    (0.58, False, "nothing"),     # closer than any training pair but above 0.9 x 0.62 Å
    (0.50, False, "warn"),        # out of domain: one warning, naming the OpenMM particles
    (0.50, True, "raise"),        # strict: NumericalError through lawful_errors
])
def test_script_module_checks_the_training_domain_like_the_python_backend(oh, strict, expect):
    """openmm-torch's module made no training-domain check (the left-over of the earlier audits):
    an O-H pair at 0.5 Å, far inside what organic-xtb saw, ran silently. It now checks from the
    runner's table, names the same particles as the python backend, and raises under strict."""
    import warnings

    from lawful.integrations.openmm import lawful_errors
    from lawful.integrations.runner import ModelRunner
    from lawful.kernels.errors import NumericalError, OutOfDomainWarning

    model = forcefields.load_model("organic-xtb")
    water = _squeezed_water(oh)
    n_extra = 3
    numbers = np.concatenate([[8] * n_extra, water.numbers])     # the ML subset is particles 3, 4, 5
    subset = list(range(n_extra, n_extra + len(water)))
    module = openmm_torch_module(model, numbers[subset], subset, len(numbers), periodic=False, strict=strict)
    pos_nm = torch.tensor(np.concatenate([np.full((n_extra, 3), 5.0), water.positions * units.NM_PER_ANGSTROM]))
    box = torch.zeros(3, 3, dtype=torch.float64)
    runner = ModelRunner(model, water.numbers, labels=subset, strict=strict)
    if expect == "raise":
        with pytest.raises(Exception, match="NumericalError: lawful model out of its training domain") as err:
            module(pos_nm, box)
        # inside OpenMM the message arrives in an OpenMMException: lawful_errors makes it a NumericalError
        with pytest.raises(NumericalError, match=r"atoms 3 \(O\) and 4 \(H\) are 0.5000 Angstrom apart"):
            with lawful_errors():
                raise openmm.OpenMMException(str(err.value))
        with pytest.raises(NumericalError, match=r"atoms 3 \(O\) and 4 \(H\) are 0.5 Å apart"):
            runner.evaluate(water.positions)
        return
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        e1, f1 = module(pos_nm, box)
        e2, _ = module(pos_nm, box)                                # warned once per force
        ref = runner.evaluate(water.positions)
    scripted = [w for w in got if "training domain" in str(w.message)]
    python = [w for w in got if issubclass(w.category, OutOfDomainWarning)]
    if expect == "nothing":
        assert scripted == [] and python == []
    else:
        assert len(scripted) == 1 and len(python) == 1
        assert "atoms 3 (O) and 4 (H) are 0.5000 Angstrom apart, below 0.900 x the smallest H-O distance" in str(
            scripted[0].message)
        assert "atoms 3 (O) and 4 (H) are 0.5 Å apart" in str(python[0].message)
    # the check changes nothing in the numbers
    assert float(e1) == float(e2) == pytest.approx(float(ref["energy"]) * units.KJMOL_PER_EV, rel=1e-9)


def _fcc(a):
    from ase.build import bulk

    return bulk("Cu", "fcc", a=a, cubic=True).repeat(2)


@pytest.mark.parametrize("model_name, make, kind", [
    ("organic-xtb", lambda: molecule("CH3CH2OH"), None),                # a training composition
    ("organic-xtb", lambda: molecule("CH3OH"), None),                   # in the span of the compositions
    ("organic-xtb", lambda: molecule("CH4"), "the composition CH4 is not a combination"),
    ("cu-emt", lambda: _fcc(3.61), None),                               # the training lattice
    ("cu-emt", lambda: _fcc(4.2), "atom 0 (Cu) has a neighbour density of 2.1"),   # +16 %
    ("cu-emt", lambda: __import__("ase").Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]], cell=[12] * 3,
                                                pbc=True), "atom 0 (Cu) has a neighbour density of 0.4"),
])
def test_script_module_checks_compositions_and_neighbour_counts_like_the_runner(model_name, make, kind):
    """The TorchScript module made only the pair check: methane through organic-xtb (energy eV/atom
    off) and a copper dimer through cu-emt ran silently with backend="torch" while the python
    backend warned. It now makes the runner's composition and neighbour-count checks from the same
    records: the same structures warn (once per module), strict raises, the numbers do not change."""
    import warnings

    from lawful.integrations.runner import ModelRunner
    from lawful.kernels.errors import OutOfDomainWarning

    model = forcefields.load_model(model_name)
    atoms = make()
    periodic = bool(atoms.pbc.any())
    module = forcefields.export_torchscript(model, pbc=periodic)
    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    z = torch.tensor(atoms.numbers, dtype=torch.long)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float64)
    runner = ModelRunner(model, atoms.numbers)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        e1, _ = module(pos, z, cell)
        e2, _ = module(pos, z, cell)
        ref = runner.evaluate(atoms.positions, cell=np.asarray(atoms.cell) if periodic else None, pbc=periodic)
    scripted = [str(w.message) for w in got if "training domain" in str(w.message)]
    python = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]
    assert float(e1) == float(e2) == pytest.approx(float(ref["energy"]), rel=1e-12)
    if kind is None:
        assert scripted == [] and python == []
        return
    # each kind once per module and per runner, the same atoms named (methane: composition and counts)
    assert len(scripted) == len(python) >= 1 and kind in scripted[0]
    prefix = "lawful model out of its training domain: "
    assert [m[len(prefix):][:30] for m in scripted] == [(m[0].lower() + m[1:])[:30] for m in python]
    strict = forcefields.export_torchscript(model, pbc=periodic, strict=True)
    with pytest.raises(Exception, match="NumericalError: lawful model out of its training domain: " + re.escape(kind)):
        strict(pos, z, cell)
