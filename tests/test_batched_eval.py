"""Batched evaluation: many independent structures (sizes, cells, periodicities) in one model call
with one neighbour-list build give what a loop of single ``model.evaluate`` calls gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from conftest import count_calls  # a counting wrapper of a function or method

from lawful.forcefields import DirectForceModel, NeuralPotential, evaluate_batch
from lawful.forcefields.batch import batched_pairs
from lawful.kernels.errors import InputError, NumericalError, ShapeError, UnsupportedSpeciesError
from lawful.kernels.neighbors import neighbor_list

CUTOFF = 4.0


def _structures():
    """Mixed batch: bulk cells of 1 to 32 atoms (the 1-atom cell is thinner than the cutoff, so
    it has self-images), a sheared triclinic cell, a slab periodic in two directions, a
    molecule, an atom pair, unwrapped positions, two species."""
    rng = np.random.default_rng(3)
    out = []
    prim = bulk("Cu", "fcc", a=3.61)                         # 1 atom, triclinic
    prim.rattle(0.02, seed=1)
    out.append(prim)
    cub = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    cub.rattle(0.05, seed=2)
    cub.positions += 7.3                                     # far outside the cell: unwrapped
    out.append(cub)
    tri = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    tri.set_cell(tri.cell[:] + np.array([[0, 0, 0], [1.1, 0, 0], [0.4, 0.7, 0]]), scale_atoms=True)
    tri.rattle(0.05, seed=3)
    out.append(tri)
    slab = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    slab.pbc = [True, True, False]
    slab.rattle(0.05, seed=4)
    out.append(slab)
    mol = Atoms("CuAgCu", positions=[[0, 0, 0], [2.5, 0.1, 0], [1.2, 2.2, 0.3]])
    out.append(mol)
    out.append(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.4]]))
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((1, 1, 2))
    alloy.symbols[[1, 4]] = "Ag"
    alloy.rattle(0.05, seed=5)
    alloy.positions -= rng.normal(0, 4.0, 3)
    out.append(alloy)
    return out


@pytest.fixture(scope="module")
def models():
    nn = NeuralPotential(["Cu", "Ag"], cutoff=CUTOFF, n_basis=5, n_radial=4, lmax=2, hidden=(16,), seed=2)
    direct = DirectForceModel(["Cu", "Ag"], cutoff=CUTOFF, n_basis=5, n_radial=4, lmax=2, hidden=(16,),
                              embed=8, force_hidden=(16,), seed=2)
    with torch.no_grad():                 # a non-trivial scale so the learned part dominates
        nn.energy_scale.fill_(0.7)
        direct.energy_scale.fill_(0.7)
        direct.force_scale.fill_(5.0)
    return nn, direct


@pytest.mark.parametrize("which", [0, 1], ids=["NeuralPotential", "DirectForceModel"])
def test_batch_equals_a_loop_of_single_calls(models, which):
    model = models[which]
    structs = _structures()
    batched = evaluate_batch(model, structs)
    assert len(batched) == len(structs)
    for k, (a, got) in enumerate(zip(structs, batched)):
        periodic = bool(all(a.pbc))
        ref = model.evaluate(a.positions, a.numbers, a.cell[:] if any(a.pbc) else None, a.pbc, stress=periodic)
        assert ("stress" in got) == periodic, k
        assert got["forces"].shape == (len(a), 3) and got["forces"].dtype == torch.float64
        for key in ref:
            assert torch.allclose(got[key], ref[key], rtol=0, atol=1e-12), (k, key)
        if len(a) > 1:                    # (one atom in a lattice feels no force by symmetry)
            assert float(ref["forces"].abs().max()) > 1e-3         # the comparison is not of zeros


def test_one_neighbour_search_for_the_whole_batch(models, monkeypatch):
    """Small structures share one vectorised search (no per-structure neighbour list); a
    structure above the block size goes to the cell list alone, with the same results."""
    import lawful.forcefields.batch as fb
    import lawful.kernels.neighbors as nbl

    calls = count_calls(monkeypatch, nbl, "neighbor_list")
    blocks = []
    real_block = fb._block_search
    monkeypatch.setattr(fb, "_block_search", lambda *a: blocks.append(len(a[0])) or real_block(*a))
    structs = _structures()
    evaluate_batch(models[0], structs)
    assert calls == [] and blocks == [len(structs)]
    monkeypatch.setattr(fb, "BATCH_PAIR_BLOCK", 5000)   # the 32-atom cell (32 x ~400 images) is now large
    got = evaluate_batch(models[0], structs)
    assert len(calls) == 1 and len(blocks) > 2
    ref = models[0].evaluate(structs[1].positions, structs[1].numbers, structs[1].cell[:], True)
    assert torch.allclose(got[1]["forces"], ref["forces"], rtol=0, atol=1e-12)


def test_batched_pairs_are_exactly_those_of_separate_searches():
    structs = _structures()
    tensors = []
    for a in structs:
        pos = torch.tensor(a.positions)
        cell = torch.tensor(a.cell[:]) if any(a.pbc) else torch.zeros(3, 3, dtype=torch.float64)
        tensors.append((pos, cell, [bool(p) for p in a.pbc]))
    for (pos, cell, pbc), (i, j, sh) in zip(tensors, batched_pairs(tensors, CUTOFF)):
        ref = neighbor_list(pos, CUTOFF, cell if any(pbc) else None, pbc)
        mine = {(a, b, *map(round, s)) for a, b, s in zip(i.tolist(), j.tolist(), sh.tolist())}
        theirs = {(a, b, *map(round, s)) for a, b, s in zip(ref.i.tolist(), ref.j.tolist(), ref.shifts.tolist())}
        assert mine == theirs and len(mine) == i.shape[0] == ref.i.shape[0]
        assert i.shape[0] > 0


def test_chunks_give_the_same_results(models):
    structs = _structures()
    whole = evaluate_batch(models[0], structs, chunk_atoms=None)
    parts = evaluate_batch(models[0], structs, chunk_atoms=10)     # every structure alone or in pairs
    for a, b in zip(whole, parts):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-12), key


def test_dict_input_and_stress_switch(models):
    a = bulk("Cu", "fcc", a=3.61, cubic=True)
    a.rattle(0.03, seed=9)
    d = {"positions": a.positions, "numbers": a.numbers, "cell": a.cell[:], "pbc": True}
    got = evaluate_batch(models[0], [d, a], stress=False)
    assert "stress" not in got[0] and "stress" not in got[1]
    assert torch.allclose(got[0]["forces"], got[1]["forces"], rtol=0, atol=1e-14)


@pytest.mark.parametrize("structures, error, named", [
    ([], InputError, "no structures"),
    ([{"positions": np.zeros((2, 3))}], InputError, "'positions'"),
    ([Atoms("Au", positions=[[0, 0, 0]])], UnsupportedSpeciesError, "Au"),
    ([Atoms("Cu", positions=[[0, 0, 0]])], InputError, "chunk_atoms=0"),
    # a bad structure among several is named (its atom indices are its own: neighbour-list audit F3)
    ([Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0]])],
     NumericalError, r"structure 1 \(of 2; atom indices within it\): atoms 0 and 1 are 0 Å apart"),
    ([Atoms("Cu", positions=[[0, 0, 0]]), Atoms()], ShapeError, r"structure 1 \(of 2.*no atoms"),
    ([Atoms("Cu", positions=[[0, 0, 0]]), Atoms("Au", positions=[[0, 0, 0]])], UnsupportedSpeciesError,
     r"structure 1 \(of 2.*Au"),
], ids=["empty", "dict-without-numbers", "unknown-element", "zero-chunk", "coincident-in-2nd", "empty-2nd",
        "unknown-in-2nd"])
def test_bad_batches_are_refused(models, structures, error, named):
    kwargs = {"chunk_atoms": 0} if named.startswith("chunk") else {}
    with pytest.raises(error, match=named):
        evaluate_batch(models[0], structures, **kwargs)


def _periodic_cu():
    a = bulk("Cu", "fcc", a=3.61, cubic=True)
    a.rattle(0.03, seed=9)
    return a


# (id, the structure from a periodic Cu cell ``a``, what it must be read as: "periodic" / "isolated" /
# (error, text)). A dict with a cell but no pbc was evaluated as an isolated cluster (2.3 eV off for
# water in a 2.5 Å box, no stress); 2- and 3-tuples crashed with an internal TypeError.
STRUCTURE_FORMS = [
    ("dict-cell-pbc-true", lambda a: {"positions": a.positions, "numbers": a.numbers, "cell": a.cell[:], "pbc": True},
     "periodic"),
    ("dict-cell-pbc-false", lambda a: {"positions": a.positions, "numbers": a.numbers, "cell": a.cell[:], "pbc": False},
     "isolated"),
    ("dict-no-cell", lambda a: {"positions": a.positions, "numbers": a.numbers}, "isolated"),
    ("dict-zero-cell", lambda a: {"positions": a.positions, "numbers": a.numbers, "cell": np.zeros((3, 3))}, "isolated"),
    ("dict-cell-no-pbc", lambda a: {"positions": a.positions, "numbers": a.numbers, "cell": a.cell[:]},
     (InputError, "a 'cell' but no 'pbc'")),
    ("2-tuple", lambda a: (a.positions, a.numbers), "isolated"),
    ("2-list", lambda a: [a.positions, a.numbers], "isolated"),
    ("4-tuple", lambda a: (a.positions, a.numbers, a.cell[:], True), "periodic"),
    ("3-tuple", lambda a: (a.positions, a.numbers, a.cell[:]), (InputError, "3-tuple")),
    ("5-tuple", lambda a: (a.positions, a.numbers, a.cell[:], True, None), (ShapeError, "5 items")),
    ("string", lambda a: "Cu4", (InputError, "structure 0 is a str")),
]


@pytest.mark.parametrize("make, expect", [c[1:] for c in STRUCTURE_FORMS], ids=[c[0] for c in STRUCTURE_FORMS])
def test_plain_structures_are_read_one_way_or_refused(models, make, expect):
    a = _periodic_cu()
    molecule = a.copy()
    molecule.pbc = False                       # an ase.Atoms with a box and pbc False is a molecule: kept so
    ref = {"periodic": evaluate_batch(models[0], [a])[0], "isolated": evaluate_batch(models[0], [molecule])[0]}
    assert "stress" in ref["periodic"] and "stress" not in ref["isolated"]
    assert abs(float(ref["periodic"]["energy"] - ref["isolated"]["energy"])) > 0.1     # eV: the two readings differ
    if isinstance(expect, tuple):
        with pytest.raises(expect[0], match=expect[1]):
            evaluate_batch(models[0], [make(a), a])
        with pytest.raises(expect[0], match=expect[1]):
            models[0].make_batch([make(a)])
        return
    got, same = evaluate_batch(models[0], [make(a), a])[0], ref[expect]
    assert got.keys() == same.keys()
    for key in got:
        assert torch.allclose(got[key], same[key], rtol=0, atol=1e-12), key


@pytest.mark.parametrize("kwargs, expect", [
    (lambda a: dict(cell=a.cell[:], pbc=True), "periodic"),
    (lambda a: dict(cell=a.cell[:], pbc=False), "isolated"),
    (lambda a: dict(), "isolated"),
    (lambda a: dict(cell=a.cell[:]), (InputError, "a 'cell' but no 'pbc'")),   # was read as isolated
])
def test_evaluate_reads_one_structure_by_the_same_rule(models, kwargs, expect):
    """``model.evaluate(positions, numbers, cell=...)`` without pbc silently evaluated an isolated
    cluster (pbc defaulted to False); it follows ``structure_args`` now."""
    a = _periodic_cu()
    molecule = a.copy()
    molecule.pbc = False
    ref = {"periodic": evaluate_batch(models[0], [a])[0], "isolated": evaluate_batch(models[0], [molecule])[0]}
    if isinstance(expect, tuple):
        with pytest.raises(expect[0], match=expect[1]):
            models[0].evaluate(a.positions, a.numbers, **kwargs(a))
        return
    got = models[0].evaluate(a.positions, a.numbers, **kwargs(a))
    assert torch.allclose(got["energy"], ref[expect]["energy"], rtol=0, atol=1e-12)
    assert torch.allclose(got["forces"], ref[expect]["forces"], rtol=0, atol=1e-12)


def test_stress_of_a_slab_is_refused_naming_its_pbc(models):
    """The refusal spoke of a molecule for a slab too (neighbour-list audit F2)."""
    slab = bulk("Cu", "fcc", a=3.61, cubic=True)
    slab.pbc = (True, True, False)
    with pytest.raises(InputError, match=r"pbc=\[True, True, False\]: a slab or wire has no bulk stress"):
        models[0].evaluate(slab.positions, slab.numbers, cell=slab.cell[:], pbc=slab.pbc, stress=True)
