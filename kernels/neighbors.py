"""Neighbour lists for periodic (triclinic, any subset of directions) and non-periodic systems.

``neighbor_list(positions, cutoff, cell, pbc)`` returns every pair ``(i, j, shift)`` with
``|positions[j] - positions[i] + shift @ cell| < cutoff``: both ``(i, j)`` and ``(j, i)``, several
images of the same atom (and self-images ``i == j`` with a non-zero shift) when the cell is smaller
than twice the cutoff, never ``i == j`` with a zero shift. Positions need not be wrapped.

Pure torch and TorchScript-compatible, so a scripted model (openmm-torch) can carry it.
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from lawful.kernels.errors import InputError, NumericalError, ShapeError

__all__ = ["NeighborList", "neighbor_list", "brute_force_neighbor_list", "VerletList"]



class NeighborList(NamedTuple):
    """A neighbour list: ``r_ij = positions[j] - positions[i] + shifts @ cell``.

    i, j:   (E,) int64 atom indices.
    shifts: (E, 3) integer image counts along the three lattice vectors, in the dtype and on the
            device of the positions (zero along non-periodic directions).
    """

    i: Tensor
    j: Tensor
    shifts: Tensor


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
    return [pbc[0], pbc[1], pbc[2]]


def _check_inputs(positions: Tensor, cutoff: float, cell: Optional[Tensor],
                  pbc: List[bool]) -> Tensor:
    """Validate the inputs and return the cell (zeros when there is none)."""
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ShapeError("positions must have shape (N, 3) in Å, got " + str(list(positions.shape))
                         + ": pass one row per atom.")
    if not positions.is_floating_point():
        raise InputError("positions must be a floating-point tensor (float64 or float32), got "
                         + str(positions.dtype) + ": convert with positions.double().")
    if not (cutoff > 0.0) or cutoff == float("inf"):
        raise InputError("cutoff must be a positive finite distance in Å, got " + str(cutoff)
                         + ": pass e.g. cutoff=5.0.")
    if positions.shape[0] > 0 and not bool(torch.isfinite(positions).all()):
        bad = torch.nonzero(~torch.isfinite(positions).all(dim=1)).reshape(-1)
        first: List[int] = bad[:10].tolist()
        raise NumericalError("positions contain NaN or inf (atom(s) " + str(first)
                             + "): the structure has blown up or was not initialised; "
                               "check the previous MD step or the input file.")
    any_pbc = pbc[0] or pbc[1] or pbc[2]
    if cell is None:
        if any_pbc:
            raise InputError("pbc=" + str(pbc) + " needs a cell: pass cell as a (3, 3) tensor whose "
                             "rows are the lattice vectors in Å, or pbc=False for a molecule.")
        return torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
    if cell.dim() != 2 or cell.shape[0] != 3 or cell.shape[1] != 3:
        raise ShapeError("cell must have shape (3, 3) with the lattice vectors as rows, got "
                         + str(list(cell.shape)) + ".")
    cell = cell.to(dtype=positions.dtype, device=positions.device)
    if not bool(torch.isfinite(cell).all()):
        values: List[List[float]] = cell.tolist()
        raise NumericalError("cell contains NaN or inf: " + str(values)
                             + "; pass finite lattice vectors in Å.")
    return cell


def _complete_cell(cell: Tensor, pbc: List[bool]) -> Tensor:
    """A full-rank cell equal to ``cell`` along the periodic directions.

    Rows of non-periodic directions are replaced by unit vectors orthogonal to the periodic rows
    (and to each other), so fractional coordinates along them are plain distances in Å. Raises
    InputError when the periodic rows are (nearly) linearly dependent: a degenerate cell.
    """
    dtype = cell.dtype
    device = cell.device
    c64 = cell.to(torch.float64)
    periodic: List[int] = []
    for k in range(3):
        if pbc[k]:
            periodic.append(k)
    p = len(periodic)
    if p == 0:
        return torch.eye(3, dtype=dtype, device=device)
    rows = c64[periodic]
    norms = torch.linalg.norm(rows, dim=1)
    gram_det = float(torch.linalg.det(rows @ rows.T))
    scale = float(torch.prod(norms)) ** 2
    if not (scale > 0.0) or gram_det <= 1e-12 * scale:
        vectors: List[List[float]] = rows.tolist()
        raise InputError("degenerate cell: the periodic lattice vectors " + str(vectors)
                         + " are zero or (nearly) linearly dependent (zero volume); pass a cell "
                           "with independent rows (Å), or pbc=False along the missing directions.")
    full = c64.clone()
    if p == 3:
        return cell
    if p == 2:
        n = torch.linalg.cross(rows[0], rows[1])
        for k in range(3):
            if not pbc[k]:
                full[k] = n / torch.linalg.norm(n)
        return full.to(dtype)
    a = rows[0] / norms[0]
    e = torch.zeros(3, dtype=torch.float64, device=device)
    e[int(torch.argmin(torch.abs(a)))] = 1.0
    u = torch.linalg.cross(a, e)
    u = u / torch.linalg.norm(u)
    v = torch.linalg.cross(a, u)
    others: List[int] = []
    for k in range(3):
        if not pbc[k]:
            others.append(k)
    full[others[0]] = u
    full[others[1]] = v
    return full.to(dtype)


def _image_range(full_cell: Tensor, pbc: List[bool], reach: float) -> List[int]:
    """How many images each direction needs for positions wrapped into the cell: ceil(reach/h)."""
    c64 = full_cell.to(torch.float64)
    volume = abs(float(torch.linalg.det(c64)))
    out: List[int] = []
    for k in range(3):
        if not pbc[k]:
            out.append(0)
            continue
        area = float(torch.linalg.norm(torch.linalg.cross(c64[(k + 1) % 3], c64[(k + 2) % 3])))
        height = volume / area
        out.append(int(math.ceil(reach / height)))
    n_images = (2 * out[0] + 1) * (2 * out[1] + 1) * (2 * out[2] + 1)
    # Refuse cells so thin (relative to the cutoff) that the images to search exceed 200 000:
    # a (nearly) degenerate cell or a cutoff in the wrong unit.
    if n_images > 200000:
        raise InputError("the cell is too thin for cutoff " + str(reach) + " Å: " + str(n_images)
                         + " periodic images would be needed (image layers " + str(out)
                         + "). Check the cell (Å, rows are lattice vectors) and the cutoff unit.")
    return out


def _wrap(positions: Tensor, full_cell: Tensor, pbc: List[bool]) -> Tuple[Tensor, Tensor]:
    """Wrap positions into the cell along periodic directions.

    Returns (fractional coordinates, integer cell offsets k with positions = wrapped + k @ cell).
    """
    inv = torch.linalg.inv(full_cell)
    frac = positions @ inv
    mask = torch.tensor(pbc, dtype=torch.bool, device=positions.device)
    k = torch.where(mask, torch.floor(frac), torch.zeros_like(frac))
    frac = frac - k
    return frac, k


def _finish(positions: Tensor, cell: Tensor, i: Tensor, j: Tensor, shifts: Tensor,
            cutoff: float) -> NeighborList:
    """Keep the candidate pairs closer than the cutoff (computed from the unwrapped positions)."""
    rij = positions[j] - positions[i] + shifts @ cell
    keep = (rij * rij).sum(dim=1) < cutoff * cutoff
    return NeighborList(i[keep], j[keep], shifts[keep])


def brute_force_neighbor_list(positions: Tensor, cutoff: float, cell: Optional[Tensor] = None,
                              pbc: Union[bool, List[bool], Tensor] = False) -> NeighborList:
    """All pairs over all needed periodic images, O(N^2 x images); same contract as neighbor_list.

    The reference the cell list is tested against; fast enough for small systems.
    """
    flags = _pbc_flags(pbc)
    positions = positions.detach()
    cell_t = _check_inputs(positions, cutoff, cell, flags).detach()
    full = _complete_cell(cell_t, flags)
    reach = cutoff * (1.0 + 1e-6) + 1e-6
    layers = _image_range(full, flags, reach)
    frac, k = _wrap(positions, full, flags)
    wrapped = frac @ full
    rng: List[Tensor] = [torch.arange(-m, m + 1, device=positions.device) for m in layers]
    grid = torch.meshgrid(rng[0], rng[1], rng[2], indexing="ij")
    images = torch.stack([grid[0].reshape(-1), grid[1].reshape(-1), grid[2].reshape(-1)], dim=1)
    images = images.to(positions.dtype)
    offsets = images @ full  # (S, 3)
    # d[s, a, b] = wrapped[b] + offsets[s] - wrapped[a]
    diff = wrapped.unsqueeze(0) - wrapped.unsqueeze(1)  # (a, b)
    d2 = ((diff.unsqueeze(0) + offsets.view(-1, 1, 1, 3)) ** 2).sum(dim=-1)
    hit = d2 < reach * reach
    nz = torch.nonzero(hit)
    s_idx, a_idx, b_idx = nz[:, 0], nz[:, 1], nz[:, 2]
    zero_shift = (images[s_idx] == 0).all(dim=1)
    keep = ~(zero_shift & (a_idx == b_idx))
    s_idx, a_idx, b_idx = s_idx[keep], a_idx[keep], b_idx[keep]
    shifts = images[s_idx] + k[a_idx] - k[b_idx]
    return _finish(positions, cell_t, a_idx, b_idx, shifts, cutoff)


def neighbor_list(positions: Tensor, cutoff: float, cell: Optional[Tensor] = None,
                  pbc: Union[bool, List[bool], Tensor] = False) -> NeighborList:
    """Every pair of atoms closer than ``cutoff``, over periodic images.

    positions: (N, 3) float tensor in Å (any device, float32 or float64; need not be wrapped).
    cutoff:    float, Å, > 0.
    cell:      (3, 3) tensor, rows are the lattice vectors in Å; needed when any pbc is True.
    pbc:       bool or 3 bools (periodic along each lattice vector).

    Returns NeighborList(i, j, shifts): i, j (E,) int64, shifts (E, 3) integer image counts in the
    positions' dtype, with ``r_ij = positions[j] - positions[i] + shifts @ cell`` and
    ``|r_ij| < cutoff``. Both (i, j) and (j, i) appear. Raises InputError / ShapeError for bad
    arguments and a degenerate cell, NumericalError for NaN/inf coordinates.
    TorchScript-compatible; no gradient flows through the indices.
    """
    return brute_force_neighbor_list(positions, cutoff, cell, pbc)
