"""Neighbour lists for periodic (triclinic, any subset of directions) and non-periodic systems.

``neighbor_list(positions, cutoff, cell, pbc)`` returns every pair ``(i, j, shift)`` with
``|positions[j] - positions[i] + shift @ cell| < cutoff``: both ``(i, j)`` and ``(j, i)``, several
images of the same atom (and self-images ``i == j`` with a non-zero shift) when the cell is
thinner than twice the cutoff, never ``i == j`` with a zero shift. Positions need not be wrapped.

The search is an O(N) cell list (bins between lattice planes; bins past the cell edge are image
bins with their lattice shift, so thin cells simply search several image layers); a few dozen
atoms take an all-images all-pairs pass instead, and an open structure of up to 244 atoms one
direct (N, N) pass. Pure torch and
TorchScript-compatible, so a scripted model (openmm-torch) can carry it. :class:`VerletList` adds
a skin and rebuilds only when an atom moved more than skin/2.
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from lawful.kernels.errors import InputError, NumericalError, ShapeError

__all__ = ["NeighborList", "neighbor_list", "wrap_positions", "cell_list_neighbor_list", "brute_force_neighbor_list",
           "VerletList", "pairs_within_cutoff"]


class NeighborList(NamedTuple):
    """A neighbour list: ``r_ij = positions[j] - positions[i] + shifts @ cell``.

    i, j:   (E,) int64 atom indices; every pair appears as (i, j) and as (j, i).
    shifts: (E, 3) integer image counts along the three lattice vectors, in the dtype and on the
            device of the positions (zero along non-periodic directions).
    The order of the pairs is deterministic but otherwise unspecified.
    """

    i: Tensor
    j: Tensor
    shifts: Tensor


# ------------------------------------------------------------------------------------------------
# input checks and cell geometry (3x3 arithmetic in plain Python floats: cheaper than tiny tensors)

def _pbc_flags(pbc: Union[bool, List[bool], Tensor]) -> List[bool]:
    if isinstance(pbc, bool):
        return [pbc, pbc, pbc]
    if isinstance(pbc, Tensor):
        if pbc.numel() == 1:
            b = bool(pbc.reshape(-1)[0])
            return [b, b, b]
        if pbc.numel() != 3:
            raise ShapeError("pbc must be a bool or 3 bools, got a tensor of shape "
                             + str(list(pbc.shape)) + ": pass e.g. pbc=[True, True, False].")
        flat = pbc.reshape(-1)
        return [bool(flat[0]), bool(flat[1]), bool(flat[2])]
    if len(pbc) != 3:
        raise ShapeError("pbc must be a bool or 3 bools, got " + str(len(pbc))
                         + " values: pass e.g. pbc=[True, True, False].")
    return [bool(pbc[0]), bool(pbc[1]), bool(pbc[2])]


@torch.jit.unused
def _from_numpy(positions, cell, pbc):
    """Eager-mode convenience: NumPy positions/cell (and NumPy pbc flags) as tensors. Positions
    keep their float dtype (float64 / float32) and share memory; the cell follows the positions'
    dtype. Anything else is returned unchanged, for the usual checks to refuse."""
    import numpy as np

    if isinstance(positions, np.ndarray):
        positions = torch.from_numpy(np.ascontiguousarray(positions))
    if isinstance(cell, np.ndarray) and isinstance(positions, Tensor):
        cell = torch.as_tensor(np.asarray(cell, dtype=np.float64)).to(
            positions.dtype if positions.is_floating_point() else torch.float64)
    if isinstance(pbc, (np.ndarray, np.bool_)):
        flat = np.asarray(pbc, dtype=bool).reshape(-1)
        pbc = bool(flat[0]) if flat.size == 1 else [bool(b) for b in flat]
    return positions, cell, pbc


def _require_tensors(positions: Tensor, cell: Optional[Tensor]) -> None:
    if not isinstance(positions, Tensor):
        raise InputError("positions must be a torch tensor or NumPy array of shape (N, 3) in Å, "
                         "got " + str(type(positions)) + ": convert with "
                         "torch.as_tensor(positions, dtype=torch.float64).")
    if cell is not None and not isinstance(cell, Tensor):
        raise InputError("cell must be a (3, 3) torch tensor or NumPy array (rows are lattice "
                         "vectors, Å), got " + str(type(cell)) + ": convert with "
                         "torch.as_tensor(cell, dtype=positions.dtype).")


def _check_inputs(positions: Tensor, cutoff: float, cell: Optional[Tensor],
                  pbc: List[bool]) -> Tuple[Tensor, Tensor, List[List[float]]]:
    """Validate the inputs; return the detached positions, the cell (zeros when there is none)
    and the cell rows as floats."""
    _require_tensors(positions, cell)
    positions = positions.detach()
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ShapeError("positions must have shape (N, 3) in Å, got " + str(list(positions.shape))
                         + ": pass one row per atom.")
    if not positions.is_floating_point():
        raise InputError("positions must be a floating-point tensor (float64 or float32), got "
                         + str(positions.dtype) + ": convert with positions.double().")
    if not (cutoff > 0.0) or math.isinf(cutoff):
        raise InputError("cutoff must be a positive finite distance in Å, got " + str(cutoff)
                         + ": pass e.g. cutoff=5.0.")
    if positions.shape[0] > 0 and not bool(torch.isfinite(positions).all()):
        bad = torch.nonzero(~torch.isfinite(positions).all(dim=1)).reshape(-1)
        first: List[int] = bad[:10].tolist()
        raise NumericalError("positions contain NaN or inf (atom(s) " + str(first)
                             + "): the structure has blown up or was not initialised; "
                               "check the previous MD step or the input file.")
    if cell is None:
        if pbc[0] or pbc[1] or pbc[2]:
            raise InputError("pbc=" + str(pbc) + " needs a cell: pass cell as a (3, 3) tensor whose "
                             "rows are the lattice vectors in Å, or pbc=False for a molecule.")
        zero = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
        return positions, zero, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3:
        raise ShapeError("cell must have shape (3, 3) with the lattice vectors as rows, got "
                         + str(list(cell.shape)) + ".")
    rows: List[List[float]] = cell.detach().to(torch.float64).cpu().tolist()
    for row in rows:
        for x in row:
            if not math.isfinite(x):
                raise NumericalError("cell contains NaN or inf: " + str(rows)
                                     + "; pass finite lattice vectors in Å.")
    return positions, cell.detach().to(dtype=positions.dtype, device=positions.device), rows


def _cross(a: List[float], b: List[float]) -> List[float]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def _dot(a: List[float], b: List[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _unit(a: List[float]) -> List[float]:
    norm = math.sqrt(_dot(a, a))
    return [a[0] / norm, a[1] / norm, a[2] / norm]


def _cell_geometry(rows: List[List[float]], pbc: List[bool]
                   ) -> Tuple[List[List[float]], List[List[float]], List[float]]:
    """(full cell, its inverse, plane spacings) for the cell ``rows`` (lattice vectors, Å).

    The full cell equals ``rows`` along periodic directions; rows of non-periodic directions are
    replaced by unit vectors orthogonal to the periodic rows and to each other, so they never
    matter and fractional coordinates along them are distances in Å. ``inverse`` maps Cartesian
    rows to fractional ones (``frac = pos @ inverse``); ``heights[k]`` is the distance between
    lattice planes k = 0 and k = 1. Raises InputError for a degenerate periodic cell.
    """
    periodic: List[int] = []
    free: List[int] = []
    for k in range(3):
        if pbc[k]:
            periodic.append(k)
        else:
            free.append(k)
    full: List[List[float]] = [[rows[k][0], rows[k][1], rows[k][2]] for k in range(3)]
    p = len(periodic)
    degenerate = False
    if p == 1:
        a = rows[periodic[0]]
        degenerate = not (_dot(a, a) > 1e-20)
        if not degenerate:
            a = _unit(a)
            # the coordinate axis least aligned with a, to build the orthogonal complement
            e = [0.0, 0.0, 0.0]
            ax = 0
            for k in range(1, 3):
                if abs(a[k]) < abs(a[ax]):
                    ax = k
            e[ax] = 1.0
            u = _unit(_cross(a, e))
            full[free[0]] = u
            full[free[1]] = _cross(a, u)
    elif p == 2:
        a = rows[periodic[0]]
        b = rows[periodic[1]]
        n = _cross(a, b)
        degenerate = not (_dot(n, n) > 1e-12 * _dot(a, a) * _dot(b, b)) or not (_dot(n, n) > 1e-30)
        if not degenerate:
            full[free[0]] = _unit(n)
    elif p == 3:
        volume = _dot(rows[0], _cross(rows[1], rows[2]))
        scale = _dot(rows[0], rows[0]) * _dot(rows[1], rows[1]) * _dot(rows[2], rows[2])
        degenerate = not (volume * volume > 1e-12 * scale) or not (scale > 1e-30)
    else:
        full = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    if degenerate:
        vectors: List[List[float]] = [rows[k] for k in periodic]
        raise InputError("degenerate cell: the periodic lattice vectors " + str(vectors)
                         + " are zero or (nearly) linearly dependent (zero volume); pass a cell "
                           "with independent rows (Å), or pbc=False along the missing directions.")
    volume = _dot(full[0], _cross(full[1], full[2]))
    inverse = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    heights: List[float] = []
    for k in range(3):
        # reciprocal vector k (column k of the inverse): a_{k+1} x a_{k+2} / volume
        c = _cross(full[(k + 1) % 3], full[(k + 2) % 3])
        for d in range(3):
            inverse[d][k] = c[d] / volume
        heights.append(abs(volume) / math.sqrt(_dot(c, c)))
    return full, inverse, heights


def _image_layers(heights: List[float], pbc: List[bool], reach: float) -> List[int]:
    """Image layers each direction needs for wrapped positions: ceil(reach / plane spacing)."""
    out: List[int] = []
    for k in range(3):
        out.append(int(math.ceil(reach / heights[k])) if pbc[k] else 0)
    n_images = (2 * out[0] + 1) * (2 * out[1] + 1) * (2 * out[2] + 1)
    # a cell so thin that more than 200 000 images must be searched is (nearly) degenerate, or
    # the cutoff is in the wrong unit
    if n_images > 200000:
        raise InputError("the cell is too thin for cutoff " + str(reach) + " Å: " + str(n_images)
                         + " periodic images would be needed (image layers " + str(out)
                         + "). Check the cell (Å, rows are lattice vectors) and the cutoff unit.")
    return out


def _wrap(positions64: Tensor, full: Tensor, inverse: Tensor,
          pbc: List[bool], about_first: bool = False) -> Tuple[Tensor, Tensor]:
    """Fractional coordinates, wrapped into [0, 1) along periodic directions (``about_first``:
    into [f0 - 1/2, f0 + 1/2) of atom 0's f0), and the integer cell offsets k (float64) with
    ``positions = (frac + k) @ full``."""
    frac = positions64 @ inverse
    mask = torch.tensor(pbc, dtype=torch.bool, device=positions64.device)
    shifted = frac - (frac[0] - 0.5) if about_first and frac.shape[0] > 0 else frac
    k = torch.where(mask, torch.floor(shifted), torch.zeros_like(frac))
    return frac - k, k


def _float64_matrix(rows: List[List[float]], device: torch.device) -> Tensor:
    """``rows`` (Python floats) as a float64 tensor, exactly. In TorchScript,
    ``torch.tensor(rows, dtype=torch.float64)`` (and item assignment) passes the numbers through
    the default dtype, float32 in openmm-torch: the cell and its inverse came out ~1e-7 relative
    off. ``torch.full`` keeps the double."""
    if not torch.jit.is_scripting():
        return torch.tensor(rows, dtype=torch.float64, device=device)
    flat: List[Tensor] = []
    for row in rows:
        for value in row:
            flat.append(torch.full([1], value, dtype=torch.float64, device=device))
    return torch.cat(flat).reshape(len(rows), len(rows[0]))


def wrap_positions(positions64: Tensor, cell: Tensor, pbc: List[bool], about_first: bool = False) -> Tensor:
    """``positions64`` (N, 3) float64, Å, moved by whole lattice vectors into the cell along the
    periodic axes (fractional coordinates in [0, 1) there; rows of ``cell`` are the lattice
    vectors, Å), unchanged along the others: what a lower-precision model's engines do before
    rounding unwrapped positions (ASE's MD and OpenMM do not wrap). The same cell geometry and
    wrap as the neighbour search's; TorchScript-able (the openmm-torch module calls it).

    ``about_first``: wrap into the cell centred on atom 0 instead (fractional coordinates within
    [f0 - 1/2, f0 + 1/2) of atom 0's f0; atom 0 itself does not move), so a molecule smaller than
    half the cell stays whole wherever it sits: wrapped into [0, 1), a solute straddling a face is
    split, and its pair vectors are then differences of coordinates a box length apart plus an
    image shift, with a box length's rounding error in a lower precision."""
    if not (pbc[0] or pbc[1] or pbc[2]):
        return positions64
    rows: List[List[float]] = cell.detach().to(torch.float64).cpu().tolist()
    full_l, inverse_l, _ = _cell_geometry(rows, pbc)
    full = _float64_matrix(full_l, positions64.device)
    inverse = _float64_matrix(inverse_l, positions64.device)
    k = _wrap(positions64, full, inverse, pbc, about_first)[1]
    # k is 0 along non-periodic axes and ``full`` is ``cell`` along periodic ones: move by the cell
    # itself, which no list round trip has touched
    return positions64 - k @ cell.to(dtype=torch.float64, device=positions64.device)


def _empty(positions: Tensor) -> NeighborList:
    idx = torch.zeros(0, dtype=torch.int64, device=positions.device)
    return NeighborList(idx, idx, torch.zeros(0, 3, dtype=positions.dtype, device=positions.device))


def pairs_within_cutoff(i: Tensor, j: Tensor, shifts: Tensor, vectors: Tensor, cutoff: float
                        ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The pairs ``(i, j, shifts)`` whose displacement ``vectors`` (E, 3) Å is shorter than ``cutoff`` Å.

    The one cutoff filter of lawful: the neighbour searches and the consumers of Verlet lists
    (engine runner, batching of precomputed pairs) all cut pairs here, so "inside the cutoff"
    means ``|r_ij|^2 < cutoff^2`` in the vectors' dtype everywhere. Returns the kept ``i, j``
    (K,) int64, ``shifts`` (K, 3) and squared distances (K,) Å^2 (``i, j, shifts`` themselves when
    every pair is kept). TorchScript-compatible.
    """
    # column by column: torch's sum over a length-3 axis is several times slower
    d2 = vectors[:, 0] * vectors[:, 0]
    d2.addcmul_(vectors[:, 1], vectors[:, 1])
    d2.addcmul_(vectors[:, 2], vectors[:, 2])
    keep = torch.nonzero(d2 < cutoff * cutoff).reshape(-1)
    if keep.shape[0] == d2.shape[0]:    # every pair inside (a list built at this cutoff): no gathers
        return i, j, shifts, d2
    return (i.index_select(0, keep), j.index_select(0, keep), shifts.index_select(0, keep),
            d2.index_select(0, keep))


def _finish(positions: Tensor, cell: Tensor, i: Tensor, j: Tensor, shifts: Tensor,
            cutoff: float) -> NeighborList:
    """Keep the candidate pairs closer than the cutoff, measured exactly as a model will: from the
    caller's (unwrapped) positions, in their dtype."""
    rij = positions.index_select(0, j) - positions.index_select(0, i) + shifts @ cell
    i, j, shifts, _ = pairs_within_cutoff(i, j, shifts, rij, cutoff)
    return NeighborList(i, j, shifts)


def _search_reach(cutoff: float) -> float:
    # candidates are searched a hair beyond the cutoff, so round-off in wrapping and binning can
    # never lose a pair; _finish then applies the exact cutoff
    return cutoff * (1.0 + 1e-5) + 1e-5


# ------------------------------------------------------------------------------------------------
# shared set-up

class _Setup(NamedTuple):
    positions: Tensor    # (N, 3) detached, caller's dtype
    cell: Tensor         # (3, 3) caller's cell (zeros without one), caller's dtype
    pbc: List[bool]
    full: Tensor         # (3, 3) float64 full-rank cell (see _cell_geometry)
    full_l: List[List[float]]  # the same as Python floats
    frac: Tensor         # (N, 3) float64 fractional coordinates, wrapped along periodic directions
    wraps: Tensor        # (N, 3) float64 integer offsets: positions = (frac + wraps) @ full
    heights: List[float]  # lattice-plane spacings, Å
    layers: List[int]    # image layers a brute-force search needs per direction
    reach: float         # search radius, a hair beyond the cutoff


def _setup(positions: Tensor, cutoff: float, cell: Optional[Tensor],
           pbc: Union[bool, List[bool], Tensor]) -> _Setup:
    if not torch.jit.is_scripting():
        positions, cell, pbc = _from_numpy(positions, cell, pbc)
    flags = _pbc_flags(pbc)
    positions, cell_t, rows = _check_inputs(positions, cutoff, cell, flags)
    full_l, inverse_l, heights = _cell_geometry(rows, flags)
    reach = _search_reach(cutoff)
    layers = _image_layers(heights, flags, reach)  # refuses absurdly thin cells
    device = positions.device
    full = _float64_matrix(full_l, device)
    inverse = _float64_matrix(inverse_l, device)
    frac, wraps = _wrap(positions.to(torch.float64), full, inverse, flags)
    return _Setup(positions, cell_t, flags, full, full_l, frac, wraps, heights, layers, reach)


# ------------------------------------------------------------------------------------------------
# the O(N^2) search

def _brute_force(st: _Setup, cutoff: float) -> NeighborList:
    device = st.positions.device
    n = st.positions.shape[0]
    if n == 0:
        return _empty(st.positions)
    wrapped = st.frac @ st.full
    layers = st.layers
    rng: List[Tensor] = [torch.arange(-m, m + 1, device=device) for m in layers]
    grid = torch.meshgrid(rng[0], rng[1], rng[2], indexing="ij")
    images = torch.stack([grid[0].reshape(-1), grid[1].reshape(-1), grid[2].reshape(-1)], dim=1)
    images = images.to(torch.float64)
    n_img = images.shape[0]
    moved = wrapped.unsqueeze(0) + (images @ st.full).unsqueeze(1)  # (S, N, 3) every image
    centre = n_img // 2  # the zero image: no atom is its own neighbour there
    chunk = max(1, 1000000 // (n * n_img))  # rows per block: about a million distances
    found: List[Tensor] = []
    mx, my, mz = moved[:, :, 0].unsqueeze(1), moved[:, :, 1].unsqueeze(1), moved[:, :, 2].unsqueeze(1)
    for start in range(0, n, chunk):
        rows = wrapped[start:start + chunk]
        # one coordinate at a time: (S, rows, N) arrays, no reduction over a length-3 axis
        d = mx - rows[:, 0].view(1, -1, 1)
        d2 = d * d
        d = my - rows[:, 1].view(1, -1, 1)
        d2 += d * d
        d = mz - rows[:, 2].view(1, -1, 1)
        d2 += d * d
        diag = torch.arange(rows.shape[0], device=device)
        d2[centre, diag, diag + start] = float("inf")
        nz = torch.nonzero(d2 < st.reach * st.reach)
        nz[:, 1] += start
        found.append(nz)
    nz = torch.cat(found)
    a_idx, b_idx = nz[:, 1], nz[:, 2]
    shifts = images.index_select(0, nz[:, 0]) + st.wraps.index_select(0, a_idx) \
        - st.wraps.index_select(0, b_idx)
    return _finish(st.positions, st.cell, a_idx, b_idx, shifts.to(st.positions.dtype), cutoff)


#: An open structure of at most this many atoms squared gets its pairs from :func:`_open_all_pairs`
#: (:func:`neighbor_list`, scripted for openmm-torch, writes the number as a literal: TorchScript
#: does not read module globals)
_ALL_PAIRS_MAX = 60000


def _open_all_pairs(positions: Tensor, cutoff: float) -> NeighborList:
    """Every pair closer than ``cutoff`` of a non-periodic structure of a few hundred atoms at
    most: one (N, N) pass in the positions' dtype, no cell geometry, wrapping or images. The same
    pairs in the same (i, j) order as :func:`_brute_force` followed by :func:`_finish` (the
    displacements and squared distances are formed by the same operations), at a fraction of its
    fixed cost: a molecule's list is rebuilt at every call of a calculator without a skin."""
    n = positions.shape[0]
    if n == 0:
        return _empty(positions)
    x, y, z = positions[:, 0], positions[:, 1], positions[:, 2]
    d = x.unsqueeze(0) - x.unsqueeze(1)      # [i, j] = x_j - x_i, as index_select(j) - index_select(i)
    d2 = d * d
    d = y.unsqueeze(0) - y.unsqueeze(1)
    d2.addcmul_(d, d)
    d = z.unsqueeze(0) - z.unsqueeze(1)
    d2.addcmul_(d, d)
    d2.fill_diagonal_(float("inf"))
    nz = torch.nonzero(d2 < cutoff * cutoff)
    return NeighborList(nz[:, 0].contiguous(), nz[:, 1].contiguous(),
                        torch.zeros(nz.shape[0], 3, dtype=positions.dtype, device=positions.device))


def brute_force_neighbor_list(positions: Tensor, cutoff: float, cell: Optional[Tensor] = None,
                              pbc: Union[bool, List[bool], Tensor] = False) -> NeighborList:
    """All pairs over all needed periodic images, O(N^2 x images) in blocks of about a million
    distances; same contract and errors as :func:`neighbor_list`. The baseline the cell list is
    tested and benchmarked against, and the faster choice for a few dozen atoms."""
    return _brute_force(_setup(positions, cutoff, cell, pbc), cutoff)


# ------------------------------------------------------------------------------------------------
# the cell list

def _bin_grid(heights: List[float], spans: List[float], pbc: List[bool], reach: float,
              bins_per_reach: int, n: int) -> Tuple[List[int], List[float], List[int]]:
    """Bins per direction, bin thickness (Å) and search reach in bins (m) per direction.

    Bins are slabs between lattice planes at least ``reach / bins_per_reach`` thick, so every
    partner within ``reach`` lies at most ``m = ceil(reach / thickness)`` bins away.
    """
    width = reach / bins_per_reach
    counts: List[float] = []  # floats: a sparse molecule could ask for more bins than int64 holds
    widths: List[float] = []
    for k in range(3):
        if pbc[k]:
            counts.append(max(1.0, math.floor(heights[k] / width)))
            widths.append(heights[k] / counts[k])
        else:
            counts.append(math.floor(spans[k] / width) + 1.0)
            widths.append(width)
    # sparse systems (a gas, a molecule in vacuum): coarsen the direction with the most bins
    # until the bin count is O(N)
    limit = float(2 * n + 8)
    while counts[0] * counts[1] * counts[2] > limit:
        k = 0
        for d in range(1, 3):
            if counts[d] > counts[k]:
                k = d
        if pbc[k]:
            counts[k] = max(1.0, math.floor(counts[k] / 2.0))
            widths[k] = heights[k] / counts[k]
        else:
            widths[k] = widths[k] * 2.0
            counts[k] = math.floor(spans[k] / widths[k]) + 1.0
    nbins: List[int] = [int(counts[0]), int(counts[1]), int(counts[2])]
    reach_bins: List[int] = []
    for k in range(3):
        reach_bins.append(int(math.ceil(reach / widths[k])) if pbc[k] or nbins[k] > 1 else 0)
    return nbins, widths, reach_bins


def _estimated_cost(nbins: List[int], reach_bins: List[int], n: int) -> float:
    """Relative cost of a bin grid: work per (atom, offset), per (bin, offset) and per candidate
    pair, weighted 3 : 3 : 1 as measured on CPU (fcc Cu, 256-4000 atoms)."""
    offsets = ((2 * reach_bins[0] + 1) * (2 * reach_bins[1] + 1) * (2 * reach_bins[2] + 1) + 1) // 2
    bins = float(nbins[0] * nbins[1] * nbins[2])
    per_bin = float(n) / bins
    return float(n * offsets) * (3.0 + per_bin) + 3.0 * bins * offsets


def _half_offsets(reach_bins: List[int], device: torch.device) -> Tensor:
    """Bin offsets: d = 0 first, then every d > 0 in lexicographic order; (K, 3) int64.

    The pair (i, j, shift) is found from offset d exactly when (j, i, -shift) would be found from
    -d, so half the offsets (plus i < j within the own bin) find every pair once.
    """
    m0, m1, m2 = reach_bins[0], reach_bins[1], reach_bins[2]
    rows: List[List[int]] = [[0, 0, 0]]
    for a in range(0, m0 + 1):
        for b in range(-m1 if a > 0 else 0, m1 + 1):
            for c in range(-m2 if (a > 0 or b > 0) else 1, m2 + 1):
                rows.append([a, b, c])
    return torch.tensor(rows, dtype=torch.int64, device=device)


def cell_list_neighbor_list(positions: Tensor, cutoff: float, cell: Optional[Tensor] = None,
                            pbc: Union[bool, List[bool], Tensor] = False,
                            bins_per_cutoff: int = 0) -> NeighborList:
    """O(N) cell-list neighbour search; same contract and errors as :func:`neighbor_list`.

    Atoms are wrapped into the cell and binned in slabs between lattice planes; each atom meets
    the atoms of the bins within reach, where a bin past the cell edge is an image bin carrying
    its lattice shift (so a cell thinner than the cutoff just means several image layers).
    ``bins_per_cutoff`` sets the bin thickness to about cutoff / bins_per_cutoff; 0 picks 1, 2
    or 3 from a cost estimate.
    """
    return _cell_list(_setup(positions, cutoff, cell, pbc), cutoff, bins_per_cutoff)


def _cell_list(st: _Setup, cutoff: float, bins_per_cutoff: int) -> NeighborList:
    positions, cell_t, flags, full = st.positions, st.cell, st.pbc, st.full
    frac, wraps, heights, reach = st.frac, st.wraps, st.heights, st.reach
    device = positions.device
    n = positions.shape[0]
    if n == 0:
        return _empty(positions)
    # extent of the atoms along non-periodic directions (Å)
    lows: List[float] = [0.0, 0.0, 0.0]
    spans: List[float] = [0.0, 0.0, 0.0]
    if not (flags[0] and flags[1] and flags[2]):
        lo_l: List[float] = frac.min(dim=0).values.tolist()
        hi_l: List[float] = frac.max(dim=0).values.tolist()
        for k in range(3):
            if not flags[k]:
                lows[k] = lo_l[k] * heights[k]
                spans[k] = (hi_l[k] - lo_l[k]) * heights[k]
                if not math.isfinite(spans[k]):
                    raise InputError("the atoms span " + str(spans[k]) + " Å along non-periodic "
                                     "direction " + str(k) + ": check the coordinates (Å).")
    if bins_per_cutoff > 0:
        nbins, widths, reach_bins = _bin_grid(heights, spans, flags, reach, bins_per_cutoff, n)
    else:
        nbins, widths, reach_bins = _bin_grid(heights, spans, flags, reach, 1, n)
        best = _estimated_cost(nbins, reach_bins, n)
        for bpc in [2, 3]:
            cand = _bin_grid(heights, spans, flags, reach, bpc, n)
            cost = _estimated_cost(cand[0], cand[2], n)
            if cost < best:
                best = cost
                nbins, widths, reach_bins = cand[0], cand[1], cand[2]
    # bin of every atom; atoms clamped into the last bin of a non-periodic direction only lie
    # further out, which keeps "partners are at most m bins away" true
    cols: List[Tensor] = []
    for k in range(3):
        if flags[k]:
            idx = torch.floor(frac[:, k] * nbins[k])
        else:
            idx = torch.floor((frac[:, k] * heights[k] - lows[k]) / widths[k])
        cols.append(idx.clamp(0, nbins[k] - 1).to(torch.int64))
    lin = (cols[0] * nbins[1] + cols[1]) * nbins[2] + cols[2]
    # work in bin order: slot s holds atom order[s]
    order = torch.argsort(lin)
    lin_s = lin.index_select(0, order)
    counts = torch.bincount(lin, minlength=nbins[0] * nbins[1] * nbins[2])
    starts = torch.cumsum(counts, 0) - counts
    wrapped = (frac @ full).index_select(0, order)
    # for every (bin, offset): the target bin, the lattice shift of that image bin, its
    # displacement, and the slots holding its atoms (bins <= 2N + 8, usually fewer than atoms)
    n_bins = nbins[0] * nbins[1] * nbins[2]
    offsets = _half_offsets(reach_bins, device)
    n_off = offsets.shape[0]
    b_all = torch.arange(n_bins, device=device)
    b_coord = [torch.div(b_all, nbins[1] * nbins[2], rounding_mode="floor"),
               torch.remainder(torch.div(b_all, nbins[2], rounding_mode="floor"), nbins[1]),
               torch.remainder(b_all, nbins[2])]
    tlin = torch.zeros(n_bins, n_off, dtype=torch.int64, device=device)
    valid = torch.ones(n_bins, n_off, dtype=torch.bool, device=device)
    shift_cols: List[Tensor] = []  # (bins, K) int64 lattice shift along each direction
    disp: List[Tensor] = []        # (bins, K) float64 displacement of the image bin, x, y, z
    for k in range(3):
        t = b_coord[k].unsqueeze(1) + offsets[:, k].unsqueeze(0)  # (bins, K)
        if flags[k]:
            s = torch.div(t, nbins[k], rounding_mode="floor")
            t = t - s * nbins[k]
        else:  # a bin past the edge of a non-periodic direction is empty
            s = torch.zeros_like(t)
            valid = valid & (t >= 0) & (t < nbins[k])
            t = t.clamp(0, nbins[k] - 1)
        tlin = tlin * nbins[k] + t
        shift_cols.append(s)
    for c in range(3):
        acc = torch.zeros(n_bins, n_off, dtype=torch.float64, device=device)
        for k in range(3):
            if flags[k] and st.full_l[k][c] != 0.0:  # orthorhombic cells skip the zeros
                acc = acc + shift_cols[k].to(torch.float64) * st.full_l[k][c]
        disp.append(acc)
    cnt_bin = torch.where(valid, counts[tlin], torch.zeros_like(tlin))
    begin_bin = starts[tlin]
    # the same for every (atom, offset), atoms in bin order
    cnt = cnt_bin.index_select(0, lin_s)
    begin = begin_bin.index_select(0, lin_s)
    # offset 0 (own bin, no shift): only the partners after the atom itself, so each pair once
    me = torch.arange(n, device=device)
    begin[:, 0] = me + 1
    cnt[:, 0] = starts[lin_s] + counts[lin_s] - me - 1
    # atom i seen from the target image bin: r_ij = wrapped[slot] - base (one column at a time)
    wx, wy, wz = wrapped[:, 0].contiguous(), wrapped[:, 1].contiguous(), wrapped[:, 2].contiguous()
    bx = (wx.unsqueeze(1) - disp[0].index_select(0, lin_s)).reshape(-1)
    by = (wy.unsqueeze(1) - disp[1].index_select(0, lin_s)).reshape(-1)
    bz = (wz.unsqueeze(1) - disp[2].index_select(0, lin_s)).reshape(-1)
    cnt = cnt.reshape(-1)
    src = torch.repeat_interleave(cnt)
    first = torch.cumsum(cnt, 0) - cnt
    slot = torch.arange(src.shape[0], device=device) \
        + (begin.reshape(-1) - first).index_select(0, src)
    d = wx.index_select(0, slot) - bx.index_select(0, src)
    d2 = d * d
    d = wy.index_select(0, slot) - by.index_select(0, src)
    d2.addcmul_(d, d)
    d = wz.index_select(0, slot) - bz.index_select(0, src)
    d2.addcmul_(d, d)
    hit = torch.nonzero(d2 < reach * reach).reshape(-1)
    src = src.index_select(0, hit)
    a_slot = torch.div(src, n_off, rounding_mode="floor")
    atom_i = order.index_select(0, a_slot)
    atom_j = order.index_select(0, slot.index_select(0, hit))
    which = lin_s.index_select(0, a_slot) * n_off + (src - a_slot * n_off)  # (bin, offset) row
    sh = torch.stack([shift_cols[0].reshape(-1).index_select(0, which),
                      shift_cols[1].reshape(-1).index_select(0, which),
                      shift_cols[2].reshape(-1).index_select(0, which)], dim=1).to(torch.float64)
    shifts = sh + wraps.index_select(0, atom_i) - wraps.index_select(0, atom_j)
    half = _finish(positions, cell_t, atom_i, atom_j, shifts.to(positions.dtype), cutoff)
    return NeighborList(torch.cat([half.i, half.j]), torch.cat([half.j, half.i]),
                        torch.cat([half.shifts, -half.shifts]))


def neighbor_list(positions: Tensor, cutoff: float, cell: Optional[Tensor] = None,
                  pbc: Union[bool, List[bool], Tensor] = False) -> NeighborList:
    """Every pair of atoms closer than ``cutoff``, over periodic images (O(N) cell list).

    positions: (N, 3) float tensor in Å (any device, float32 or float64; need not be wrapped),
               or a NumPy array (eager mode; used as a CPU tensor of its dtype).
    cutoff:    float, Å, > 0.
    cell:      (3, 3) tensor or NumPy array, rows are the lattice vectors in Å; needed when any
               pbc is True.
               Rows along non-periodic directions are ignored (may be zero).
    pbc:       bool or 3 bools (periodic along each lattice vector).

    Returns NeighborList(i, j, shifts): i, j (E,) int64, shifts (E, 3) integer image counts in the
    positions' dtype, with ``r_ij = positions[j] - positions[i] + shifts @ cell`` and
    ``|r_ij| < cutoff`` evaluated in the positions' dtype. Both (i, j) and (j, i) appear;
    self-images (i == j, shift != 0) appear when the cell is thinner than the cutoff.
    Raises ShapeError/InputError for bad arguments or a degenerate (zero-volume) cell and
    NumericalError for NaN/inf coordinates. TorchScript-compatible; the result carries no
    gradient (compute r_ij from the positions to differentiate).
    """
    if not torch.jit.is_scripting():
        positions, cell, pbc = _from_numpy(positions, cell, pbc)
    flags = _pbc_flags(pbc)
    # an open structure of a few hundred atoms: one direct pass (larger ones and anything
    # malformed go on to _setup, which checks the inputs once)
    if (not (flags[0] or flags[1] or flags[2]) and isinstance(positions, Tensor) and positions.dim() == 2
            and positions.shape[0] * positions.shape[0] <= 60000):
        checked, _, _ = _check_inputs(positions, cutoff, cell, flags)
        return _open_all_pairs(checked, cutoff)
    st = _setup(positions, cutoff, cell, flags)
    n = st.positions.shape[0]
    n_images = (2 * st.layers[0] + 1) * (2 * st.layers[1] + 1) * (2 * st.layers[2] + 1)
    # a few dozen atoms: one vectorised all-pairs pass beats the cell list's fixed cost
    if n * n * n_images <= 60000:
        return _brute_force(st, cutoff)
    return _cell_list(st, cutoff, 0)


# ------------------------------------------------------------------------------------------------
# Verlet list with a skin

class VerletList:
    """A neighbour list with a skin, rebuilt only when needed.

    ``get(positions, cell, pbc)`` returns a :class:`NeighborList` of every pair closer than
    ``cutoff + skin`` (Å) at the last build, which contains every pair closer than ``cutoff``
    now as long as no atom moved more than ``skin / 2``. It rebuilds when an atom moved further,
    or when pbc, the number of atoms, dtype or device changed; ``rebuilds`` counts builds. A
    changed cell (a barostat or a cell filter moves it every step) keeps the list while the
    deformation and the atoms' non-affine displacements stay within the skin
    (2 max|d| + ||F - I||_2 (cutoff + skin) <= skin, F the cell's deformation since the build): it
    was rebuilt at every step of an NPT run (401 builds in 400 steps, 8-24 % of the step).

    Atoms that were wrapped back into the cell (jumped by whole lattice vectors) are handled
    exactly, without a rebuild: their jump is folded into the returned shifts. Consumers must
    treat pairs beyond ``cutoff`` as absent (a smooth cutoff function does that by itself).
    """

    def __init__(self, cutoff: float, skin: float = 0.5):
        cutoff = float(cutoff)
        skin = float(skin)
        if not (cutoff > 0.0) or math.isinf(cutoff):
            raise InputError(f"cutoff must be a positive finite distance in Å, got {cutoff}: "
                             "pass e.g. VerletList(cutoff=5.0, skin=0.5).")
        if not (skin >= 0.0) or math.isinf(skin):
            raise InputError(f"skin must be a finite distance >= 0 in Å, got {skin}: "
                             "pass e.g. skin=0.5 (0 rebuilds whenever anything moves).")
        self.cutoff = cutoff
        self.skin = skin
        self.rebuilds = 0
        self._list: Optional[NeighborList] = None
        self._ref: Optional[Tensor] = None
        self._cell: Optional[Tensor] = None
        self._pbc: List[bool] = [False, False, False]
        self._inverse: Optional[Tensor] = None

    def reset(self) -> None:
        """Forget the stored list; the next ``get`` rebuilds."""
        self._list = None
        self._ref = None

    def _stale(self, positions: Tensor, cell: Optional[Tensor], pbc: List[bool]) -> bool:
        if self._list is None or self._ref is None:
            return True
        ref = self._ref
        if (positions.shape != ref.shape or positions.dtype != ref.dtype
                or positions.device != ref.device or pbc != self._pbc):
            return True
        if (cell is None) != (self._cell is None):
            return True
        return False

    def _strained(self, positions: Tensor, cell: Tensor, flags: List[bool]) -> Optional[NeighborList]:
        """The stored list for a changed cell (a barostat, a cell filter), when it still holds every
        pair within the cutoff, else None. With F = C0^-1 C1 the deformation from the build's cell
        C0 to ``cell`` C1 (full cells, rows), every pair vector is r1 = r0 F + (d_j - d_i), d the
        atoms' non-affine displacements (fractional change less whole-cell jumps, times C1): a pair
        within the cutoff now was within cutoff + skin at the build when
        2 max|d| + ||F - I||_2 (cutoff + skin) <= skin."""
        assert self._ref is not None and self._list is not None and self._inverse is not None
        rows = cell.detach().to(torch.float64).cpu().tolist()
        full, inverse, _ = _cell_geometry(rows, flags)
        c1 = torch.tensor(full, dtype=torch.float64, device=positions.device)
        i1 = torch.tensor(inverse, dtype=torch.float64, device=positions.device)
        strain = self._inverse @ c1 - torch.eye(3, dtype=torch.float64, device=positions.device)
        e = float(torch.linalg.matrix_norm(strain, ord=2))
        df = positions.to(torch.float64) @ i1 - self._ref.to(torch.float64) @ self._inverse
        mask = torch.tensor(flags, dtype=torch.bool, device=positions.device)
        jumps = torch.where(mask, torch.round(df), torch.zeros_like(df))
        d = (df - jumps) @ c1
        moved = float((d * d).sum(1).max().sqrt()) if d.shape[0] > 0 else 0.0
        if 2.0 * moved + e * (self.cutoff + self.skin) > self.skin:
            return None
        nl = self._list
        j = jumps.to(nl.shifts.dtype)
        # always a new object: consumers that cache shifts @ cell per list see the new cell
        return NeighborList(nl.i, nl.j, nl.shifts + j.index_select(0, nl.i) - j.index_select(0, nl.j))

    def get(self, positions: Tensor, cell: Optional[Tensor] = None,
            pbc: Union[bool, List[bool], Tensor] = False) -> NeighborList:
        """The list for ``positions`` (N, 3) Å; same arguments and checks as neighbor_list."""
        positions, cell, pbc = _from_numpy(positions, cell, pbc)
        flags = _pbc_flags(pbc)
        _require_tensors(positions, cell)
        positions = positions.detach()
        if not self._stale(positions, cell, flags):
            assert self._ref is not None and self._list is not None and self._inverse is not None
            if not bool(torch.isfinite(positions).all()):
                _check_inputs(positions, self.cutoff, cell, flags)  # raises the usual error
            if cell is not None and self._cell is not None and not torch.equal(
                    cell.detach().to(dtype=self._ref.dtype, device=self._ref.device), self._cell):
                if not bool(torch.isfinite(cell).all()):
                    _check_inputs(positions, self.cutoff, cell, flags)
                kept = self._strained(positions, cell, flags)
                if kept is not None:
                    return kept
                return self._build(positions, cell, flags)
            if self.skin == 0.0 and not (flags[0] or flags[1] or flags[2]):
                # no skin, no periodic images: the list is kept only while nothing moved at all
                # (the test below, without forming the displacements); positions checked above
                if torch.equal(positions, self._ref):
                    return self._list
                return self._build(positions, cell, flags, checked=True)
            delta = positions - self._ref
            jumps = torch.zeros_like(delta)
            if flags[0] or flags[1] or flags[2]:
                assert self._cell is not None
                mask = torch.tensor(flags, dtype=torch.bool, device=delta.device)
                jumps = torch.where(mask, torch.round(delta.to(torch.float64) @ self._inverse),
                                    torch.zeros_like(delta, dtype=torch.float64)).to(delta.dtype)
                delta = delta - jumps @ self._cell
            moved = 0.0
            if delta.shape[0] > 0:
                d2 = delta[:, 0] * delta[:, 0] + delta[:, 1] * delta[:, 1] + delta[:, 2] * delta[:, 2]
                moved = float(d2.max())
            if moved <= (0.5 * self.skin) ** 2:
                nl = self._list
                if not bool((jumps != 0).any()):
                    return nl
                return NeighborList(nl.i, nl.j, nl.shifts + jumps.index_select(0, nl.i)
                                    - jumps.index_select(0, nl.j))
        return self._build(positions, cell, flags)

    def _build(self, positions: Tensor, cell: Optional[Tensor], flags: List[bool],
               checked: bool = False) -> NeighborList:
        """Build and store the list. ``checked``: the positions are known finite and of the stored
        list's shape (a small open structure then goes straight to :func:`_open_all_pairs`, as
        :func:`neighbor_list` sends it after its input checks)."""
        open_cell = cell is None and not (flags[0] or flags[1] or flags[2])
        if checked and open_cell and positions.shape[0] * positions.shape[0] <= _ALL_PAIRS_MAX:
            nl = _open_all_pairs(positions, self.cutoff + self.skin)
        else:
            nl = neighbor_list(positions, self.cutoff + self.skin, cell, flags)
        # the inverse of an open structure's (zero) cell does not change: kept from the last build
        keep_inverse = (open_cell and self._cell is None and self._inverse is not None and self._pbc == flags
                        and self._inverse.device == positions.device)
        self._list = nl
        self._ref = positions.clone()
        self._pbc = flags
        self._cell = None
        if cell is not None:
            self._cell = cell.detach().to(dtype=positions.dtype, device=positions.device).clone()
        if not keep_inverse:
            rows = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
            if self._cell is not None:
                rows = self._cell.to(torch.float64).cpu().tolist()
            _, inverse, _ = _cell_geometry(rows, flags)
            self._inverse = torch.tensor(inverse, dtype=torch.float64, device=positions.device)
        self.rebuilds += 1
        return nl
