"""The training domain of a force field: how close each pair of species came in its training data.

A trained model records ``pair_min_distance`` (``{"H-O": 0.93, ...}``, Å; see
:func:`lawful.forcefields.batch.pair_min_distances`). A structure with a pair closer than
:data:`DOMAIN_TOLERANCE` times that record is outside what the model has seen, and its forces
are extrapolation. It also records the span of its training compositions
(``training_compositions``, :func:`composition_record`): a structure whose composition lies
outside it (methane for a model trained on alanine dipeptide, ethanol and water) has an
absolute energy the data did not determine (:func:`composition_outside`); and the range of
neighbour counts within the cutoff per species (``neighbour_counts``,
:func:`neighbour_count_record`): an atom with far fewer or more neighbours than any training atom
(an isolated atom, a lattice typed in bohr, a dimer) is in an environment the model never saw.
Every place that evaluates models makes the three checks with the functions here: the engine
runner (ASE, OpenMM's python backend: ``lawful.integrations.runner``), the TorchScript export that
openmm-torch runs (:class:`lawful.forcefields.TorchScriptPotential`) and ``model.evaluate`` /
``evaluate_batch`` (:func:`batch_outside`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

__all__ = ["DOMAIN_TOLERANCE", "REREPORT_VOLUME_CHANGE", "report_covers", "domain_limits", "COMPOSITION_TOLERANCE", "COMPOSITION_BASIS_ATOL", "composition_record",
           "composition_outside", "NEIGHBOUR_MARGIN", "neighbour_count_record", "neighbour_count_bounds",
           "neighbour_weights", "neighbour_density_record", "neighbour_record", "neighbour_bounds", "neighbour_text",
           "batch_neighbour_weights",
           "pairs_below", "composition_residual", "counts_outside", "unit_mistakes", "batch_outside", "warn_outside",
           "unit_mistake_error",
           "structure_charge", "charge_record", "charge_outside"]

#: Default fraction of the training minimum distance below which a pair is out of domain.
DOMAIN_TOLERANCE = 0.9

#: An out-of-domain kind already reported is reported again for a periodic structure whose volume
#: per atom differs from the reported one's by more than this fraction (an EOS scan, a barostat):
#: the rule of the engine runner (:mod:`lawful.integrations.runner`) and of the TorchScript module.
REREPORT_VOLUME_CHANGE = 0.02


def report_covers(volume: float, was: float, change: float = REREPORT_VOLUME_CHANGE) -> bool:
    """Whether a report made in a structure of ``was`` Å³ per atom covers one of ``volume`` (0: not
    periodic in all three directions): always for a structure that is not, else while the volume
    per atom is within the fraction ``change`` of the reported one's. TorchScript-compatible: the
    engine runner and the TorchScript module share it."""
    if volume == 0.0 or was == 0.0:
        return True
    return abs(volume / was - 1.0) <= change


def domain_limits(record: dict | None, species: Sequence[str], tolerance: float, dtype: torch.dtype,
                  device=None) -> torch.Tensor | None:
    """(S, S) squared out-of-domain limits (Å²) indexed by species index: ``(tolerance * d_min)²``
    of each species pair in ``record`` (``pair_min_distance``; 0 for pairs without a record, which
    are then never out of domain); None when the record is empty or missing."""
    if not record:
        return None
    from lawful.forcefields.batch import pair_key

    n = len(species)
    table = torch.zeros((n, n), dtype=dtype, device=device)
    for a in range(n):
        for b in range(n):
            d = record.get(pair_key(species[a], species[b]))
            if d is not None:
                table[a, b] = (tolerance * float(d)) ** 2
    return table


def pairs_below(table: torch.Tensor, species: torch.Tensor, edge_i: torch.Tensor, edge_j: torch.Tensor,
                d2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """The pair check every evaluation path makes (the engine runner, :func:`batch_outside`, the
    TorchScript export): ``(limit (E,), below (E,) bool, k)`` for pairs ``edge_i -> edge_j`` of
    species indices ``species`` with squared distances ``d2`` (Å²) against the (S, S) squared
    limits ``table`` (:func:`domain_limits`); ``k`` is the pair furthest inside its limit (smallest
    d2 / limit), -1 when none is below. TorchScript compatible."""
    n = table.shape[0]
    limit = table.reshape(-1).index_select(0, species.index_select(0, edge_i) * n + species.index_select(0, edge_j))
    below = d2 < limit
    if not bool(below.any()):
        return limit, below, -1
    return limit, below, int(torch.argmin(torch.where(below, d2 / limit, torch.ones_like(d2))))


# ------------------------------------------------------------------------------------------------
# compositions: which structures' absolute energies the per-species reference energies determine

#: A composition whose component outside the span of the training compositions is larger than
#: this fraction of its length is outside the training domain (exact arithmetic gives 0 inside;
#: the saved bases are orthonormal to round-off, ~1e-15, :data:`COMPOSITION_BASIS_ATOL`). One atom
#: too many gives at least ~0.1 / (the number of atoms), so it is caught up to ~1e9 atoms (at
#: 1e-6, it was missed beyond ~5e5 atoms of water).
COMPOSITION_TOLERANCE = 1e-10
#: How far from orthonormal (max |B B^T - I|) a saved composition basis may be: lawful writes the
#: SVD's rows, orthonormal to ~1e-15; a basis further off would flag compositions inside its span.
COMPOSITION_BASIS_ATOL = 1e-12
#: Formulas kept in a model's record to name the training compositions in messages.
_FORMULAS_KEPT = 8


#: A closest pair at 1/20 to 1/5 of its species pair's training minimum: lengths in nm read as Å
#: (a factor 10 short) is the likely mistake, and the close-pair message says so.
NM_FOR_ANGSTROM_RATIO = (0.05, 0.2)


def close_pair_hint(distance: float, training_min: float) -> str:
    """The close-pair message's tail when ``distance`` (Å) is 1/20 to 1/5 of ``training_min``: a
    structure in nm given as Å puts every bonded pair near 1/10 of the distances the model knows;
    else empty."""
    ratio = distance / training_min if training_min > 0 else 1.0
    lo, hi = NM_FOR_ANGSTROM_RATIO
    if lo <= ratio <= hi:
        return (f" At {ratio:.2g}x the training minimum: are the positions in nm, not Å? (multiply them by 10; "
                "a unit mistake gives every bonded pair this ratio)")
    return ""


def close_pair_reason(key: str, distance: float, training_min: float, cutoff: float,
                      tolerance: float = DOMAIN_TOLERANCE) -> str:
    """What follows "atoms a and b (key) are d Å apart" in a close-pair message: below ``tolerance``
    x the pair's training minimum ``training_min`` (Å), or, for a pair recorded at the ``cutoff``
    (none came within it in the training frames: training's ``_with_unseen_pairs``), that no such
    pair was seen; with :func:`close_pair_hint`'s unit hint where it applies. The one wording the
    batch check and the engine runner use."""
    if training_min >= cutoff:
        return f", but no {key} pair came within the {cutoff:g} Å cutoff in the model's training data"
    return (f", below {tolerance:g} x the smallest {key} distance in the model's training data "
            f"({training_min:.4g} Å){close_pair_hint(distance, training_min)}")


def _counts(numbers, species: Sequence[str]) -> list[int]:
    import numpy as np
    from ase.data import atomic_numbers

    z = np.asarray(numbers, dtype=np.int64).reshape(-1)
    return [int(np.count_nonzero(z == atomic_numbers[s])) for s in species]


def _formula(numbers) -> str:
    from ase.formula import Formula
    from ase.data import chemical_symbols

    return Formula("".join(chemical_symbols[int(v)] for v in numbers)).format("hill")


def composition_record(structures_numbers, species: Sequence[str], old: dict | None = None) -> dict:
    """The compositions a model was trained on, as saved with it (``model.training_compositions``).

    ``structures_numbers``: the atomic numbers of each training structure; ``species``: the
    model's species. Returns ``{"basis": r x S orthonormal rows spanning the training
    compositions (per-species atom counts), "formulas": up to a few of them (Hill notation)}``,
    merged with an ``old`` record (training continued on new data keeps both spans). The energy
    E = sum_i e0(Z_i) + learned terms fixes the per-species reference energies e0 only along that
    span: a structure whose composition lies outside it has an absolute energy, and an energy
    difference to any other composition, that the data did not determine."""
    import numpy as np

    rows, formulas = [], []
    seen = set()
    for numbers in structures_numbers:
        c = tuple(_counts(numbers, species))
        if c not in seen:
            seen.add(c)
            rows.append(c)
            if len(formulas) < _FORMULAS_KEPT:
                formulas.append(_formula(numbers))
    if old:
        rows += [tuple(r) for r in old.get("basis", [])]
        formulas = list(dict.fromkeys(list(old.get("formulas", [])) + formulas))[:_FORMULAS_KEPT]
    if not rows:
        return {}
    m = np.asarray(rows, dtype=np.float64)
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    rank = int((s > 1e-9 * s[0]).sum()) if s.size and s[0] > 0 else 0
    return {"basis": vt[:rank].tolist(), "formulas": formulas}


def composition_residual(basis: torch.Tensor, counts: torch.Tensor) -> float:
    """The length of the part of ``counts`` ((S,) atoms per species, float64) outside the row span
    of ``basis`` ((r, S) orthonormal rows of :func:`composition_record`), relative to its length
    (0 for no atoms): the composition check of :func:`composition_outside` and of the TorchScript
    export, which compare it with :data:`COMPOSITION_TOLERANCE`. TorchScript compatible."""
    norm = torch.sqrt((counts * counts).sum())
    if float(norm) == 0.0:
        return 0.0
    r = counts - basis.t().matmul(basis.matmul(counts))
    return float(torch.sqrt((r * r).sum()) / norm)


def composition_outside(record: dict | None, species: Sequence[str], numbers) -> str | None:
    """None when ``numbers``' composition lies in the span of the training compositions of
    ``record`` (:func:`composition_record`; an empty record checks nothing), else the message
    saying why its absolute energy is not determined by the model."""
    if not record or not record.get("basis"):
        return None
    c = torch.tensor(_counts(numbers, species), dtype=torch.float64)
    if composition_residual(torch.tensor(record["basis"], dtype=torch.float64), c) <= COMPOSITION_TOLERANCE:
        return None
    seen = ", ".join(record.get("formulas", [])) or "?"
    return (f"the composition {_formula(numbers)} is not a combination of the compositions the model was "
            f"trained on ({seen}; {len(record['basis'])} independent for {len(species)} species): the "
            "per-species reference energies are not determined for it, so its absolute energy, and any "
            "energy difference to another composition, is arbitrary (eV per atom off is possible), and it may "
            "hold chemistry the model has not seen (its forces too are then extrapolation); use a model "
            "trained on this composition, or train on data that include it.")


# ------------------------------------------------------------------------------------------------
# neighbour counts: how crowded each species' environments were in training

#: Relative slack on the training range of neighbour counts (at least one neighbour below it):
#: held-out frames of the copper data reach 21 against a training minimum of 23.
NEIGHBOUR_MARGIN = 0.15

#: A neighbour density (or count) above this many times its species' training maximum is refused
#: as a unit mistake (a length in nm for Å), not reported as an extrapolation: 10x the density is
#: a lattice at under half its length, beyond any physical compression. The engines' runner and
#: the TorchScript module (openmm-torch) both refuse it, strict or not.
UNIT_MISTAKE_DENSITY = 10.0


def _species_ranges(species_values, species: Sequence[str], old: dict | None, cast) -> dict:
    """``{symbol: [lowest, highest]}`` of per-atom values (``cast`` to int or float) per species,
    from (species index (N,), value (N,)) pairs, merged with an ``old`` record (the wider range)."""
    import numpy as np

    out = {k: [cast(v[0]), cast(v[1])] for k, v in (old or {}).items()}
    for sp, values in species_values:
        sp = np.asarray(sp)
        values = np.asarray(values)
        for s in np.unique(sp):
            c = values[sp == s]
            name = species[int(s)]
            lo, hi = cast(c.min()), cast(c.max())
            if name in out:
                lo, hi = min(lo, out[name][0]), max(hi, out[name][1])
            out[name] = [lo, hi]
    return out


def neighbour_count_record(species_counts, species: Sequence[str], old: dict | None = None) -> dict:
    """``{symbol: [fewest, most]}`` neighbours within the cutoff per atom of each species, from
    ``species_counts``: pairs of (species index (N,), neighbour count (N,)) arrays of training
    structures; merged with an ``old`` record (the wider range)."""
    return _species_ranges(species_counts, species, old, int)


def neighbour_weights(d2: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Each pair's weight in the neighbour density: ``(1 - r^2/r_c^2)^3`` for squared distances
    ``d2`` (Å²) below ``cutoff`` (Å), else 0: the descriptor's own radial envelope
    (:func:`lawful.forcefields.descriptors.cutoff_envelope`, power 3). TorchScript compatible."""
    return torch.clamp(1.0 - d2 / (cutoff * cutoff), min=0.0) ** 3


def neighbour_density_record(species_values, species: Sequence[str], old: dict | None = None) -> dict:
    """``{symbol: [lowest, highest]}`` neighbour density (:func:`neighbour_weights` summed over each
    atom's pairs) per species, from ``species_values``: pairs of (species index (N,), density (N,))
    arrays of training structures; merged with an ``old`` record (the wider range).

    The density, not the count within the cutoff, is what a model's descriptor sees: a uniform
    2.5 % expansion of fcc copper moves 24 third-shell atoms out of a 4.5 Å cutoff at once (the count
    drops from 42 to 18) while their envelope weight is 4e-5 each, and the model does not notice;
    the density moves by 7 %. A surface atom's density drops by a quarter (9 of 12 first neighbours)."""
    return _species_ranges(species_values, species, old, float)


def neighbour_record(model) -> tuple[dict, bool] | None:
    """``(record, weighted)``: the model's ``neighbour_density`` record (``weighted`` True) or, for
    files written before it, its ``neighbour_counts`` (False); None without either. The one choice
    every neighbour check makes."""
    density = getattr(model, "neighbour_density", None)
    if density:
        return density, True
    counts = getattr(model, "neighbour_counts", None)
    return (counts, False) if counts else None


def neighbour_bounds(model, species: Sequence[str], dtype=None, device=None):
    """``(low, high, weighted)``: the (S,) bounds of :func:`neighbour_record`'s record
    (:func:`neighbour_count_bounds`; a density has no absolute slack), ``weighted`` as there;
    None without a record."""
    found = neighbour_record(model)
    if found is None:
        return None
    record, weighted = found
    lo, hi = neighbour_count_bounds(record, species, dtype, device, slack=0.0 if weighted else 1.0)
    return lo, hi, weighted


def neighbour_count_bounds(record: dict | None, species: Sequence[str], dtype=None, device=None,
                           slack: float = 1.0):
    """(low, high) (S,) tensors: the neighbour counts (or densities) of each species index inside
    the domain: the training range widened by :data:`NEIGHBOUR_MARGIN` and by at least ``slack``
    (one neighbour for counts); -inf/inf without a record for that species; None without a record."""
    if not record:
        return None
    lo = torch.full((len(species),), -float("inf"), dtype=dtype or torch.float64, device=device)
    hi = torch.full((len(species),), float("inf"), dtype=dtype or torch.float64, device=device)
    for k, s in enumerate(species):
        if s in record:
            a, b = record[s]
            lo[k] = min(a * (1.0 - NEIGHBOUR_MARGIN), a - slack)
            hi[k] = max(b * (1.0 + NEIGHBOUR_MARGIN), b + slack)
    return lo, hi


def batch_neighbour_weights(batch, cutoff: float) -> torch.Tensor:
    """(E,) :func:`neighbour_weights` of a :class:`~lawful.forcefields.batch.Batch`'s pairs (float64,
    no autograd): the density terms of training's record and of :func:`batch_outside`."""
    from lawful.forcefields.potential import strained_geometry

    with torch.no_grad():
        _, vectors = strained_geometry(batch, batch.positions, None)
        return neighbour_weights((vectors * vectors).sum(1).to(torch.float64), float(cutoff))


def counts_outside(bounds: Tuple[torch.Tensor, torch.Tensor], species: torch.Tensor, edge_i: torch.Tensor,
                   n_atoms: int, weights: Optional[torch.Tensor] = None):
    """The neighbour check of the runner, :func:`batch_outside` and the TorchScript export:
    ``(counts, low, high, outside)`` (N,) for atoms of species indices ``species`` whose pairs
    start at ``edge_i``, against ``(low, high)`` per species (:func:`neighbour_bounds`).
    ``weights`` (E,): the pairs' :func:`neighbour_weights` (the density); None: each pair counts
    one (the count of older records). TorchScript compatible."""
    lo, hi = bounds
    if weights is None:
        counts = torch.bincount(edge_i, minlength=n_atoms).to(lo.dtype)
    else:
        counts = torch.zeros(n_atoms, dtype=lo.dtype, device=lo.device).index_add_(0, edge_i, weights.to(lo.dtype))
    low, high = lo.index_select(0, species), hi.index_select(0, species)
    return counts, low, high, (counts < low) | (counts > high)


def unit_mistakes(counts: torch.Tensor, high: torch.Tensor, factor: float) -> torch.Tensor:
    """(N,) bool: the atoms whose neighbour density (or count) ``counts`` (N,) is over ``factor``
    x the top of its own species' range ``high`` (N,) (:func:`counts_outside`), a unit mistake.
    A species whose training top is 0 (seen only as an isolated atom) gives no scale to call a
    density a unit mistake by: its atoms are never counted here, and one with neighbours is
    reported as outside its range instead (it was refused as "nm for Å" whenever another species'
    top was above 0). TorchScript compatible."""
    return (counts > factor * high) & (high > 0)


# ------------------------------------------------------------------------------------------------
# the same three checks on a batch (model.evaluate / evaluate_batch without an engine)

def batch_outside(model, batch) -> tuple[int, str] | None:
    """A structure of ``batch`` (a :class:`~lawful.forcefields.batch.Batch` of ``model``) outside
    the model's training domain, as ``(structure index, what)``, else None, checked in this order:
    a pair closer than :data:`DOMAIN_TOLERANCE` x its training minimum (the structure of the pair
    furthest inside its limit, :func:`pairs_below`), a composition outside the training span (the
    first such structure), an atom whose neighbour density lies outside its species' range (the
    first such atom's structure). The engine runner makes the same
    checks with engine indices and step numbers (``lawful.integrations.runner.ModelRunner``), and
    like it raises :class:`~lawful.kernels.errors.InputError` for a density over
    :data:`UNIT_MISTAKE_DENSITY` x the top of the range (a unit mistake)."""
    import math

    from lawful.forcefields.batch import pair_key

    species = list(model.species)
    n_atoms = batch.n_atoms.tolist()
    offsets = [0]
    for n in n_atoms[:-1]:
        offsets.append(offsets[-1] + n)
    with torch.no_grad():
        bounds = neighbour_bounds(model, species, torch.float64, batch.positions.device)
        counts = outside = None
        if bounds is not None:     # first: a unit mistake is refused, not reported (the engines' order)
            weights = batch_neighbour_weights(batch, model.cutoff) if bounds[2] else None
            counts, _, high, outside = counts_outside(bounds[:2], batch.species, batch.edge_i,
                                                      batch.positions.shape[0], weights)
            dense = unit_mistakes(counts, high, UNIT_MISTAKE_DENSITY)
            if bool(dense.any()):
                k = int(torch.nonzero(dense)[0])
                s = int(batch.batch[k])
                which = f"structure {s}: " if len(n_atoms) > 1 else ""
                raise unit_mistake_error(model, f"{which}atom {k - offsets[s]}", species[int(batch.species[k])],
                                         float(counts[k]), bounds[2])
        table = domain_limits(getattr(model, "pair_min_distance", None), species, DOMAIN_TOLERANCE,
                              batch.positions.dtype, batch.positions.device)
        if table is not None and batch.edge_i.shape[0] > 0:
            from lawful.forcefields.potential import strained_geometry

            _, vectors = strained_geometry(batch, batch.positions, None)
            d2 = (vectors * vectors).sum(1)
            _, _, k = pairs_below(table, batch.species, batch.edge_i, batch.edge_j, d2)
            if k >= 0:
                s = int(batch.edge_batch[k])
                a, b = sorted((int(batch.edge_i[k]) - offsets[s], int(batch.edge_j[k]) - offsets[s]))
                name_a = species[int(batch.species[batch.edge_i[k]])]
                name_b = species[int(batch.species[batch.edge_j[k]])]
                key = pair_key(name_a, name_b)
                dist, dmin = math.sqrt(float(d2[k])), float(model.pair_min_distance[key])
                return s, (f"atoms {a} and {b} ({key}) are {dist:.4g} Å apart"
                           + close_pair_reason(key, dist, dmin, float(model.cutoff)))
        record = getattr(model, "training_compositions", None)
        if record:
            for s, z in enumerate(batch.numbers.split(n_atoms)):
                message = composition_outside(record, species, z.tolist())
                if message is not None:
                    return s, message
        if bounds is not None:
            if bool(outside.any()):
                k = int(torch.nonzero(outside)[0])
                s = int(batch.batch[k])
                name = species[int(batch.species[k])]
                return s, f"atom {k - offsets[s]} ({name}) {neighbour_text(model, name, float(counts[k]), bounds[2])}"
    return None


def unit_mistake_error(model, atom: str, name: str, value: float, weighted: bool, where: str = "",
                       n_dense: int | None = None):
    """The :class:`~lawful.kernels.errors.InputError` for an atom (``atom``: how it is named,
    e.g. ``"atom 3"``; ``name``: its species) whose neighbour density ``value`` is over
    :data:`UNIT_MISTAKE_DENSITY` x the top of its training range: the words of the runner and of
    :func:`batch_outside` (``where``: the step and cell; ``n_dense``: how many atoms are that dense)."""
    from lawful.kernels.errors import InputError

    many = "" if n_dense is None else f" ({n_dense} atom(s))"
    return InputError(f"{atom} ({name}) {neighbour_text(model, name, value, weighted)}{where}: more than "
                      f"{UNIT_MISTAKE_DENSITY:g}x the top of that range{many}, far denser than anything physical, "
                      "most likely lengths in other units (nm for Å: a lattice of 0.361 for 3.61); give positions "
                      "and cell in Å.")


def neighbour_text(model, name: str, value: float, weighted: bool) -> str:
    """What an atom of species ``name`` with neighbour density (``weighted``) or count ``value``
    has against the model's training range: the words of every report of the neighbour check."""
    lo, hi = neighbour_record(model)[0][name]
    if weighted:
        return (f"has a neighbour density of {value:.3g} (the sum of (1 - r²/r_c²)³ over its neighbours within "
                f"the {model.cutoff:g} Å cutoff), outside the {lo:.3g}-{hi:.3g} its species had in the model's "
                "training data")
    return (f"has {int(value)} neighbours within the {model.cutoff:g} Å cutoff, outside the {lo}-{hi} its "
            "species had in the model's training data")


def warn_outside(model, batch, first: int | None = None, stacklevel: int = 3) -> None:
    """An :class:`~lawful.kernels.errors.OutOfDomainWarning` naming :func:`batch_outside`'s
    finding (``first``: the index of the batch's first structure in the caller's list; None: a
    single structure)."""
    found = batch_outside(model, batch)
    if found is None:
        return
    import warnings

    from lawful.kernels.errors import OutOfDomainWarning

    s, what = found
    where = "" if first is None else f"structure {first + s}: "
    warnings.warn(f"{where}{what}: the model is extrapolating there and its energy and forces are not to be "
                  "trusted (the engines report this per run, and stop with strict=True).", OutOfDomainWarning,
                  stacklevel=stacklevel)


# ------------------------------------------------------------------------------------------------
# total charge: the models have no charge input, so a charge they were not trained on is unseen

def structure_charge(atoms) -> int:
    """The total charge (e) a structure states: ``atoms.info["charge"]``, else the sum of its
    initial charges (rounded), else 0: the conventions lawful data reads (extxyz ``charge=``,
    per-atom charges)."""
    import numpy as np

    if "charge" in atoms.info:
        return int(round(float(atoms.info["charge"])))
    if "initial_charges" in atoms.arrays:
        return int(round(float(np.sum(atoms.arrays["initial_charges"]))))
    return 0


def charge_record(charges, old=None) -> list[int]:
    """The total charges of the training structures, as saved with a model
    (``model.training_charges``, sorted), merged with an ``old`` record."""
    return sorted({int(c) for c in charges} | {int(c) for c in (old or [])})


def charge_outside(record, charge: int) -> str | None:
    """None when a structure of total charge ``charge`` (e) is one the model was trained on
    (``record``: ``model.training_charges``; a model without a record counts as trained on
    neutral structures only), else the message saying why its energy is not the charged one."""
    seen = list(record) if record else [0]
    if int(charge) in seen:
        return None
    said = ("" if record else " (its file records no training charge: taken as neutral)")
    return (f"the structure states a total charge of {int(charge):+d} e, but the model was trained on structures of "
            f"charge {', '.join(f'{c:+d}' if c else '0' for c in seen)}{said} and has no charge input: it evaluates the atoms as "
            "if they had the training charge, so the energy and forces are not those of the charged system "
            "(an ethanol cation through organic-xtb: 14.7 eV off GFN2-xTB); use a model trained on this "
            "charge, or clear atoms.info['charge'] / the initial charges if the structure is in fact neutral.")
