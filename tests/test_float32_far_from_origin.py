"""A float32 model gives the same forces wherever the structure sits: the runner subtracts a
float64 offset before rounding the positions (the pair vectors kept about 7 digits of the
*absolute* coordinates: alanine dipeptide 1e4 Å from the origin had its forces 0.07 eV/Å off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lawful.forcefields.molecules import start_structures
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.runner import ORIGIN_RADIUS


@pytest.fixture(scope="module")
def peptide():
    atoms = start_structures("alanine-dipeptide")["C7eq"]
    atoms.calc = LawfulCalculator("organic-xtb")
    return atoms, atoms.get_forces().copy(), atoms.get_potential_energy()


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4, -3e4])
def test_float32_forces_do_not_depend_on_where_the_molecule_sits(peptide, offset):
    atoms, f64, e64 = peptide
    calc = LawfulCalculator("organic-xtb", dtype="float32")
    near = atoms.copy()
    near.calc = calc
    f_near = near.get_forces().copy()
    far = atoms.copy()
    far.positions += offset
    far.calc = calc                       # the same runner: it takes a new offset for the far copy
    assert np.abs(far.get_forces() - f64).max() < 1e-4          # float32 round-off, 0.07 before at 1e4 Å
    assert abs(far.get_potential_energy() - e64) < 1e-4
    assert np.abs(far.get_forces() - f_near).max() < 2e-5


@pytest.mark.parametrize("moves", [
    "translate",        # the whole molecule drifts: no pair changes, atom 0 crosses ORIGIN_RADIUS
    "atom0",            # atom 0 alone moves back and forth across the radius (within the skin)
])
def test_renewing_the_offset_keeps_the_forces_of_a_fresh_list(peptide, moves):
    """With a skin the list is reused while atoms move little; a renewed offset moves the frame,
    not the pairs, so forces equal a fresh calculator's (skin 0) at every call."""
    atoms, _, _ = peptide
    moving = atoms.copy()
    moving.calc = LawfulCalculator("organic-xtb", dtype="float32", skin=1.0)
    steps = np.linspace(0.0, 2.5 * ORIGIN_RADIUS, 12) if moves == "translate" else [0.0, 0.3, -0.3, 0.3]
    for k, s in enumerate(steps):
        pos = atoms.positions.copy()
        if moves == "translate":
            pos += np.array([s, -0.5 * s, 0.2 * s])
        else:
            pos += ORIGIN_RADIUS * (k % 2)          # everything 10 Å away on odd calls...
            pos[0, 0] += s                           # ...and atom 0 jiggled
        moving.positions = pos
        fresh = moving.copy()
        fresh.calc = LawfulCalculator("organic-xtb", dtype="float32", skin=0.0)
        assert np.abs(moving.get_forces() - fresh.get_forces()).max() < 5e-5   # float32, <= 10 Å off


@pytest.fixture(scope="module")
def copper():
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
    atoms.calc = LawfulCalculator("cu-emt")
    return atoms, atoms.get_forces().copy(), atoms.get_potential_energy(), atoms.get_stress().copy()


@pytest.mark.parametrize("cells, pbc", [(0, True), (10, True), (10_000, True), (10_000, (True, True, False))])
def test_float32_forces_do_not_depend_on_each_atoms_lattice_offset(copper, cells, pbc):
    """Unwrapped periodic positions (ASE's MD and OpenMM do not wrap): every atom moved by its own
    random lattice vector of up to ``cells`` cells. The one float64 offset left each atom's own
    coordinates large: forces 9e-5 / 0.09 eV/Å off at 10 / 1e4 cells (neighbour-list audit F1); the
    runner wraps the atoms into the cell along the periodic axes in float64 first."""
    atoms, f64, e64, s64 = copper
    moved = atoms.copy()
    moved.pbc = pbc
    shift = np.random.default_rng(5).integers(-cells, cells + 1, (len(moved), 3))
    if pbc is not True:
        shift[:, 2] = 0                   # along the open axis an atom stays where it is
    moved.positions += shift @ moved.cell.array
    moved.calc = LawfulCalculator("cu-emt", dtype="float32")
    if pbc is True:
        assert np.abs(moved.get_forces() - f64).max() < 2e-5     # float32 round-off (5e-6)
        assert abs(moved.get_potential_energy() - e64) < 2e-5
        assert np.abs(moved.get_stress() - s64).max() < 1e-6
    else:                                  # a slab of the same atoms: float32 against its own float64
        ref = moved.copy()
        ref.calc = LawfulCalculator("cu-emt")
        assert np.abs(moved.get_forces() - ref.get_forces()).max() < 2e-5


@pytest.mark.parametrize("system, far", [("copper", 0), ("copper", 10), ("copper", 10_000),
                                         ("peptide", 1e3), ("peptide", -1e4), ("peptide_in_mlmm", 1e4)])
def test_float32_torchscript_module_wraps_and_recentres_like_the_runner(system, far):
    """The openmm-torch module (backend="torch") gets OpenMM's unwrapped positions in nm: in
    float32 it rounded them as they came (cu-emt with atoms 1e4 cells out: forces 0.11 eV/Å off;
    alanine dipeptide 1e4 Å out: 0.04 eV/Å). It wraps and recentres in float64 first now."""
    import torch

    from lawful.forcefields import load_model
    from lawful.integrations import units
    from lawful.integrations.torchscript_force import openmm_torch_module

    periodic = system == "copper"
    if periodic:
        from ase.build import bulk

        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
        atoms.rattle(0.05, seed=1)
        shift = np.random.default_rng(5).integers(-far, far + 1, (len(atoms), 3)) @ atoms.cell.array
        name = "cu-emt"
    else:
        atoms = start_structures("alanine-dipeptide")["C7eq"]
        shift = far
        name = "organic-xtb"
    extra = 3 if system == "peptide_in_mlmm" else 0          # MM particles before the ML subset
    numbers = np.concatenate([[8] * extra, atoms.numbers])
    subset = list(range(extra, len(numbers))) if extra else None
    rest = np.random.default_rng(1).normal(size=(extra, 3)) * 30.0

    def module_output(dtype, pos):
        model = load_model(name, dtype=dtype)
        module = openmm_torch_module(model, atoms.numbers, subset, len(numbers), periodic)
        box = torch.tensor(atoms.cell.array * units.NM_PER_ANGSTROM) if periodic else None
        e, f = module(torch.tensor(np.concatenate([rest, pos]) * units.NM_PER_ANGSTROM), box)
        return float(e) * units.EV_PER_KJMOL, f.numpy()[extra:] * units.FORCE_ASE_PER_OPENMM

    e64, f64 = module_output("float64", atoms.positions)
    e32, f32 = module_output("float32", atoms.positions + shift)
    assert np.abs(f32 - f64).max() < 5e-5                 # float32 round-off (5e-6 / 1.2e-5 eV/Å)
    assert abs(e32 - e64) < 2e-4



@pytest.mark.parametrize("engine", ["runner", "torchscript"])
@pytest.mark.parametrize("where", [(0.3, 15.0, 15.0), (0.2, 0.1, 0.3), (29.8, 29.9, 15.0)])
def test_float32_solute_straddling_a_box_face_keeps_a_centred_ones_rounding(peptide, engine, where):
    """A molecule in a periodic box whose atoms straddle a face (alanine dipeptide as an ML/MM
    solute). Wrapped atom by atom into [0, 1) of the cell it was split across the box, and its
    float32 forces had 3-4x the round-off of the same molecule centred (max 5.7e-5 against 1.5e-5
    eV/Å): pair vectors were coordinate differences a box length apart plus an image shift. Both
    engines wrap into the cell centred on atom 0 now, which keeps it whole."""
    from lawful.forcefields import load_model
    from lawful.integrations import units
    from lawful.integrations.torchscript_force import openmm_torch_module

    atoms, _, _ = peptide
    side = 30.0
    base = atoms.positions - atoms.positions.mean(axis=0)
    box = atoms.copy()
    box.cell, box.pbc = [side] * 3, True

    def forces(dtype, centre):
        pos = base + np.asarray(centre)
        if engine == "runner":
            a = box.copy()
            a.positions = pos
            a.calc = LawfulCalculator("organic-xtb", dtype=dtype)
            return a.get_forces()
        module = openmm_torch_module(load_model("organic-xtb", dtype=dtype), atoms.numbers, None, len(atoms), True)
        _, f = module(torch.tensor(pos * units.NM_PER_ANGSTROM),
                      torch.tensor(box.cell.array * units.NM_PER_ANGSTROM))
        return f.numpy() * units.FORCE_ASE_PER_OPENMM

    reference = forces("float64", (side / 2,) * 3)
    assert np.abs(forces("float64", where) - reference).max() < 1e-9          # the same molecule
    centred = np.abs(forces("float32", (side / 2,) * 3) - reference).max()
    straddling = np.abs(forces("float32", where) - reference).max()
    assert straddling <= 1.5 * centred + 1e-6, (straddling, centred)

def test_a_lattice_in_nanometres_is_refused_not_ground_through():
    """cu-emt on a lattice of 0.361 (nm typed for Å): it warned, then lawful md sat on its first
    step for 5 minutes (5000 neighbours per atom; first-hour audit 2.1). A neighbour density 10x
    beyond the training range is refused as a unit mistake before the model runs."""
    from ase.build import bulk

    from lawful.kernels.errors import InputError

    from lawful.forcefields import export_torchscript, load_model
    from lawful.forcefields.batch import evaluate_batch

    atoms = bulk("Cu", "fcc", a=0.361, cubic=True).repeat(3)
    for strict in (False, True):     # strict: not as the close pairs' extrapolation (checked after)
        atoms.calc = LawfulCalculator("cu-emt", strict=strict)
        with pytest.raises(InputError, match=r"more than 10x the top of that range .*nm for Å"):
            atoms.get_forces()
    dense = bulk("Cu", "fcc", a=3.0, cubic=True).repeat(2)      # compressed, not a unit mistake: warns and runs
    dense.calc = LawfulCalculator("cu-emt")
    with pytest.warns(Warning, match="neighbour density"):
        assert np.isfinite(dense.get_potential_energy())
    # model.evaluate / evaluate_batch (no engine) refuse it too, naming the structure of a batch
    model = load_model("cu-emt")
    with pytest.raises(InputError, match=r"^atom 0 \(Cu\) has a neighbour density .*more than 10x .*nm for Å"):
        model.evaluate(torch.as_tensor(atoms.positions), torch.as_tensor(atoms.numbers),
                       cell=torch.as_tensor(atoms.cell.array), pbc=True)
    fine = bulk("Cu", "fcc", a=3.61, cubic=True)
    with pytest.raises(InputError, match=r"^structure 1: atom 0 \(Cu\)"):
        evaluate_batch(model, [fine, bulk("Cu", "fcc", a=0.361, cubic=True).repeat(2)])
    # the TorchScript module openmm-torch runs refuses it too (it warned and ground on), strict or not

    def call(module, a):
        return module(torch.as_tensor(a.positions), torch.as_tensor(a.numbers), torch.as_tensor(a.cell.array))

    for strict in (False, True):
        module = export_torchscript(load_model("cu-emt"), pbc=True, strict=strict)
        with pytest.raises(torch.jit.Error, match=r"InputError: atom 0 \(Cu\) has a neighbour density of .*more than "
                                                   r"10.0 x the top .*nm for Angstrom") as raised:
            call(module, atoms)
    # openmm-torch hands the module's text to OpenMM: lawful_errors raises it as lawful's InputError
    import openmm

    from lawful.integrations.openmm import lawful_errors

    with pytest.raises(InputError, match=r"^atom 0 \(Cu\) has a neighbour density .*nm for Angstrom"):
        with lawful_errors():
            raise openmm.OpenMMException(str(raised.value))
    with pytest.warns(Warning, match="neighbour density"):
        energy, _ = call(export_torchscript(load_model("cu-emt"), pbc=True), dense)
    assert torch.isfinite(energy)
