"""Input checking and batching of atomic structures for the lawful force fields.

A :class:`Batch` concatenates the atoms of B structures (a training batch, or just one structure)
and holds their neighbour pairs, found with :func:`lawful.kernels.neighbors.neighbor_list`.
Pair ``e`` joins atom ``edge_i[e]`` to atom ``edge_j[e]`` (indices into the concatenated atoms)
with the displacement ``r_j - r_i + shifts[e] @ cell[edge_batch[e]]``. Positions are in Å, cells
have the lattice vectors as rows (Å).

Every check that protects the models from bad input lives here: shapes, NaN/inf coordinates,
unknown elements, singular cells, coincident atoms. Each raises a :class:`~lawful.kernels.LawfulError`
subclass whose message names the offending value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from lawful.kernels.errors import InputError, LawfulError, NumericalError, ShapeError, UnsupportedSpeciesError
from lawful.kernels.neighbors import pairs_within_cutoff

__all__ = ["Batch", "make_batch", "structure_tensors", "structure_args", "STRUCTURE_FORMS", "MIN_DISTANCE",
           "pair_key", "pair_min_distances", "batched_pairs", "evaluate_batch"]

#: Two atoms closer than this (Å) are treated as coincident: the model refuses them
#: (:class:`NumericalError`) instead of returning meaningless or NaN forces.
MIN_DISTANCE = 1e-4


@dataclass(frozen=True)
class Batch:
    """B structures concatenated into one graph (all tensors on one device, one float dtype).

    positions (N,3) Å; species (N,) int64 species *indices* of the model; numbers (N,) int64 atomic
    numbers; batch (N,) int64 structure of each atom; cell (B,3,3) Å (zeros where non-periodic);
    pbc (B,3) bool; edge_i, edge_j (E,) int64; shifts (E,3) integer image counts in the float dtype;
    edge_batch (E,) int64; n_atoms (B,) int64.
    """

    positions: torch.Tensor
    species: torch.Tensor
    numbers: torch.Tensor
    batch: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_i: torch.Tensor
    edge_j: torch.Tensor
    shifts: torch.Tensor
    edge_batch: torch.Tensor
    n_atoms: torch.Tensor

    @property
    def n_structures(self) -> int:
        """Number B of structures in the batch."""
        return int(self.cell.shape[0])

    def to(self, device=None, dtype=None) -> "Batch":
        """The same batch with float tensors in ``dtype`` and everything on ``device``."""
        def f(t):
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)
        return Batch(**{k: f(getattr(self, k)) for k in self.__dataclass_fields__})

    def with_positions(self, positions: torch.Tensor) -> "Batch":
        """The same graph with new positions (the neighbour pairs are kept: use for small moves
        only, or with a pair list built with a skin)."""
        return replace(self, positions=positions)

    def split(self) -> list["Batch"]:
        """The B single-structure batches this batch joins (inverse of :meth:`concatenate`)."""
        n = self.n_atoms.tolist()
        starts = [0]
        for c in n:
            starts.append(starts[-1] + c)
        e_counts = torch.bincount(self.edge_batch, minlength=self.n_structures).tolist()
        order = torch.argsort(self.edge_batch, stable=True)
        out, e0 = [], 0
        for s in range(self.n_structures):
            a0, a1 = starts[s], starts[s + 1]
            sel = order[e0:e0 + e_counts[s]]
            e0 += e_counts[s]
            out.append(Batch(
                positions=self.positions[a0:a1], species=self.species[a0:a1], numbers=self.numbers[a0:a1],
                batch=torch.zeros(a1 - a0, dtype=torch.long, device=self.positions.device),
                cell=self.cell[s:s + 1], pbc=self.pbc[s:s + 1],
                edge_i=self.edge_i.index_select(0, sel) - a0, edge_j=self.edge_j.index_select(0, sel) - a0,
                shifts=self.shifts.index_select(0, sel),
                edge_batch=torch.zeros(sel.shape[0], dtype=torch.long, device=self.positions.device),
                n_atoms=self.n_atoms[s:s + 1]))
        return out

    @staticmethod
    def concatenate(batches: Sequence["Batch"]) -> "Batch":
        """Join batches (e.g. cached single structures) into one, re-indexing atoms and pairs."""
        atom_offset = 0
        struct_offset = 0
        parts: dict[str, list] = {k: [] for k in Batch.__dataclass_fields__}
        for b in batches:
            for k in ("positions", "species", "numbers", "cell", "pbc", "shifts", "n_atoms"):
                parts[k].append(getattr(b, k))
            parts["batch"].append(b.batch + struct_offset)
            parts["edge_batch"].append(b.edge_batch + struct_offset)
            parts["edge_i"].append(b.edge_i + atom_offset)
            parts["edge_j"].append(b.edge_j + atom_offset)
            atom_offset += b.positions.shape[0]
            struct_offset += b.n_structures
        return Batch(**{k: torch.cat(v, dim=0) for k, v in parts.items()})


def _as_tensor(x, dtype, device, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64 if dtype.is_floating_point else np.int64),
                               dtype=dtype, device=device)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} could not be converted to a tensor ({exc}); pass an array or tensor.") from exc


def _pbc3(pbc) -> list[bool]:
    if isinstance(pbc, torch.Tensor):
        pbc = pbc.tolist()
    if isinstance(pbc, (bool, np.bool_, int)):
        return [bool(pbc)] * 3
    pbc = [bool(p) for p in pbc]
    if len(pbc) != 3:
        raise ShapeError(f"pbc must be a bool or 3 bools, got {pbc!r}.")
    return pbc


def structure_tensors(positions, numbers, cell, pbc, z_to_index: torch.Tensor, species_names: Sequence[str],
                      dtype: torch.dtype, device: torch.device):
    """Check one structure and convert it: returns (positions (N,3), numbers (N,), species (N,),
    cell (3,3), pbc list of 3 bools). Raises ShapeError / NumericalError / UnsupportedSpeciesError /
    InputError on bad input.

    Positions are cast to ``dtype`` as given, before any pair vector is formed: in float32 the
    geometry keeps about 7 significant digits of the *absolute* coordinates, so its accuracy falls
    with the distance from the origin (alanine dipeptide, max |F32 - F64|: 1e-5 eV/Å near the
    origin, 4e-3 at 1000 Å, 4e-2 at 10 000 Å). Keep float32 structures near the origin (wrap or
    centre them) or use float64."""
    pos = _as_tensor(positions, dtype, device, "positions")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ShapeError(f"positions must have shape (N, 3) in Å, got {tuple(pos.shape)}.")
    num = _as_tensor(numbers, torch.long, device, "numbers").reshape(-1)
    if num.shape[0] != pos.shape[0]:
        raise ShapeError(f"numbers has {num.shape[0]} entries but positions has {pos.shape[0]} atoms.")
    if pos.shape[0] == 0:
        raise ShapeError("the structure has no atoms.")
    bad = ~torch.isfinite(pos).all(dim=1)
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten()[:5].tolist()
        raise NumericalError(f"positions of atom(s) {idx} are NaN or infinite: {pos[idx[0]].tolist()} "
                             "for the first; the structure has blown up or was not set - check the "
                             "time step / the input coordinates.")
    table = z_to_index.to(device)
    valid = (num >= 0) & (num < table.shape[0])
    species = torch.full_like(num, -1)
    species[valid] = table[num[valid]]
    if bool((species < 0).any()):
        unknown = sorted(set(num[species < 0].tolist()))
        from ase.data import chemical_symbols
        names = [chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}" for z in unknown]
        raise UnsupportedSpeciesError(names, species_names)
    pbc3 = _pbc3(pbc)
    if cell is None:
        if any(pbc3):
            raise InputError(f"pbc={pbc3} needs a cell: pass cell=(3,3) lattice vectors as rows in Å.")
        c = torch.zeros((3, 3), dtype=dtype, device=device)
    else:
        c = _as_tensor(cell, dtype, device, "cell")
        if c.shape == (3,):
            c = torch.diag(c)
        if c.shape != (3, 3):
            raise ShapeError(f"cell must be (3,3) with lattice vectors as rows (Å), got {tuple(c.shape)}.")
        if not bool(torch.isfinite(c).all()):
            raise NumericalError(f"the cell contains NaN/inf: {c.tolist()}.")
        if all(pbc3):
            vol = float(torch.linalg.det(c.to(torch.float64)).abs())
            if vol < 1e-8:
                raise InputError(f"the cell {c.tolist()} is singular (volume {vol:g} Å^3) but pbc={pbc3}; "
                                 "give three independent lattice vectors or pbc=False.")
    return pos, num, species, c, pbc3


def _pairs(pos: torch.Tensor, cell: torch.Tensor, pbc3: list[bool], cutoff: float):
    from lawful.kernels.neighbors import neighbor_list

    if any(pbc3):
        nl = neighbor_list(pos, cutoff, cell=cell, pbc=pbc3)
    else:
        nl = neighbor_list(pos, cutoff, cell=None, pbc=False)
    return nl.i, nl.j, nl.shifts.to(pos.dtype)


def check_distances(vectors: torch.Tensor, edge_i: torch.Tensor, edge_j: torch.Tensor) -> None:
    """Raise :class:`NumericalError` if any pair is closer than :data:`MIN_DISTANCE` Å."""
    if vectors.shape[0] == 0:
        return
    check_squared_distances((vectors.detach() ** 2).sum(dim=1), edge_i, edge_j)


def check_squared_distances(d2: torch.Tensor, edge_i: torch.Tensor, edge_j: torch.Tensor) -> None:
    """:func:`check_distances` on the pairs' squared distances ``d2`` (E,) Å²."""
    if d2.shape[0] == 0:
        return
    if bool((d2 < MIN_DISTANCE * MIN_DISTANCE).any()):
        k = int(torch.argmin(d2))
        d = d2.detach().sqrt()
        exc = NumericalError(
            f"atoms {int(edge_i[k])} and {int(edge_j[k])} are {float(d[k]):.3g} Å apart (coincident; the "
            f"model refuses distances below {MIN_DISTANCE} Å): remove duplicate atoms, or the "
            "simulation has collapsed - reduce the time step.")
        #: (atom, atom, distance Å) for an engine that can say more (OpenMM: unplaced virtual sites)
        exc.coincident = (int(edge_i[k]), int(edge_j[k]), float(d[k]))
        raise exc


def pair_key(a: str, b: str) -> str:
    """The name of a species pair, symbols in alphabetical order: ``pair_key("O", "H") == "H-O"``."""
    return "-".join(sorted((str(a), str(b))))


def pair_min_distances(batch: Batch, species_names: Sequence[str]) -> dict[str, float]:
    """Smallest distance (Å) of every species pair among the neighbour pairs of ``batch``.

    Returns ``{pair_key: distance}`` (e.g. ``{"Cu-Cu": 2.21}``); pairs of species that never come
    within the cutoff are absent. Used by :func:`lawful.forcefields.train` to record the training
    domain in the model file.
    """
    if batch.edge_i.shape[0] == 0:
        return {}
    from lawful.forcefields.potential import strained_geometry

    _, vec = strained_geometry(batch, batch.positions.detach(), None)
    d = torch.linalg.norm(vec, dim=1)
    n_s = len(species_names)
    si = batch.species.index_select(0, batch.edge_i)
    sj = batch.species.index_select(0, batch.edge_j)
    code = torch.minimum(si, sj) * n_s + torch.maximum(si, sj)
    out: dict[str, float] = {}
    for c in torch.unique(code).tolist():
        a, b = divmod(int(c), n_s)
        out[pair_key(species_names[a], species_names[b])] = float(d[code == c].min())
    return out


#: Candidate pairs (atom x image atom) one vectorised block of :func:`batched_pairs` examines;
#: a structure with more than this alone goes to the O(N) cell list instead.
BATCH_PAIR_BLOCK = 1_000_000


def batched_pairs(structures: Sequence[tuple], cutoff: float) -> list[tuple]:
    """Neighbour pairs of many independent structures in one vectorised search.

    structures: ``(positions (N,3), cell (3,3), pbc 3 bools)`` per structure, as
    :func:`structure_tensors` returns them (Å; a zero cell where non-periodic). Each structure's
    atoms are wrapped into its cell and joined by their periodic images that lie within the
    cutoff of the cell (none along non-periodic directions); then every atom of every structure
    meets every atom or image of its own structure in one block computation (blocks of at most
    :data:`BATCH_PAIR_BLOCK` candidates; a structure larger than a block alone uses the O(N)
    cell list, :func:`lawful.kernels.neighbors.neighbor_list`, where batching gains nothing).
    Returns ``(i, j, shifts)`` per structure with the contract of a separate ``neighbor_list``
    call: ``|pos[j] - pos[i] + shifts @ cell| < cutoff`` (the one filter,
    :func:`~lawful.kernels.neighbors.pairs_within_cutoff`), both directions, self-images.
    """
    from lawful.kernels.neighbors import _search_reach, _setup

    reach = _search_reach(cutoff)
    prepared = []   # (home wrapped (N,3), cloud (M,3), atom of each cloud point, image, wraps) or None
    for pos, cell, pbc3 in structures:
        st = _setup(pos, cutoff, cell if any(pbc3) else None, pbc3)
        n = pos.shape[0]
        device = st.frac.device
        rng = [torch.arange(-m, m + 1, device=device, dtype=torch.float64) for m in st.layers]
        grid = torch.meshgrid(rng[0], rng[1], rng[2], indexing="ij")
        img = torch.stack([g.reshape(-1) for g in grid], dim=1)                      # (S,3)
        img = img[torch.argsort((img != 0).any(dim=1).to(torch.int8), stable=True)]  # zero image first
        frac = st.frac.unsqueeze(0) + img.unsqueeze(1)                                # (S,N,3)
        keep = torch.ones(frac.shape[:2], dtype=torch.bool, device=device)
        for k in range(3):
            if st.pbc[k]:
                margin = reach / st.heights[k]
                keep &= (frac[..., k] > -margin) & (frac[..., k] < 1.0 + margin)
        keep[0] = True                                     # the atoms themselves: cloud[:n] is home
        s_idx, a_idx = torch.nonzero(keep, as_tuple=True)
        cloud = frac[s_idx, a_idx] @ st.full
        if n * cloud.shape[0] > BATCH_PAIR_BLOCK:
            prepared.append(None)
        else:
            prepared.append((cloud[:n], cloud, a_idx, img[s_idx], st.wraps))
    found: list = [None] * len(structures)
    block: list[int] = []
    size = 0
    for s, p in enumerate(prepared + [None]):
        cost = 0 if p is None else p[0].shape[0] * p[1].shape[0]
        if block and (p is None or size + cost > BATCH_PAIR_BLOCK):
            for k, r in zip(block, _block_search(block, prepared, reach)):
                found[k] = r
            block, size = [], 0
        if p is not None:
            block.append(s)
            size += cost
    out = []
    for s, (pos, cell, pbc3) in enumerate(structures):
        if found[s] is None:                                # a large structure: the cell list
            i, j, sh = _pairs(pos, cell, pbc3, cutoff)
            out.append((i, j, sh))
            continue
        a_i, c_j = found[s]
        _, _, atoms, images, wraps = prepared[s]
        a_j = atoms.index_select(0, c_j)
        sh = (images.index_select(0, c_j) + wraps.index_select(0, a_i) - wraps.index_select(0, a_j)).to(pos.dtype)
        vec = pos.index_select(0, a_j) - pos.index_select(0, a_i) + sh @ cell
        i, j, sh, _ = pairs_within_cutoff(a_i, a_j, sh, vec, cutoff)
        out.append((i, j, sh))
    return out


def _block_search(block: list[int], prepared: list, reach: float) -> list[tuple]:
    """All (home atom, cloud point) pairs closer than ``reach`` in the structures ``block``, in
    one vectorised pass; returns ``(atom i, cloud index j)`` per structure."""
    homes = [prepared[s][0] for s in block]
    clouds = [prepared[s][1] for s in block]
    device = homes[0].device
    n = torch.tensor([h.shape[0] for h in homes], device=device)
    m = torch.tensor([c.shape[0] for c in clouds], device=device)
    home_all, cloud_all = torch.cat(homes), torch.cat(clouds)
    home_start, cloud_start = n.cumsum(0) - n, m.cumsum(0) - m
    per = n * m
    owner = torch.repeat_interleave(torch.arange(len(block), device=device), per)
    local = torch.arange(int(per.sum()), device=device) - (per.cumsum(0) - per).index_select(0, owner)
    mo = m.index_select(0, owner)
    i = torch.div(local, mo, rounding_mode="floor")
    c = local - i * mo
    hi = home_all.index_select(0, i + home_start.index_select(0, owner))
    cj = cloud_all.index_select(0, c + cloud_start.index_select(0, owner))
    d = cj - hi
    d2 = d[:, 0] * d[:, 0]
    d2.addcmul_(d[:, 1], d[:, 1])
    d2.addcmul_(d[:, 2], d[:, 2])
    hit = torch.nonzero((d2 < reach * reach) & (c != i)).reshape(-1)   # c == i: the atom itself
    owner, i, c = owner.index_select(0, hit), i.index_select(0, hit), c.index_select(0, hit)
    counts = torch.bincount(owner, minlength=len(block)).tolist()
    out, e0 = [], 0
    for cnt in counts:
        out.append((i[e0:e0 + cnt], c[e0:e0 + cnt]))
        e0 += cnt
    return out


#: The plain (non-ASE) forms of one structure that :func:`make_batch` and :func:`evaluate_batch` accept.
STRUCTURE_FORMS = ("ase.Atoms", "a dict with 'positions' (N,3) Å, 'numbers' (N,) and, for a periodic "
                   "structure, 'cell' (3,3) Å and 'pbc'", "a tuple (positions, numbers)",
                   "a tuple (positions, numbers, cell, pbc)")


def _no_cell(cell) -> bool:
    return cell is None or not bool(np.any(np.asarray(cell.detach().cpu() if isinstance(cell, torch.Tensor) else cell,
                                                      dtype=np.float64) != 0))


def structure_args(s, k: int = 0) -> tuple:
    """One structure as ``(positions, numbers, cell, pbc)`` (or the ``ase.Atoms`` itself).

    Accepted forms (:data:`STRUCTURE_FORMS`): ``ase.Atoms`` (its cell counts only along periodic
    axes, so a molecule with a box and ``pbc=False`` stays a molecule); a dict with ``positions``,
    ``numbers`` and optionally ``cell`` and ``pbc``; a tuple ``(positions, numbers)`` (an isolated
    molecule) or ``(positions, numbers, cell, pbc)``. A dict that gives a non-zero ``cell`` but no
    ``pbc``, or a 3-tuple ``(positions, numbers, cell)``, is refused (InputError): the box could be a
    crystal's or just a molecule's, and was silently read as an isolated cluster (no stress)."""
    if hasattr(s, "get_positions") and hasattr(s, "numbers"):
        return s
    forms = "; ".join(STRUCTURE_FORMS)
    if isinstance(s, dict):
        if "positions" not in s or "numbers" not in s:
            raise InputError(f"structure {k} is a dict with keys {sorted(s)}: give 'positions' (N,3) Å and "
                             "'numbers' (N,), optionally 'cell' (3,3) Å and 'pbc'.")
        if "pbc" not in s and not _no_cell(s.get("cell")):
            raise InputError(f"structure {k} is a dict with a 'cell' but no 'pbc': add 'pbc': True for a crystal "
                             "(or e.g. (True, True, False) for a slab), 'pbc': False for a molecule in a box, or "
                             "drop the cell.")
        return (s["positions"], s["numbers"], s.get("cell"), s.get("pbc", False))
    if isinstance(s, (tuple, list)):
        if len(s) == 2:
            return (s[0], s[1], None, False)
        if len(s) == 4:
            return tuple(s)
        if len(s) == 3:
            raise InputError(f"structure {k} is a 3-tuple (positions, numbers, cell) without pbc: the cell could be "
                             "a crystal's or a molecule's box; pass (positions, numbers, cell, pbc) with pbc True "
                             "(periodic) or False, or (positions, numbers) for a molecule.")
        raise ShapeError(f"structure {k} is a {type(s).__name__} of {len(s)} items; pass one of: {forms}.")
    raise InputError(f"structure {k} is a {type(s).__name__}; pass one of: {forms}.")


def make_batch(structures: Sequence, z_to_index: torch.Tensor, species_names: Sequence[str], cutoff: float,
               dtype: torch.dtype, device: torch.device, pairs: Sequence | None = None) -> Batch:
    """Batch structures given in any form of :func:`structure_args` (``ase.Atoms``, dicts,
    ``(positions, numbers)`` or ``(positions, numbers, cell, pbc)`` tuples).

    ``pairs``: optional precomputed ``(i, j, shifts)`` per structure (e.g. from a Verlet list built
    with a skin: pairs beyond the cutoff are dropped here, as they would contribute exactly zero),
    or ``(i, j, shifts, d2)`` for pairs already cut to the cutoff with their squared distances
    (Å², e.g. :func:`lawful.kernels.neighbors.pairs_within_cutoff`'s): then only the coincident-atom
    check is made on ``d2``. Without pairs, two or more structures get their pairs from one
    neighbour-list build (:func:`batched_pairs`).
    """
    checked = []
    for k, s in enumerate(structures):
        args = structure_args(s, k)
        if not isinstance(args, tuple):       # ase.Atoms: the cell of a periodic structure only
            cell = np.asarray(s.cell[:], dtype=np.float64) if any(s.pbc) else None
            args = (s.get_positions(), s.numbers, cell, s.pbc)
        try:
            checked.append(structure_tensors(*args, z_to_index, species_names, dtype, device))
        except LawfulError as exc:
            raise _in_structure(exc, k, len(structures)) from None
    if not checked:
        raise InputError("no structures given: pass at least one structure.")
    if pairs is None and len(checked) > 1:
        found = batched_pairs([(pos, c, pbc3) for pos, _, _, c, pbc3 in checked], cutoff)
    else:
        found = None
    parts = []
    for k, (pos, num, species, c, pbc3) in enumerate(checked):
        try:
            parts.append(_structure_part(pos, num, species, c, pbc3, None if pairs is None else pairs[k],
                                         None if found is None else found[k], cutoff, dtype, device))
        except LawfulError as exc:
            raise _in_structure(exc, k, len(checked)) from None
    return parts[0] if len(parts) == 1 else Batch.concatenate(parts)


def _in_structure(exc, k: int, n: int):
    """``exc`` naming structure ``k`` of ``n`` (its atom indices are that structure's own), when
    there are several; the same type and attributes."""
    if n <= 1:
        return exc
    named = type(exc).__new__(type(exc))      # no __init__: some errors take other arguments
    named.__dict__.update(exc.__dict__)
    named.args = (f"structure {k} (of {n}; atom indices within it): {exc}",)
    return named


def _structure_part(pos, num, species, c, pbc3, given, found, cutoff, dtype, device) -> Batch:
    """One structure's :class:`Batch` with its pairs: ``given`` (the caller's ``(i, j, shifts)``
    or ``(i, j, shifts, d2)``), else ``found`` (from :func:`batched_pairs`), else its own search;
    coincident atoms refused."""
    if given is not None and len(given) == 4:       # already cut, with squared distances
        i, j, sh, d2 = (torch.as_tensor(p, device=device) for p in given)
        sh = sh.to(dtype)
        check_squared_distances(d2, i, j)
    else:
        if given is not None:
            i, j, sh = (torch.as_tensor(p, device=device) for p in given)
            sh = sh.to(dtype)
        elif found is not None:
            i, j, sh = found
        else:
            i, j, sh = _pairs(pos, c, pbc3, cutoff)
        vec = pos[j] - pos[i] + sh @ c
        check_distances(vec, i, j)
        if given is not None:
            # pairs from a list built with a skin: drop those beyond the cutoff (they would
            # contribute exactly zero) so the model does only the work of a fresh list.
            i, j, sh, _ = pairs_within_cutoff(i, j, sh, vec, cutoff)
    n = pos.shape[0]
    return Batch(
        positions=pos, species=species, numbers=num,
        batch=torch.zeros(n, dtype=torch.long, device=device),
        cell=c.unsqueeze(0), pbc=torch.tensor([pbc3], dtype=torch.bool, device=device),
        edge_i=i.to(device), edge_j=j.to(device), shifts=sh,
        edge_batch=torch.zeros(i.shape[0], dtype=torch.long, device=device),
        n_atoms=torch.tensor([n], dtype=torch.long, device=device))


def evaluate_batch(model, structures: Sequence, stress: bool = True, chunk_atoms: int | None = 1000) -> list[dict]:
    """Energy, forces (and stress) of many independent structures, batched.

    model: a :class:`~lawful.forcefields.NeuralPotential` or
    :class:`~lawful.forcefields.DirectForceModel`; structures: ``ase.Atoms``, dicts with
    ``positions`` (N,3) Å, ``numbers`` (N,), optional ``cell`` (3,3) Å rows and ``pbc`` (a dict with a
    cell needs ``pbc``: True, e.g. (True, True, False), or False), ``(positions, numbers)`` tuples
    (isolated) or ``(positions, numbers, cell, pbc)`` tuples, of any sizes, cells and periodicities
    (:func:`structure_args`; other forms raise InputError/ShapeError naming the accepted ones). Consecutive
    structures are gathered into chunks of up to ``chunk_atoms`` atoms (None: everything in one
    chunk; a larger structure forms a chunk of its own); each chunk is one neighbour search for
    all its structures (:func:`batched_pairs`) and one forward and backward pass of the model.
    Chunks of about a thousand atoms run fastest on a CPU (11 000 atoms of ``bench_batch.py``'s
    mix: 0.90 s CPU in chunks of 1000, 1.43 s in one call); on a GPU pass a larger value.
    For screening many structures without an ASE calculator.

    Returns one dict per structure, as :meth:`AtomisticModel.evaluate` gives for one:
    ``{"energy": 0-d tensor eV, "forces": (N,3) eV/Å, "energies": (N,) eV}`` plus ``"stress"``
    (3,3) eV/Å^3 (ASE sign) for fully periodic structures when ``stress``; detached, in the
    model's dtype and on its device.
    """
    structures = [structure_args(s, k) for k, s in enumerate(structures)]
    if not structures:
        raise InputError("evaluate_batch got no structures: pass a list of ase.Atoms or dicts.")
    if chunk_atoms is not None and (isinstance(chunk_atoms, bool) or not isinstance(chunk_atoms, int)
                                    or chunk_atoms < 1):
        raise InputError(f"chunk_atoms={chunk_atoms!r} must be a positive number of atoms or None (one chunk).")
    chunks: list[list] = [[]]
    size = 0
    for s in structures:
        n = len(s[0]) if isinstance(s, tuple) else len(s)
        if chunks[-1] and chunk_atoms is not None and size + n > chunk_atoms:
            chunks.append([])
            size = 0
        chunks[-1].append(s)
        size += n
    res: list[dict] = []
    for chunk in chunks:
        res.extend(_evaluate_chunk(model, chunk, stress, len(res)))
    return res


def _evaluate_chunk(model, structures: list, stress: bool, first: int) -> list[dict]:
    from lawful.forcefields.domain import warn_outside

    batch = model.make_batch(structures)
    warn_outside(model, batch, first, stacklevel=4)     # the engines' domain checks, per call
    periodic = batch.pbc.all(dim=1)
    want_stress = bool(stress) and bool(periodic.any())
    # stress of the periodic structures only: the others have no volume and are dropped
    out = model._evaluate_autograd(batch, True, want_stress, False)
    n = batch.n_atoms.tolist()
    res, a0 = [], 0
    for s in range(batch.n_structures):
        a1 = a0 + n[s]
        r = {"energy": out["energy"][s].detach(), "forces": out["forces"][a0:a1].detach(),
             "energies": out["energies"][a0:a1].detach()}
        if want_stress and bool(periodic[s]):
            r["stress"] = out["stress"][s].detach()
        for key, v in r.items():
            if not bool(torch.isfinite(v).all()):
                raise NumericalError(f"the model returned non-finite {key} (NaN/inf) for structure {first + s}: "
                                     "its weights or normalisation are corrupt (check the model file / the "
                                     "training run).")
        res.append(r)
        a0 = a1
    return res
