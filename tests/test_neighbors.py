"""Neighbour lists against an independent O(N^2) all-images numpy reference (float64)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lawful.kernels.errors import InputError, NumericalError, ShapeError
from hypothesis import given, settings
from hypothesis import strategies as st

from lawful.kernels.neighbors import (
    NeighborList,
    VerletList,
    brute_force_neighbor_list,
    cell_list_neighbor_list,
    neighbor_list,
)


# ----------------------------------------------------------------------------------------------
# reference: numpy, every pair and every image that can possibly be within the cutoff
def reference_pairs(pos, cutoff, cell, pbc):
    """Sorted list of (i, j, s0, s1, s2) and a dict of distances; cell must be full rank."""
    pos = np.asarray(pos, dtype=np.float64)
    n = len(pos)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.asarray(cell, dtype=np.float64) if cell is not None else np.eye(3)
    frac = pos @ np.linalg.inv(cell)
    vol = abs(np.linalg.det(cell))
    ranges = []
    for k in range(3):
        if not pbc[k]:
            ranges.append(np.array([0]))
            continue
        h = vol / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
        df = frac[None, :, k] - frac[:, None, k]  # df[a, b] = frac_b - frac_a
        lo = math.floor(np.min(-df) - cutoff / h) - 1
        hi = math.ceil(np.max(-df) + cutoff / h) + 1
        ranges.append(np.arange(lo, hi + 1))
    images = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(3, -1).T
    out, dist = [], {}
    for s in images:
        r = pos[None, :, :] - pos[:, None, :] + (s @ cell)[None, None, :]
        d = np.sqrt((r ** 2).sum(-1))
        a, b = np.nonzero(d < cutoff)
        for x, y in zip(a, b):
            if x == y and not s.any():
                continue
            key = (int(x), int(y), int(s[0]), int(s[1]), int(s[2]))
            out.append(key)
            dist[key] = d[x, y]
    return sorted(out), dist


def as_tuples(nl: NeighborList):
    s = nl.shifts.round().to(torch.int64)
    assert torch.equal(s.to(nl.shifts.dtype), nl.shifts), "shifts must be integers"
    return sorted(zip(nl.i.tolist(), nl.j.tolist(), *s.T.tolist()))


def random_cell(rng, scale):
    """A random triclinic cell (rows), reasonably far from degenerate, randomly rotated."""
    m = np.eye(3) + 0.35 * rng.uniform(-1, 1, (3, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return scale * m @ q


def check_against_reference(pos, cutoff, cell, pbc, fn=neighbor_list):
    pos_t = torch.tensor(pos, dtype=torch.float64)
    cell_t = torch.tensor(cell, dtype=torch.float64) if cell is not None else None
    nl = fn(pos_t, cutoff, cell_t, pbc)
    assert nl.i.dtype == torch.int64 and nl.j.dtype == torch.int64
    assert nl.shifts.dtype == torch.float64 and nl.shifts.shape == (len(nl.i), 3)
    ref, dist = reference_pairs(pos, cutoff, cell, pbc)
    got = as_tuples(nl)
    assert got == ref
    c = cell_t if cell_t is not None else torch.zeros(3, 3, dtype=torch.float64)
    r = pos_t[nl.j] - pos_t[nl.i] + nl.shifts @ c
    d = torch.linalg.norm(r, dim=1)
    want = torch.tensor([dist[k] for k in zip(nl.i.tolist(), nl.j.tolist(),
                                               *nl.shifts.to(torch.int64).T.tolist())],
                        dtype=torch.float64)
    assert torch.allclose(d, want, rtol=0, atol=1e-12)
    return nl


CASES = [
    # (seed, n atoms, cell scale, cutoff, pbc)
    (0, 40, 10.0, 3.0, True),          # large cell
    (1, 30, 6.0, 4.0, True),           # cell < 2 cutoff: several images
    (2, 8, 2.5, 5.0, True),            # tiny cell: many images and self-images
    (3, 1, 3.0, 4.0, True),            # one atom: only self-images
    (4, 35, 7.0, 3.5, [True, False, True]),
    (5, 35, 7.0, 3.5, [False, True, False]),
    (6, 30, 4.0, 4.5, [True, True, False]),
    (7, 40, 8.0, 3.0, False),          # molecule in a cell that is ignored
]


@pytest.mark.parametrize("seed,n,scale,cutoff,pbc", CASES)
@pytest.mark.parametrize("fn", [neighbor_list, brute_force_neighbor_list, cell_list_neighbor_list])
def test_matches_reference_random_triclinic(seed, n, scale, cutoff, pbc, fn):
    rng = np.random.default_rng(seed)
    cell = random_cell(rng, scale)
    frac = rng.uniform(0, 1, (n, 3))
    # unwrapped positions: some atoms several cells away along each direction
    frac += rng.integers(-3, 4, (n, 3)) * (rng.uniform(size=(n, 1)) < 0.5)
    pos = frac @ cell
    check_against_reference(pos, cutoff, cell, pbc, fn)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 24), scale=st.floats(1.5, 9.0),
       cutoff=st.floats(0.5, 6.0), pbc=st.lists(st.booleans(), min_size=3, max_size=3),
       bins=st.sampled_from([0, 1, 2, 3]))
def test_random_cells_property(seed, n, scale, cutoff, pbc, bins):
    """Random triclinic cells, sizes, cutoffs, partial pbc and bin sizes: the exact pair set."""
    rng = np.random.default_rng(seed)
    cell = random_cell(rng, scale)
    frac = rng.uniform(-1, 2, (n, 3))
    check_against_reference(frac @ cell, cutoff, cell, pbc,
                            lambda p, c, ce, pb: cell_list_neighbor_list(p, c, ce, pb, bins))


@pytest.mark.parametrize("pbc", [True, [True, False, True], False])
def test_many_atoms_against_brute_force(pbc):
    """A few hundred atoms (many bins, several atoms per bin): cell list == brute force."""
    rng = np.random.default_rng(17)
    cell = torch.tensor(random_cell(rng, 16.0))
    pos = torch.tensor(rng.uniform(-0.2, 1.2, (400, 3))) @ cell
    ref = as_tuples(brute_force_neighbor_list(pos, 4.0, cell, pbc))
    for bins in (1, 2, 3):
        assert as_tuples(cell_list_neighbor_list(pos, 4.0, cell, pbc, bins)) == ref


@pytest.mark.parametrize("pbc", [True, [True, True, False]])
def test_dilute_periodic_gas_coarsened_bins(pbc):
    """300 atoms in an 80 Å triclinic box: the bin grid is coarsened to O(N) bins and the pairs
    still match the brute force."""
    rng = np.random.default_rng(12)
    cell = torch.tensor(random_cell(rng, 80.0))
    pos = torch.tensor(rng.uniform(0, 1, (300, 3))) @ cell
    pos[:150] = pos[0] + torch.tensor(rng.normal(0, 2.0, (150, 3)))  # a dense droplet too
    ref = as_tuples(brute_force_neighbor_list(pos, 3.0, cell, pbc))
    assert len(ref) > 100
    for bins in (0, 1, 2):
        assert as_tuples(cell_list_neighbor_list(pos, 3.0, cell, pbc, bins)) == ref


def test_sparse_molecule_bins_stay_bounded():
    """Two clusters 10 km apart: the bin grid is coarsened instead of allocating 1e12 bins."""
    rng = np.random.default_rng(4)
    pos = np.concatenate([rng.uniform(0, 6, (20, 3)), rng.uniform(0, 6, (20, 3)) + 1e7])
    check_against_reference(pos, 2.5, None, False)
    # spread along one direction only, absurdly far: still a few bins, same pairs
    pos = torch.tensor(rng.uniform(0, 5, (300, 3)))
    pos[150:, 0] += 1e150
    pos[0, 1] = -1e150
    assert as_tuples(cell_list_neighbor_list(pos, 2.0)) == as_tuples(
        brute_force_neighbor_list(pos, 2.0))
    pos[0, 0], pos[1, 0] = 1e308, -1e308
    with pytest.raises(InputError, match="span inf"):
        cell_list_neighbor_list(pos, 2.0)


def test_molecule_without_cell():
    rng = np.random.default_rng(11)
    pos = rng.uniform(-4, 4, (50, 3))
    nl = check_against_reference(pos, 3.0, None, False)
    assert len(nl.i) > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [1, 2, 22, 244])
def test_open_structure_list_is_the_brute_force_list_exactly(dtype, n):
    """A non-periodic structure of up to 244 atoms takes a direct all-pairs pass; it must give the
    brute-force search's pairs in the same order with the same shifts, including a pair placed
    exactly at the cutoff (excluded by both: |r|^2 < cutoff^2) and, in float32, pairs within
    round-off of it. A cell given with pbc=False is ignored."""
    rng = np.random.default_rng(n)
    pos = torch.tensor(rng.uniform(-0.6, 0.6, (n, 3)) * n ** (1 / 3) * 2.2, dtype=dtype)
    if n >= 2:
        pos[1] = pos[0] + torch.tensor([3.0, 0.0, 0.0], dtype=dtype)       # exactly at the cutoff
    if n >= 4:
        pos[3] = pos[2] + torch.tensor([0.0, 2.9999999, 0.0], dtype=dtype)  # a hair inside in float64
    for cell in (None, torch.eye(3, dtype=dtype) * 4.0):
        got = neighbor_list(pos, 3.0, cell, False)
        ref = brute_force_neighbor_list(pos, 3.0, cell, False)
        for a, b in ((got.i, ref.i), (got.j, ref.j), (got.shifts, ref.shifts)):
            assert a.dtype == b.dtype and torch.equal(a, b)
    if n >= 2:
        assert not ((got.i == 0) & (got.j == 1)).any()


def test_empty_and_isolated():
    nl = neighbor_list(torch.zeros(0, 3, dtype=torch.float64), 3.0)
    assert nl.i.shape == (0,) and nl.shifts.shape == (0, 3)
    far = torch.tensor([[0.0, 0, 0], [10.0, 0, 0]], dtype=torch.float64)
    assert len(neighbor_list(far, 3.0).i) == 0


def test_fcc_copper_coordination():
    """fcc Cu, a = 3.61 Å: 12 + 6 + 24 neighbours within 5 Å for every atom (physics check)."""
    a = 3.61
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    for reps in (1, 2, 4):  # the 1x1x1 cell (a < cutoff) needs several images per direction
        grid = np.array(np.meshgrid(*[np.arange(reps)] * 3, indexing="ij")).reshape(3, -1).T
        pos = (grid[:, None, :] + basis[None]).reshape(-1, 3) * a
        cell = torch.eye(3, dtype=torch.float64) * a * reps
        nl = neighbor_list(torch.tensor(pos), 5.0, cell, True)
        counts = torch.bincount(nl.i, minlength=len(pos))
        assert torch.all(counts == 42), counts


def test_float32_same_pairs():
    rng = np.random.default_rng(5)
    cell = random_cell(rng, 9.0)
    pos = rng.uniform(0, 1, (60, 3)) @ cell
    nl32 = neighbor_list(torch.tensor(pos, dtype=torch.float32), 4.0,
                         torch.tensor(cell, dtype=torch.float32), True)
    assert nl32.shifts.dtype == torch.float32 and nl32.i.dtype == torch.int64
    ref, dist = reference_pairs(pos, 4.0, cell, True)
    got = set(as_tuples(nl32))
    # only pairs within float32 round-off of the cutoff may differ
    for key in got.symmetric_difference(ref):
        assert key in got or abs(dist[key] - 4.0) < 1e-4, key
    assert got.issuperset(k for k in ref if dist[k] < 4.0 - 1e-4)
    # a float64 cell with float32 positions: the cell follows the positions' dtype
    mixed = neighbor_list(torch.tensor(pos, dtype=torch.float32), 4.0, torch.tensor(cell), True)
    assert mixed.shifts.dtype == torch.float32 and set(as_tuples(mixed)) == got


def test_partial_pbc_ignores_nonperiodic_rows():
    """ASE-style cells with a zero vector along the non-periodic direction work."""
    rng = np.random.default_rng(3)
    cell = random_cell(rng, 6.0)
    pos = rng.uniform(0, 1, (30, 3)) @ cell
    full = neighbor_list(torch.tensor(pos), 4.0, torch.tensor(cell), [True, True, False])
    zero_c = cell.copy()
    zero_c[2] = 0.0
    part = neighbor_list(torch.tensor(pos), 4.0, torch.tensor(zero_c), [True, True, False])
    assert as_tuples(full) == as_tuples(part)
    zero_bc = cell.copy()
    zero_bc[1:] = 0.0
    full1 = neighbor_list(torch.tensor(pos), 4.0, torch.tensor(cell), [True, False, False])
    part1 = neighbor_list(torch.tensor(pos), 4.0, torch.tensor(zero_bc), [True, False, False])
    assert as_tuples(full1) == as_tuples(part1)


def test_pbc_spellings_agree():
    rng = np.random.default_rng(8)
    cell = torch.tensor(random_cell(rng, 5.0))
    pos = torch.rand(12, 3, dtype=torch.float64) @ cell
    a = as_tuples(neighbor_list(pos, 4.0, cell, True))
    assert a == as_tuples(neighbor_list(pos, 4.0, cell, [True, True, True]))
    assert a == as_tuples(neighbor_list(pos, 4.0, cell, torch.tensor([True, True, True])))


def test_torchscript_matches_eager():
    scripted = script(neighbor_list)
    rng = np.random.default_rng(21)
    cell = torch.tensor(random_cell(rng, 4.0))
    pos = torch.tensor(rng.uniform(-1, 2, (25, 3))) @ cell
    for pbc in (True, [True, False, True], False):
        e = neighbor_list(pos, 4.5, cell, pbc)
        s = scripted(pos, 4.5, cell, pbc)
        assert torch.equal(e.i, s.i) and torch.equal(e.j, s.j) and torch.equal(e.shifts, s.shifts)
    s = scripted(pos, 3.0)
    assert as_tuples(s) == as_tuples(neighbor_list(pos, 3.0))
    # the cell-list path on its own (neighbor_list uses all pairs for so few atoms)
    scripted_cl = script(cell_list_neighbor_list)
    for pbc in (True, [False, True, True], False):
        e = cell_list_neighbor_list(pos, 4.5, cell, pbc, 0)
        s = scripted_cl(pos, 4.5, cell, pbc, 0)
        assert torch.equal(e.i, s.i) and torch.equal(e.j, s.j) and torch.equal(e.shifts, s.shifts)
        assert as_tuples(s) == as_tuples(brute_force_neighbor_list(pos, 4.5, cell, pbc))
    with pytest.raises(Exception, match="cutoff must be a positive"):
        scripted(pos, -1.0)


def script(fn):
    with warnings.catch_warnings():  # torch 2.10+ calls TorchScript deprecated; openmm-torch needs it
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(fn)


def test_scripted_inside_a_module():
    """The way openmm-torch sees it: a scripted module whose forward builds the list."""

    class PairCount(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cutoff = 3.0

        def forward(self, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
            nl = neighbor_list(positions, self.cutoff, cell, [True, True, True])
            r = positions[nl.j] - positions[nl.i] + nl.shifts @ cell
            return (3.0 - torch.linalg.norm(r, dim=1)).pow(2).sum()

    module = script(PairCount())
    pos = torch.rand(30, 3, dtype=torch.float64) * 6
    cell = torch.eye(3, dtype=torch.float64) * 6
    assert torch.allclose(module(pos, cell), PairCount()(pos, cell), rtol=1e-14, atol=0)


def test_scripted_cell_geometry_keeps_float64():
    """In TorchScript, torch.tensor(list, dtype=torch.float64) passes the numbers through the
    default dtype (float32 in openmm-torch): the search's cell and inverse came out ~1e-7
    relative off. The scripted search sees the cell exactly, and the scripted wrap moves atoms
    1e4 cells out back by whole lattice vectors to round-off."""
    from typing import List

    from lawful.kernels.neighbors import _cell_geometry, _float64_matrix, wrap_positions

    def full_cell(cell: torch.Tensor) -> torch.Tensor:
        rows: List[List[float]] = cell.tolist()
        full, _, _ = _cell_geometry(rows, [True, True, True])
        return _float64_matrix(full, cell.device)

    cell = torch.tensor([[7.123456789012345, 0.1234567890123, 0.0], [0.3, 6.987654321098765, 0.0],
                         [0.0, 0.0, 8.111111111111111]], dtype=torch.float64)
    assert torch.get_default_dtype() == torch.float32
    assert torch.equal(script(full_cell)(cell), cell)
    pos = torch.rand(5, 3, dtype=torch.float64) @ cell
    far = pos + torch.tensor([1e4, -3e3, 7e3], dtype=torch.float64) @ cell
    wrapped = script(wrap_positions)(far, cell, [True, True, True])
    assert (wrapped - pos).abs().max() < 1e-9


def test_positions_requiring_grad_are_accepted():
    pos = (torch.rand(10, 3, dtype=torch.float64) * 5).requires_grad_(True)
    nl = neighbor_list(pos, 3.0)
    assert not nl.shifts.requires_grad


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(cutoff=-1.0), InputError, "cutoff must be a positive"),
    (dict(cutoff=0.0), InputError, "cutoff must be a positive"),
    (dict(cutoff=float("nan")), InputError, "cutoff must be a positive"),
    (dict(cell=torch.zeros(3, 3, dtype=torch.float64)), InputError, "degenerate cell"),
    (dict(cell=torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 3.0]], dtype=torch.float64)),
     InputError, "degenerate cell"),
    (dict(cell=torch.eye(3, dtype=torch.float64) * 1e-3), InputError, "too thin"),
    (dict(cell=torch.eye(3, dtype=torch.float64) * 1e-20), InputError, "degenerate cell"),
    (dict(cell=torch.eye(2, dtype=torch.float64)), ShapeError, "cell must have shape"),
    (dict(cell=None), InputError, "needs a cell"),
    (dict(pbc=[True, False]), ShapeError, "3 bools"),
    (dict(cell=torch.tensor([[float("nan"), 0, 0], [0, 1.0, 0], [0, 0, 1.0]],
                            dtype=torch.float64)), NumericalError, "NaN or inf"),
])
def test_bad_inputs(kwargs, err, match):
    args = dict(positions=torch.rand(5, 3, dtype=torch.float64), cutoff=2.0,
                cell=torch.eye(3, dtype=torch.float64) * 4, pbc=True)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        neighbor_list(**args)


def test_numpy_inputs_give_the_tensor_result():
    """NumPy positions / cell / pbc are accepted (eager mode) and give exactly the pairs of the
    same data as tensors, in the positions' dtype."""
    rng = np.random.default_rng(5)
    cell = 6.0 * (np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3)))
    pos = rng.uniform(0, 1, (40, 3)) @ cell
    ref = neighbor_list(torch.from_numpy(pos), 3.0, torch.from_numpy(cell), [True, True, False])
    got = neighbor_list(pos, 3.0, cell, np.array([True, True, False]))
    assert got.shifts.dtype == torch.float64
    assert as_tuples(got) == as_tuples(ref)
    got32 = neighbor_list(pos.astype(np.float32), 3.0, cell, True)
    assert got32.shifts.dtype == torch.float32
    vl = VerletList(3.0, skin=0.4)
    assert as_tuples(vl.get(pos, cell, np.bool_(True))) == as_tuples(
        neighbor_list(torch.from_numpy(pos), 3.4, torch.from_numpy(cell), True))


def test_bad_positions():
    with pytest.raises(InputError, match="torch tensor or NumPy array"):
        neighbor_list([[0.0, 0.0, 0.0]], 2.0)
    with pytest.raises(InputError, match="torch tensor or NumPy array"):
        neighbor_list(torch.zeros(3, 3), 2.0, [[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]], True)
    with pytest.raises(InputError, match="torch tensor or NumPy array"):
        VerletList(2.0).get([[0.0, 0.0, 0.0]])
    vl = VerletList(2.0)
    vl.get(torch.zeros(3, 3), torch.eye(3) * 5, True)
    with pytest.raises(InputError, match="torch tensor or NumPy array"):
        vl.get(torch.zeros(3, 3), "5", True)
    pos = torch.rand(6, 3, dtype=torch.float64)
    pos[3, 1] = float("nan")
    with pytest.raises(NumericalError, match=r"atom\(s\) \[3\]"):
        neighbor_list(pos, 2.0)
    pos[3, 1] = float("inf")
    with pytest.raises(NumericalError, match="NaN or inf"):
        neighbor_list(pos, 2.0, torch.eye(3, dtype=torch.float64) * 3, True)
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        neighbor_list(torch.rand(6, 2, dtype=torch.float64), 2.0)
    with pytest.raises(InputError, match="floating-point"):
        neighbor_list(torch.zeros(6, 3, dtype=torch.int64), 2.0)


def test_sparse_molecule_scripted():
    scripted = script(neighbor_list)
    rng = np.random.default_rng(9)
    pos = torch.tensor(np.concatenate([rng.uniform(0, 6, (10, 3)),
                                       rng.uniform(0, 6, (10, 3)) + 1e9]))
    assert as_tuples(scripted(pos, 2.5)) == as_tuples(brute_force_neighbor_list(pos, 2.5))


# ----------------------------------------------------------------------------------------------
# Verlet list
def within(nl, pos, cell, cutoff):
    r = pos[nl.j] - pos[nl.i] + nl.shifts @ cell
    keep = torch.linalg.norm(r, dim=1) < cutoff
    return sorted(zip(nl.i[keep].tolist(), nl.j[keep].tolist(),
                      *nl.shifts[keep].to(torch.int64).T.tolist()))


def test_verlet_rebuilds_only_past_half_skin_and_survives_wrapping():
    """A random walk, wrapped back into the box every step: the skin list always holds exactly
    the pairs of a fresh list, and it is rebuilt exactly when an atom's (unwrapped) displacement
    since the last build exceeds skin / 2."""
    rng = np.random.default_rng(1)
    cell = torch.tensor(random_cell(rng, 9.0))
    cutoff, skin = 3.5, 0.6
    unwrapped = torch.tensor(rng.uniform(0, 1, (64, 3))) @ cell
    inv = torch.linalg.inv(cell)
    vl = VerletList(cutoff, skin)
    ref = None
    expected = 0
    wrapped_any = False
    for step in range(60):
        pos = unwrapped - torch.floor(unwrapped @ inv) @ cell  # positions wrapped into the cell
        if ref is None or torch.linalg.norm(unwrapped - ref, dim=1).max() > skin / 2:
            expected += 1
            ref = unwrapped.clone()
        nl = vl.get(pos, cell, True)
        assert vl.rebuilds == expected, step
        assert within(nl, pos, cell, cutoff) == as_tuples(neighbor_list(pos, cutoff, cell, True))
        unwrapped = unwrapped + torch.tensor(rng.normal(0, 0.04, (64, 3)))
        wrapped_any |= bool((torch.floor(unwrapped @ inv) != torch.floor(ref @ inv)).any())
    assert wrapped_any and 3 <= expected < 30


def test_verlet_unwrapped_jump_by_lattice_vector_needs_no_rebuild():
    rng = np.random.default_rng(2)
    cell = torch.tensor(random_cell(rng, 6.0))
    pos = torch.tensor(rng.uniform(0, 1, (20, 3))) @ cell
    vl = VerletList(4.0, 0.4)
    vl.get(pos, cell, True)
    moved = pos.clone()
    moved[3] += cell[0] - 2 * cell[2]
    moved[7] -= cell[1]
    nl = vl.get(moved, cell, True)
    assert vl.rebuilds == 1
    assert within(nl, moved, cell, 4.0) == as_tuples(neighbor_list(moved, 4.0, cell, True))


@pytest.mark.parametrize("pbc", [[True, True, True], [True, False, True]])
def test_verlet_list_under_a_changing_cell_finds_every_pair(pbc):
    """A barostat or a cell filter changes the cell every step: the list is kept while the strain
    and the non-affine motion stay within the skin, and holds every pair within the cutoff of a
    fresh list at every step (random triclinic strains of up to 0.4 % a step, thermal moves,
    atoms wrapped back into the cell)."""
    rng = np.random.default_rng(7)
    cell = torch.tensor([[7.2, 0.0, 0.0], [1.1, 6.9, 0.0], [0.4, 0.7, 7.4]], dtype=torch.float64)
    pos = torch.tensor(rng.uniform(0, 1, (40, 3)), dtype=torch.float64) @ cell
    cutoff = 3.0
    vl = VerletList(cutoff, 0.6)
    for step in range(60):
        strain = torch.tensor(rng.normal(0, 0.002, (3, 3)), dtype=torch.float64)
        new_cell = cell @ (torch.eye(3, dtype=torch.float64) + strain)
        frac = pos @ torch.linalg.inv(cell)
        pos = frac @ new_cell + torch.tensor(rng.normal(0, 0.01, (40, 3)), dtype=torch.float64)
        cell = new_cell
        if step % 7 == 3:                          # wrap into the cell along the periodic axes
            f = pos @ torch.linalg.inv(cell)
            mask = torch.tensor(pbc)
            pos = torch.where(mask, f - torch.floor(f), f) @ cell
        nl = vl.get(pos, cell, pbc)
        assert within(nl, pos, cell, cutoff) == as_tuples(neighbor_list(pos, cutoff, cell, pbc)), step
    assert 1 < vl.rebuilds < 30, vl.rebuilds


def test_verlet_rebuilds_on_changes():
    rng = np.random.default_rng(3)
    cell = torch.eye(3, dtype=torch.float64) * 7.0
    pos = torch.tensor(rng.uniform(0, 7, (30, 3)))
    vl = VerletList(3.0, 0.5)
    nl = vl.get(pos, cell, True)
    assert vl.get(pos, cell, True) is nl and vl.rebuilds == 1
    kept = vl.get(pos, cell * 1.01, True)          # 1 % strain: within the skin, kept (a new object)
    assert vl.rebuilds == 1 and kept is not nl and torch.equal(kept.i, nl.i)
    vl.get(pos, cell * 1.2, True)                  # 20 %: rebuilt
    assert vl.rebuilds == 2
    vl.get(pos, cell * 1.2, [True, True, False])
    assert vl.rebuilds == 3
    vl.get(pos[:-1], cell * 1.2, [True, True, False])
    assert vl.rebuilds == 4
    nl = vl.get(pos[:-1], None, False)
    assert vl.rebuilds == 5
    assert within(nl, pos[:-1], torch.zeros(3, 3, dtype=torch.float64), 3.0) == as_tuples(
        neighbor_list(pos[:-1], 3.0))
    vl.get(pos[:-1].float(), None, False)
    assert vl.rebuilds == 6
    vl.reset()
    vl.get(pos[:-1].float(), None, False)
    assert vl.rebuilds == 7
    bad = pos[:-1].float().clone()
    bad[0, 0] = float("nan")
    with pytest.raises(NumericalError):
        vl.get(bad, None, False)


@pytest.mark.parametrize("cutoff,skin", [(-1.0, 0.5), (0.0, 0.5), (3.0, -0.1),
                                         (3.0, float("nan"))])
def test_verlet_bad_arguments(cutoff, skin):
    with pytest.raises(InputError, match="cutoff|skin"):
        VerletList(cutoff, skin)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    rng = np.random.default_rng(6)
    cell = torch.tensor(random_cell(rng, 14.0), dtype=dtype)
    pos = (torch.tensor(rng.uniform(-0.5, 1.5, (500, 3))) @ cell.double()).to(dtype)
    for pbc in (True, [True, False, True], False):
        cpu = neighbor_list(pos, 4.0, cell, pbc)
        gpu = neighbor_list(pos.cuda(), 4.0, cell.cuda(), pbc)
        assert gpu.i.device.type == "cuda" and gpu.shifts.dtype == dtype
        got = set(as_tuples(NeighborList(gpu.i.cpu(), gpu.j.cpu(), gpu.shifts.cpu())))
        for i, j, *s in got.symmetric_difference(as_tuples(cpu)):  # float32 round-off only
            r = pos[j].double() - pos[i].double() + torch.tensor(s).double() @ cell.double()
            assert dtype == torch.float32 and abs(float(torch.linalg.norm(r)) - 4.0) < 1e-4
    vl = VerletList(4.0, 0.5)
    vl.get(pos.cuda(), cell.cuda(), True)
    vl.get(pos.cuda() + 0.01, cell.cuda(), True)
    assert vl.rebuilds == 1


def test_verlet_without_skin_keeps_an_open_list_only_while_nothing_moves():
    """skin 0 on an open structure (the ASE calculator's skin=0 path): the same positions keep the
    list, any move rebuilds it, and each list is the one neighbor_list finds; NaN is refused."""
    rng = np.random.default_rng(5)
    pos = torch.tensor(rng.uniform(0, 6, (20, 3)))
    vl = VerletList(3.0, 0.0)
    nl = vl.get(pos)
    assert vl.get(pos.clone()) is nl and vl.rebuilds == 1
    for step in range(5):
        pos = pos + torch.tensor(rng.normal(0, 0.05, (20, 3)))
        got = vl.get(pos)
        assert vl.rebuilds == 2 + step
        ref = neighbor_list(pos, 3.0)
        assert torch.equal(got.i, ref.i) and torch.equal(got.j, ref.j) and torch.equal(got.shifts, ref.shifts)
    bad = pos.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(NumericalError, match=r"atom\(s\) \[3\]"):
        vl.get(bad)
