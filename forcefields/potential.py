"""NeuralPotential: an energy-conserving neural force field.

The model learns one smooth scalar, the energy

    E(R, Z, cell) = sum_i [ e0(Z_i) + s * MLP_{Z_i}( (D_i - mu) / sigma ) ],

where ``D_i`` are the three-body moment-tensor invariants of atom i's neighbourhood
(:class:`~lawful.forcefields.descriptors.MomentDescriptor`; its docstring justifies the choice),
``e0`` per-species reference energies, ``mu``/``sigma`` feature statistics and ``s`` an energy
scale, all fixed from the training data. Forces ``-dE/dR`` and stress ``(1/V) dE/d(strain)`` come
from ONE backward pass through the same graph: positions and lattice are both deformed by a
strain ``eps`` (r -> r (1 + eps), cell -> cell (1 + eps)) and the gradient is taken with respect to
positions and ``eps`` together. ``create_graph`` is only used in training.

Because the descriptor's radial functions carry the envelope (1 - (r/r_c)^2)^3, energy, forces
and the first derivative of forces vanish as a neighbour reaches the cutoff, which is what
keeps energy conserved in molecular dynamics.

Optional short-range prior (``repulsion="zbl"``, default off): the Ziegler-Biersack-Littmark
universal screened nuclear repulsion of every pair, switched off smoothly inside the cutoff (see
:class:`ZBLRepulsion`), is added to the per-atom energies in ``forward``, so it enters the
autograd forces and stress, training, and the TorchScript export like the learned part.

``forward`` (per-atom energies from positions, species indices and pair list) is TorchScript
compatible; :func:`export_torchscript` returns a scripted module computing energy and forces
(autograd inside the script) from positions and cell, for openmm-torch.
"""

from __future__ import annotations

import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from ase import units as _ase_units

from lawful.kernels.neighbors import neighbor_list
from lawful.kernels.units import CODATA_VERSION

from lawful.forcefields.base import AtomisticModel, SpeciesMLP
from lawful.forcefields.batch import Batch
from lawful.forcefields.descriptors import InteractionBlock, MomentDescriptor, PairLayout
from lawful.forcefields.domain import (COMPOSITION_TOLERANCE, DOMAIN_TOLERANCE, REREPORT_VOLUME_CHANGE,
                                      UNIT_MISTAKE_DENSITY, composition_residual, report_covers,
                                      counts_outside, domain_limits, neighbour_bounds, neighbour_record,
                                      neighbour_weights, pairs_below, unit_mistakes)

__all__ = ["NeuralPotential", "TorchScriptPotential", "export_torchscript", "strained_geometry", "ZBLRepulsion",
           "zbl_energy", "REPULSION_SWITCH"]

#: Default switch of the repulsion prior: fully on below 0.5, off above 0.75 times the sum of the
#: two atoms' covalent radii (ASE's table): 1.32 and 1.98 Å for Cu-Cu, 0.49 and 0.73 Å for O-H.
REPULSION_SWITCH = (0.5, 0.75)

# ZBL universal screening function phi(x) = 0.18175 exp(-3.1998 x) + 0.50986 exp(-0.94229 x)
# + 0.28022 exp(-0.4029 x) + 0.02817 exp(-0.20162 x), x = r / a, with the screening length
# a = 0.8854 a_0 / (Z_1^0.23 + Z_2^0.23), a_0 the Bohr radius (Ziegler, Biersack, Littmark,
# "The Stopping and Range of Ions in Solids", Pergamon 1985).
_CODATA = _ase_units.create_units(CODATA_VERSION)    # lawful's one CODATA release (kernels.units)
_BOHR = float(_CODATA["Bohr"])                          # Å
_COULOMB = float(_CODATA["Hartree"] * _CODATA["Bohr"])  # e^2 / (4 pi eps0) in eV Å


def zbl_energy(r: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, bohr: float = _BOHR,
               coulomb: float = _COULOMB) -> torch.Tensor:
    """ZBL universal screened nuclear repulsion V(r) in eV of nuclei with charges ``z1``, ``z2``
    (float tensors) at distances ``r`` (Å), broadcast together:
    ``Z1 Z2 e^2/(4 pi eps0 r) * phi(r / a)``, with ``phi`` and ``a`` as in the comment above;
    ``bohr`` (Å) and ``coulomb`` (e^2/(4 pi eps0), eV Å) default to CODATA 2018 (ase.units).
    TorchScript compatible."""
    x = r * (z1 ** 0.23 + z2 ** 0.23) / (0.8854 * bohr)
    phi = (0.18175 * torch.exp(-3.19980 * x) + 0.50986 * torch.exp(-0.94229 * x)
           + 0.28022 * torch.exp(-0.40290 * x) + 0.02817 * torch.exp(-0.20162 * x))
    return coulomb * z1 * z2 / r * phi


class ZBLRepulsion(torch.nn.Module):
    """Short-range prior: the ZBL screened nuclear repulsion of every pair, switched off smoothly.

    For a pair of species (a, b) at distance r (Å):

        E_ab(r) = V_ZBL(r; Z_a, Z_b) * S((r - r_in) / (r_out - r_in)),
        S(t) = 1 - 10 t^3 + 15 t^4 - 6 t^5 on [0, 1], 1 below, 0 above,

    S is C² (value, slope and curvature continuous at both ends), so the prior keeps forces and
    their derivatives continuous. ``r_in`` / ``r_out`` are ``switch[0]`` / ``switch[1]`` times
    the sum of the covalent radii of a and b (ASE's ``covalent_radii``); ``r_out`` must lie
    inside the model's cutoff. Each directed pair (i, j) gives half its energy to atom i.
    ``forward(species (N,), edge_i (E,), edge_j (E,), vectors (E, 3) Å, n_atoms, limits=None)``
    returns the per-atom repulsion energies (N,) in eV (``limits``: :meth:`pair_limits` of the
    same pairs, kept from an earlier call); TorchScript compatible. The tables are derived from
    the species and the switch, so they are not saved in model files (config holds the switch).
    """

    def __init__(self, numbers: Sequence[int], cutoff: float, switch: Sequence[float] = REPULSION_SWITCH):
        super().__init__()
        from ase.data import chemical_symbols, covalent_radii

        from lawful.kernels.errors import InputError

        try:
            inner, outer = (float(v) for v in switch)
        except (TypeError, ValueError):
            raise InputError(f"repulsion_switch must be two fractions (inner, outer) of the covalent-radius sum, "
                             f"got {switch!r}: pass e.g. {REPULSION_SWITCH}.") from None
        if not 0.0 < inner < outer:
            raise InputError(f"repulsion_switch {switch!r} must satisfy 0 < inner < outer (fractions of the sum of "
                             f"covalent radii): pass e.g. {REPULSION_SWITCH}.")
        z = torch.tensor([float(v) for v in numbers], dtype=torch.float64)
        rad = torch.tensor([float(covalent_radii[int(v)]) for v in numbers], dtype=torch.float64)
        rsum = rad.unsqueeze(0) + rad.unsqueeze(1)
        r_out = outer * rsum
        if float(r_out.max()) >= cutoff:
            k = int(torch.argmax(r_out))
            pair = f"{chemical_symbols[int(numbers[k // len(numbers)])]}-{chemical_symbols[int(numbers[k % len(numbers)])]}"
            raise InputError(f"repulsion_switch {switch!r} puts the outer switch radius of {pair} at "
                             f"{float(r_out.max()):.3g} Å, not inside the cutoff {cutoff} Å: lower the outer "
                             "fraction or raise the cutoff.")
        self.register_buffer("z_a", z.unsqueeze(1).expand(-1, len(z)).contiguous(), persistent=False)
        self.register_buffer("z_b", z.unsqueeze(0).expand(len(z), -1).contiguous(), persistent=False)
        self.register_buffer("r_in", inner * rsum, persistent=False)
        self.register_buffer("r_out", r_out, persistent=False)
        self.n_species = len(z)

    def pair_energy(self, r: torch.Tensor, si: torch.Tensor, sj: torch.Tensor) -> torch.Tensor:
        """Switched ZBL energy (eV) of pairs at distances ``r`` (Å) with species indices si, sj."""
        code = si * self.n_species + sj
        z1 = self.z_a.reshape(-1).index_select(0, code).to(r.dtype)
        z2 = self.z_b.reshape(-1).index_select(0, code).to(r.dtype)
        r_in = self.r_in.reshape(-1).index_select(0, code).to(r.dtype)
        r_out = self.r_out.reshape(-1).index_select(0, code).to(r.dtype)
        t = ((r - r_in) / (r_out - r_in)).clamp(0.0, 1.0)
        switch = 1.0 - t * t * t * (10.0 + t * (-15.0 + 6.0 * t))
        return zbl_energy(r, z1, z2) * switch

    def pair_limits(self, species: torch.Tensor, edge_i: torch.Tensor, edge_j: torch.Tensor,
                    dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(si, sj, r_out^2)`` (E,) of the pairs: the species indices of both atoms and the squared
        outer switch radius (Å², in ``dtype``, the vectors'); depends on the pairs only, so a caller
        evaluating the same pairs again may keep it and pass it to :meth:`forward`."""
        with torch.no_grad():
            si = species.index_select(0, edge_i)
            sj = species.index_select(0, edge_j)
            r_out = self.r_out.reshape(-1).index_select(0, si * self.n_species + sj).to(dtype)
            return si, sj, r_out * r_out

    def forward(self, species: torch.Tensor, edge_i: torch.Tensor, edge_j: torch.Tensor,
                vectors: torch.Tensor, n_atoms: int,
                limits: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        out = torch.zeros(n_atoms, dtype=vectors.dtype, device=vectors.device)
        # only pairs inside their own outer radius: the switch is exactly zero beyond it, and in
        # ordinary geometries no pair is that close, so nothing enters the autograd graph
        if limits is None:
            limits = self.pair_limits(species, edge_i, edge_j, vectors.dtype)
        si, sj, r_out2 = limits
        with torch.no_grad():
            d2 = (vectors * vectors).sum(1)
            close = torch.nonzero(d2 < r_out2).reshape(-1)
        if close.shape[0] == 0:
            return out
        ei = edge_i.index_select(0, close)
        r = torch.linalg.norm(vectors.index_select(0, close), dim=1)
        e = self.pair_energy(r, si.index_select(0, close), sj.index_select(0, close))
        return out.index_add(0, ei, 0.5 * e)


class PairPlan(NamedTuple):
    """What a :class:`NeuralPotential` evaluation needs of its pair list besides the geometry, all
    integer bookkeeping without gradient: the descriptor's
    :class:`~lawful.forcefields.descriptors.PairLayout`, the readout's
    :meth:`~lawful.forcefields.base.SpeciesMLP.groups` (None for one species) and the repulsion's
    :meth:`ZBLRepulsion.pair_limits` (None without it). It depends on the species and pairs only
    (and the dtype), so ``NeuralPotential._pair_plan`` keeps it while they do not change."""
    layout: PairLayout
    groups: Optional[Tuple[torch.Tensor, List[int]]]
    limits: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def strained_geometry(batch: Batch, positions: torch.Tensor, strain: torch.Tensor | None):
    """Pair displacement vectors ``r_j - r_i + shift @ cell`` (E,3) after applying ``strain``
    (B,3,3) to positions and cells (None: no strain). Returns (positions', vectors)."""
    cell = batch.cell
    if strain is not None:
        positions = positions + torch.bmm(positions.unsqueeze(1), strain.index_select(0, batch.batch)).squeeze(1)
        cell = cell + torch.bmm(cell, strain)
    vectors = positions.index_select(0, batch.edge_j) - positions.index_select(0, batch.edge_i)
    if batch.shifts.shape[0] and bool(batch.pbc.any()):
        vectors = vectors + torch.bmm(batch.shifts.unsqueeze(1), cell.index_select(0, batch.edge_batch)).squeeze(1)
    return positions, vectors


class NeuralPotential(AtomisticModel):
    """Conservative neural potential: E from a per-species MLP on moment-tensor invariants.

    Parameters
    ----------
    species: elements covered, e.g. ``["Cu"]`` or ``["H", "O"]`` (symbols or atomic numbers).
    cutoff: radial cutoff in Å.
    n_basis, n_radial, lmax, envelope_power: descriptor sizes
        (see :class:`~lawful.forcefields.descriptors.MomentDescriptor`).
    hidden: widths of the hidden layers of each per-species MLP.
    dtype: torch.float64 (default) or torch.float32; device: "cpu" (default), "cuda", ...
    seed: seed of the weight initialisation (a private generator; global RNG untouched).
    repulsion: ``None`` (default: the learned energy alone, as every model before it) or
        ``"zbl"``: add the switched ZBL screened nuclear repulsion (:class:`ZBLRepulsion`), which
        keeps atoms from passing through each other where the training data has no pairs.
    repulsion_switch: (inner, outer) fractions of the sum of the two covalent radii between which
        the repulsion is switched off (default :data:`REPULSION_SWITCH` = (0.5, 0.75)).
    interactions: 1 (default) uses the three-body invariants alone; each further one adds an
        :class:`~lawful.forcefields.descriptors.InteractionBlock` whose neighbour weights are a
        learned function of the neighbour's invariants from the layer before (higher body order,
        receptive field ``interactions * cutoff``), its invariants appended to the features.
    interaction_hidden: width of each block's neighbour-weight network.

    Units: Å, eV, eV/Å, eV/Å^3. See :meth:`evaluate` for outputs.
    """

    kind = "NeuralPotential"

    def __init__(self, species: Sequence, cutoff: float = 4.5, n_basis: int = 8, n_radial: int = 8,
                 lmax: int = 3, hidden: Sequence[int] = (64, 64), envelope_power: int = 3,
                 dtype=None, device=None, seed: int = 0, repulsion: str | None = None,
                 repulsion_switch: Sequence[float] = REPULSION_SWITCH, interactions: int = 1,
                 interaction_hidden: int = 32):
        super().__init__(species, cutoff)
        self._arch = dict(n_basis=int(n_basis), n_radial=int(n_radial), lmax=int(lmax),
                          hidden=[int(h) for h in hidden], envelope_power=int(envelope_power))
        if int(interactions) != interactions or interactions < 1:
            from lawful.kernels.errors import InputError

            raise InputError(f"interactions={interactions!r} must be a whole number >= 1 (1: three-body "
                             "invariants alone; 2: one interaction block on top).")
        if interactions > 1:   # recorded only when used, so that older model files keep their config
            self._arch.update(interactions=int(interactions), interaction_hidden=int(interaction_hidden))
        if repulsion not in (None, "zbl"):
            from lawful.kernels.errors import InputError

            raise InputError(f"repulsion={repulsion!r} is not a known prior: pass repulsion='zbl' (screened "
                             "nuclear repulsion) or None (no prior).")
        self.repulsion = None
        if repulsion is not None:
            from ase.data import atomic_numbers

            self.repulsion = ZBLRepulsion([atomic_numbers[x] for x in self.species], self.cutoff, repulsion_switch)
            self._arch.update(repulsion=repulsion, repulsion_switch=[float(v) for v in repulsion_switch])
        with _seeded(seed):
            self.descriptor = MomentDescriptor(len(self.species), self.cutoff, n_basis, n_radial, lmax,
                                               envelope_power)
            blocks = []
            n_prev = self.descriptor.n_features
            for _ in range(int(interactions) - 1):
                blocks.append(InteractionBlock(n_prev, len(self.species), self.cutoff, n_basis, n_radial, lmax,
                                               envelope_power, int(interaction_hidden)))
                n_prev = blocks[-1].n_features
            self.blocks = torch.nn.ModuleList(blocks)
            nf = self.descriptor.n_features + sum(b.n_features for b in blocks)
            self.readout = SpeciesMLP(len(self.species), nf, hidden)
        self.register_buffer("feature_mean", torch.zeros(nf, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(nf, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))
        self.seed = int(seed)
        self._place(dtype, device)

    @property
    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (JSON-able)."""
        return dict(species=list(self.species), cutoff=self.cutoff, seed=self.seed, **self._arch)

    def features(self, positions: torch.Tensor, species: torch.Tensor, edge_i: torch.Tensor,
                 edge_j: torch.Tensor, vectors: torch.Tensor, layout: Optional[PairLayout] = None) -> torch.Tensor:
        """Raw (un-normalised) invariants (N, n_features) of the atoms: the three-body invariants,
        then those of each interaction block (each block reads the normalised features of the
        layer before it, so their statistics are fitted one layer at a time: ``feature_stages``).
        ``layout``: the descriptor's :meth:`~lawful.forcefields.descriptors.MomentDescriptor.pair_layout`
        of these pairs, kept from an earlier call (None: built here)."""
        n_atoms = positions.shape[0]
        if layout is None:
            layout = self.descriptor.pair_layout(edge_i, species.index_select(0, edge_j), n_atoms)
        edges = self.descriptor.edge_geometry(vectors, layout)
        d = self.descriptor.invariants(edges, None)
        feats = [d]
        start = 0
        for block in self.blocks:   # the pair geometry is built once and shared by every layer
            width = d.shape[1]
            x = (d - self.feature_mean[start:start + width]) / self.feature_std[start:start + width]
            start += width
            d = block(x, edges, edge_j)
            feats.append(d)
        return torch.cat(feats, dim=1) if len(feats) > 1 else feats[0]

    @property
    def feature_stages(self) -> int:
        """Passes needed to fit the feature statistics (one per layer)."""
        return 1 + len(self.blocks)

    def forward(self, positions: torch.Tensor, species: torch.Tensor, edge_i: torch.Tensor,
                edge_j: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (N,) in eV.

        positions (N,3) Å (only their count, device and dtype are used: the geometry enters via
        ``vectors``); species (N,) int64 species indices; edge_i, edge_j (E,) int64 directed pairs;
        vectors (E,3) = r_j - r_i (+ periodic image shift) in Å. TorchScript compatible.
        """
        return self._energies(positions, species, edge_i, edge_j, vectors, None, None, None)

    def _energies(self, positions: torch.Tensor, species: torch.Tensor, edge_i: torch.Tensor,
                  edge_j: torch.Tensor, vectors: torch.Tensor, layout: Optional[PairLayout],
                  groups: Optional[Tuple[torch.Tensor, List[int]]],
                  limits: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """:meth:`forward`, with the pairs' bookkeeping of a :class:`PairPlan` (:meth:`_pair_plan`)
        where given (None: built here)."""
        d = self.features(positions, species, edge_i, edge_j, vectors, layout)
        x = (d - self.feature_mean) / self.feature_std
        e = self.reference_energies.index_select(0, species) + self.energy_scale * self.readout(x, species, groups)
        if self.repulsion is not None:
            e = e + self.repulsion(species, edge_i, edge_j, vectors, positions.shape[0], limits)
        return e

    @torch.jit.unused
    def _pair_plan(self, batch: Batch) -> PairPlan:
        """The :class:`PairPlan` of ``batch``'s pairs: the one of the last call while the species and
        pairs are the same (an MD step whose pair list did not change; compared by value against
        copies, so nothing a caller does to its tensors afterwards can pass a stale plan as
        current), else built here and kept."""
        species, edge_i, edge_j = batch.species, batch.edge_i, batch.edge_j
        dtype = batch.positions.dtype
        kept = getattr(self, "_plan_kept", None)
        if (kept is not None and kept[0] == dtype and kept[1].device == species.device
                and kept[1].shape == species.shape and kept[2].shape == edge_i.shape
                and torch.equal(kept[1], species) and torch.equal(kept[2], edge_i) and torch.equal(kept[3], edge_j)):
            return kept[4]
        with torch.no_grad():
            layout = self.descriptor.pair_layout(edge_i, species.index_select(0, edge_j), species.shape[0])
            groups = None if self.readout.single else self.readout.groups(species)
            limits = None if self.repulsion is None else self.repulsion.pair_limits(species, edge_i, edge_j, dtype)
        plan = PairPlan(layout, groups, limits)
        self._plan_kept = (dtype, species.clone(), edge_i.clone(), edge_j.clone(), plan)
        return plan

    def _evaluate_batch(self, batch: Batch, forces: bool, stress: bool, training: bool) -> dict:
        pos = batch.positions
        inputs = []
        if forces:
            pos = pos.detach().requires_grad_(True)
            inputs.append(pos)
        strain = None
        if stress:
            strain = torch.zeros_like(batch.cell).requires_grad_(True)
            inputs.append(strain)
        pos_s, vectors = strained_geometry(batch, pos, strain)
        energies = self._energies(pos_s, batch.species, batch.edge_i, batch.edge_j, vectors, *self._pair_plan(batch))
        energy = torch.zeros(batch.n_structures, dtype=energies.dtype, device=energies.device)
        energy = energy.index_add(0, batch.batch, energies)
        out = {"energy": energy, "energies": energies}
        if inputs:
            # d(sum of the structures' energies)/d(inputs): the per-atom energies with unit weights
            # (what the sum and the index_add pass back), without those two steps
            # (no pair inside the cutoff and frozen weights: the energies do not depend on anything
            # that requires grad, and their gradients are zero)
            grads = (torch.autograd.grad(energies, inputs, grad_outputs=torch.ones_like(energies),
                                         create_graph=training, allow_unused=True)
                     if energies.requires_grad else [None] * len(inputs))
            k = 0
            if forces:
                g = grads[0]
                out["forces"] = -g if g is not None else torch.zeros_like(pos)
                k = 1
            if stress:
                g = grads[k]
                g = g if g is not None else torch.zeros_like(strain)
                out["stress"] = self._per_volume(batch, g)
        return out


class _seeded:
    """Context manager: run with torch's CPU RNG seeded, restoring the previous state after."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self):
        self.state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        torch.random.set_rng_state(self.state)
        return False


def _decimals(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals (TorchScript has no format specifiers)."""
    scale = 1
    for _ in range(digits):   # int arithmetic: TorchScript's int ** int is a float
        scale *= 10
    n = int(round(abs(x) * scale))
    frac = str(n % scale)
    while len(frac) < digits:
        frac = "0" + frac
    return ("-" if x < 0 else "") + str(n // scale) + "." + frac


def _periodic_flag(pbc) -> bool:
    """``pbc`` of a :class:`TorchScriptPotential` as its one flag: a bool (NumPy's too), or three
    equal bools (``atoms.pbc``). Anything else is an :class:`InputError`: ``bool()`` of a list is
    its non-emptiness, so ``pbc=[False, False, False]`` made a periodic module (a molecule then
    interacted with its images through whatever cell was passed, with no error), and a slab's
    ``[True, True, False]`` was periodic along its vacuum axis too."""
    import numpy as np

    from lawful.kernels.errors import InputError

    flags = np.asarray(pbc.detach().cpu() if isinstance(pbc, torch.Tensor) else pbc)
    if flags.dtype.kind == "b" and flags.shape in ((), (3,)):
        if bool(flags.all()) or not bool(flags.any()):
            return bool(flags.all())
        raise InputError(f"pbc={flags.tolist()!r}: the TorchScript module is periodic along all three lattice vectors "
                         "or none (openmm-torch's box is 3-D), not a slab or wire; use model.evaluate / "
                         "LawfulCalculator for partly periodic structures.")
    raise InputError(f"pbc={pbc!r} must be True, False or three equal bools (e.g. atoms.pbc): the TorchScript "
                     "module's periodicity is fixed when it is built.")


class TorchScriptPotential(torch.nn.Module):
    """Energy and forces of a :class:`NeuralPotential` in a TorchScript-able module (openmm-torch).

    ``forward(positions (N,3) Å, numbers (N,) int64 atomic numbers, cell (3,3) Å rows)`` returns
    ``(energy 0-d eV, forces (N,3) eV/Å)``; forces are ``-dE/dR`` by autograd inside the module.
    The periodicity is fixed when the module is built: ``pbc`` True (along all three lattice
    vectors) or False, or three equal bools (a partly periodic ``pbc`` is an :class:`InputError`);
    for ``pbc=False`` the cell is ignored (pass any (3,3) tensor). Units are lawful's (Å, eV): the
    OpenMM side converts at its boundary.

    The training-domain checks of the engines' runner are made here too, from the same records
    (:mod:`lawful.forcefields.domain`): a pair closer than ``domain_tolerance`` x its species
    pair's training minimum (``pair_min_distance``), a composition outside the span of the
    training compositions (``training_compositions``), an atom whose neighbour count lies outside
    its species' training range (``neighbour_density``; ``neighbour_counts`` of older files), in the
    runner's order (composition, pairs, neighbours). A density over
    :data:`~lawful.forcefields.domain.UNIT_MISTAKE_DENSITY` x the top of that range raises, strict or
    not, an error whose text starts ``"InputError: atom"``, before the pairs are checked (lengths in other units;
    :func:`~lawful.integrations.openmm.lawful_errors` raises it as :class:`InputError`). Each kind
    (and each side of the neighbour range) warns (a Python ``UserWarning`` when called from Python;
    openmm-torch prints it) once, and again, as the engine runner does, for a periodic structure
    whose volume per atom moved by more than :data:`~lawful.forcefields.domain.REREPORT_VOLUME_CHANGE`
    from the reported one's (an EOS scan, a barostat; the report names the cell's volume per atom),
    or, with ``strict``, raises
    an error whose text starts ``"NumericalError: lawful model out of its training domain"``
    (``torch.jit.Error`` in Python; in OpenMM :func:`lawful.integrations.openmm.lawful_errors`
    turns the ``OpenMMException`` into :class:`NumericalError`). The message
    names atoms by ``labels`` (e.g. OpenMM particle indices of an ML subset; default: row
    indices). A model without a record makes no check. Build it with :func:`export_torchscript`.
    """

    def __init__(self, model: NeuralPotential, pbc: bool, domain_tolerance: float = DOMAIN_TOLERANCE,
                 strict: bool = False, labels: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        self.cutoff = float(model.cutoff)
        self.periodic = _periodic_flag(pbc)
        self.register_buffer("z_to_index", model.z_to_index.clone())
        species = list(model.species)
        record = getattr(model, "pair_min_distance", None)
        table = domain_limits(record, species, float(domain_tolerance), model.dtype, model.device)
        self.has_domain = table is not None
        n = len(species)
        self.register_buffer("domain_min2", table if table is not None
                             else torch.zeros((n, n), dtype=model.dtype, device=model.device))
        self.domain_tolerance = float(domain_tolerance)
        self.strict = bool(strict)
        self.domain_warned = False
        self.species_names: List[str] = species
        self.has_labels = labels is not None
        self.register_buffer("labels", torch.as_tensor(list(labels) if labels is not None else [], dtype=torch.long,
                                                       device=model.device))
        compositions = getattr(model, "training_compositions", None) or {}
        basis = compositions.get("basis") or []
        self.has_compositions = len(basis) > 0
        self.register_buffer("composition_basis", torch.tensor(basis, dtype=torch.float64, device=model.device)
                             .reshape(len(basis), n))
        self.composition_formulas = ", ".join(str(f) for f in compositions.get("formulas", []))
        self.composition_tolerance = COMPOSITION_TOLERANCE
        self.alphabetical = sorted(range(n), key=lambda k: species[k])
        self.carbon = species.index("C") if "C" in species else -1
        self.hydrogen = species.index("H") if "H" in species else -1
        first = [k for k in (self.carbon, self.hydrogen) if k >= 0]
        self.carbon_first = first + [k for k in self.alphabetical if k not in first]
        self.composition_warned = False
        bounds = neighbour_bounds(model, species, torch.float64, model.device)
        self.has_counts = bounds is not None
        self.count_weighted = bool(bounds[2]) if bounds is not None else False
        if bounds is None:
            bounds = (torch.zeros(n, dtype=torch.float64, device=model.device),) * 2
        self.unit_mistake_density = float(UNIT_MISTAKE_DENSITY)
        self.register_buffer("count_low", bounds[0])
        self.register_buffer("count_high", bounds[1])
        record = (neighbour_record(model) or ({}, False))[0]
        self.register_buffer("count_range", torch.tensor([[float(v) for v in record.get(s, [-1, -1])] for s in species],
                                                         dtype=torch.float64, device=model.device))
        self.count_warned_few = False
        self.count_warned_many = False
        # the volume per atom (Å³) of the structure each kind was last reported in (0: open)
        self.rereport_volume_change = float(REREPORT_VOLUME_CHANGE)
        self.domain_volume = 0.0
        self.few_volume = 0.0
        self.many_volume = 0.0

    def _volume_per_atom(self, cell: torch.Tensor, n_atoms: int) -> float:
        """Å³ per atom of a periodic module's structure; 0 for an open one."""
        if not self.periodic or n_atoms == 0:
            return 0.0
        return abs(float(torch.det(cell.detach().to(torch.float64)))) / n_atoms

    def _reported_already(self, warned: bool, was: float, volume: float) -> bool:
        """Whether an event of a kind reported (``warned``) in a structure of ``was`` Å³/atom goes
        unreported in one of ``volume``: the runner's rule (again after a volume change of more than
        ``rereport_volume_change``; every time with ``strict``)."""
        if self.strict or not warned:
            return False
        return report_covers(volume, was, self.rereport_volume_change)

    def _further(self, what: str) -> str:
        """The tail of a warning: what this force reports no more."""
        if self.periodic:
            return (" Further " + what + " are not reported by this force unless the cell's volume per atom changes "
                    + "by more than " + _decimals(100.0 * self.rereport_volume_change, 0) + " %.")
        return " Further " + what + " are not reported by this force."

    def _where(self, volume: float) -> str:
        return " in a cell of " + _decimals(volume, 3) + " Angstrom^3/atom" if volume > 0.0 else ""

    def _check_domain(self, species: torch.Tensor, edge_i: torch.Tensor, edge_j: torch.Tensor,
                      d2: torch.Tensor, volume: float) -> None:
        limit, below, k = pairs_below(self.domain_min2, species, edge_i, edge_j, d2)
        if k < 0 or self._reported_already(self.domain_warned, self.domain_volume, volume):
            return
        a = int(edge_i[k])
        b = int(edge_j[k])
        if a > b:
            a, b = b, a
        sa = self.species_names[int(species[a])]
        sb = self.species_names[int(species[b])]
        if self.has_labels:
            a = int(self.labels[a])
            b = int(self.labels[b])
        d = float(torch.sqrt(d2[k]))
        d_min = float(torch.sqrt(limit[k])) / self.domain_tolerance
        key = sa + "-" + sb if sa <= sb else sb + "-" + sa      # pair_key's alphabetical order
        message = ("atoms " + str(a) + " (" + sa + ") and " + str(b)
                   + " (" + sb + ") are " + _decimals(d, 4) + " Angstrom apart" + self._where(volume) + ", below "
                   + _decimals(self.domain_tolerance, 3) + " x the smallest " + key + " distance in the training "
                   + "data (" + _decimals(d_min, 4) + " Angstrom; " + str(int(below.sum()) // 2)
                   + " pair(s) below): the model is extrapolating and its forces are not to be trusted; check "
                   + "the structure and time step, or train on data with closer contacts.")
        self._raise_if_strict(message)
        warnings.warn("lawful model out of its training domain: " + message
                      + self._further("pairs closer than the training data's"))
        self.domain_warned = True
        self.domain_volume = volume

    def _atom_label(self, k: int) -> int:
        return int(self.labels[k]) if self.has_labels else k

    def _raise_if_strict(self, message: str) -> None:
        # each check warns from its own line: the TorchScript interpreter warns once per call site
        if self.strict:
            raise RuntimeError("NumericalError: lawful model out of its training domain: " + message)

    def _check_composition(self, species: torch.Tensor) -> None:
        """The runner's composition check (:func:`lawful.forcefields.domain.composition_residual`)."""
        if self.composition_warned and not self.strict:
            return
        counts = torch.bincount(species, minlength=len(self.species_names)).to(torch.float64)
        if composition_residual(self.composition_basis, counts) <= self.composition_tolerance:
            return
        order = self.alphabetical       # Hill notation: C then H first when there is carbon
        if self.carbon >= 0 and int(counts[self.carbon]) > 0:
            order = self.carbon_first
        formula = ""
        for s in order:
            c = int(counts[s])
            if c > 0:
                formula += self.species_names[s] + ("" if c == 1 else str(c))
        message = ("the composition " + formula + " is not a combination of the compositions the model was trained on ("
                   + self.composition_formulas + "; " + str(self.composition_basis.shape[0])
                   + " independent for " + str(len(self.species_names)) + " species): the per-species reference "
                   + "energies are not determined for it, so its absolute energy, and any energy difference to "
                   + "another composition, is arbitrary (eV per atom off is possible), and its forces may be "
                   + "extrapolation; use a model trained on this composition.")
        self._raise_if_strict(message)
        warnings.warn("lawful model out of its training domain: " + message)
        self.composition_warned = True

    def _neighbour_counts(self, species: torch.Tensor, edge_i: torch.Tensor, d2: torch.Tensor,
                          n_atoms: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The runner's neighbour densities (:func:`lawful.forcefields.domain.counts_outside`; the
        density of :func:`~lawful.forcefields.domain.neighbour_weights`, or the count for older
        records): ``(counts, low, high, outside)``. A density over ``UNIT_MISTAKE_DENSITY`` x the
        range's top raises here, strict or not, before the pairs are checked (as the runner)."""
        weights: Optional[torch.Tensor] = None
        if self.count_weighted:
            weights = neighbour_weights(d2, self.cutoff)
        counts, low, high, outside = counts_outside((self.count_low, self.count_high), species, edge_i, n_atoms,
                                                    weights)
        if not bool(outside.any()):
            return counts, low, high, outside
        dense = unit_mistakes(counts, high, self.unit_mistake_density)
        if bool(dense.any()):
            # the runner's refusal (strict or not): a lattice in nm for Angstrom put thousands of
            # neighbours in the cutoff and the first step ground on as an extrapolation
            j = int(torch.nonzero(dense)[0][0])
            raise RuntimeError("InputError: atom " + str(self._atom_label(j)) + " ("
                               + self.species_names[int(species[j])] + ") has a neighbour "
                               + ("density" if self.count_weighted else "count") + " of "
                               + _decimals(float(counts[j]), 3) + ", more than "
                               + _decimals(self.unit_mistake_density, 1) + " x the top of its species' training "
                               + "range (" + str(int(dense.sum())) + " atom(s)), far denser than anything physical, "
                               + "most likely lengths in other units (nm for Angstrom): check the units of the "
                               + "positions and box given to the engine.")
        return counts, low, high, outside

    def _check_counts(self, species: torch.Tensor, found: Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor], volume: float) -> None:
        """Report :meth:`_neighbour_counts`' finding once per side (too few, too many)."""
        counts, low, high, outside = found
        if not bool(outside.any()):
            return
        k = int(torch.nonzero(outside)[0][0])
        few = bool(counts[k] < low[k])
        if (self._reported_already(self.count_warned_few, self.few_volume, volume) if few
                else self._reported_already(self.count_warned_many, self.many_volume, volume)):
            return
        s = int(species[k])
        cut = str(int(self.cutoff)) if self.cutoff == float(int(self.cutoff)) else str(self.cutoff)
        if self.count_weighted:
            what = ("has a neighbour density of " + _decimals(float(counts[k]), 3) + " (the sum of (1 - r^2/r_c^2)^3 "
                    + "over its neighbours within the " + cut + " Angstrom cutoff), outside the "
                    + _decimals(float(self.count_range[s, 0]), 3) + "-" + _decimals(float(self.count_range[s, 1]), 3))
        else:
            what = ("has " + str(int(counts[k])) + " neighbours within the " + cut + " Angstrom cutoff, outside the "
                    + str(int(self.count_range[s, 0])) + "-" + str(int(self.count_range[s, 1])))
        message = ("atom " + str(self._atom_label(k)) + " (" + self.species_names[s] + ") " + what
                   + " its species had in the model's training data ("
                   + ("here in a cell of " + _decimals(volume, 3) + " Angstrom^3/atom; " if volume > 0.0 else "")
                   + str(int(outside.sum())) + " atom(s) "
                   + "outside): an environment the model never saw (an isolated atom, a dimer, a surface, a lattice "
                   + "in other units), so its energy and forces are extrapolation.")
        self._raise_if_strict(message)
        if few:
            warnings.warn("lawful model out of its training domain: " + message
                          + self._further("atoms with too few neighbours"))
            self.count_warned_few = True
            self.few_volume = volume
        else:
            warnings.warn("lawful model out of its training domain: " + message
                          + self._further("atoms with too many neighbours"))
            self.count_warned_many = True
            self.many_volume = volume

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor):
        table = self.z_to_index
        if bool((numbers < 0).any()) or bool((numbers >= table.shape[0]).any()):
            raise ValueError("UnsupportedSpeciesError: atomic numbers out of range")
        species = table.index_select(0, numbers)
        if bool((species < 0).any()):
            raise ValueError("UnsupportedSpeciesError: the model was not trained on some of these elements")
        pos = positions.detach().requires_grad_(True)
        if self.periodic:
            nl = neighbor_list(pos.detach(), self.cutoff, cell, [True, True, True])
        else:
            nl = neighbor_list(pos.detach(), self.cutoff, None, [False, False, False])
        vectors = pos.index_select(0, nl.j) - pos.index_select(0, nl.i)
        if self.periodic:
            vectors = vectors + nl.shifts.to(pos.dtype) @ cell.to(pos.dtype)
        d2 = (vectors.detach() * vectors.detach()).sum(1)
        if bool((d2 < 1e-8).any()):
            raise ValueError("NumericalError: two atoms are closer than 1e-4 Angstrom (coincident)")
        # the runner's order: the composition, the neighbour densities (a unit mistake is refused
        # as one, strict or not, before its close pairs are reported), the pairs, the densities' report
        if self.has_compositions:
            self._check_composition(species)
        volume = self._volume_per_atom(cell, positions.shape[0])
        if self.has_counts:
            found = self._neighbour_counts(species, nl.i, d2, positions.shape[0])
            if self.has_domain:
                self._check_domain(species, nl.i, nl.j, d2, volume)
            self._check_counts(species, found, volume)
        elif self.has_domain:
            self._check_domain(species, nl.i, nl.j, d2, volume)
        energy = self.model(pos, species, nl.i, nl.j, vectors).sum()
        g: Optional[torch.Tensor] = None
        if energy.requires_grad:        # (not with no pair inside the cutoff: the weights are frozen)
            g = torch.autograd.grad([energy], [pos], allow_unused=True)[0]
        if g is None:
            forces = torch.zeros_like(pos)
        else:
            forces = -g
        return energy.detach(), forces.detach()


@torch.inference_mode(False)     # a module of normal tensors, also when exported in inference mode
def export_torchscript(model: NeuralPotential, pbc: bool = True, path=None, *,
                       domain_tolerance: float = DOMAIN_TOLERANCE, strict: bool = False,
                       labels: Sequence[int] | None = None) -> torch.jit.ScriptModule:
    """A scripted :class:`TorchScriptPotential` (energy + autograd forces) for ``model``, in the
    model's dtype and device; saved with ``torch.jit.save`` to ``path`` if given. ``pbc``: True,
    False or three equal bools (see the class). ``domain_tolerance``, ``strict``, ``labels``: its
    training-domain check (see the class). The module holds its own copy of the model as it is at
    this call (weights, records, dtype, device): changes made to ``model`` afterwards (further
    training, ``load_state_dict``, ``.to(...)``) do not reach it; export again after them.

    Loading a TorchScript file runs its code, so hand such files only to engines that need them
    (openmm-torch); the safe exchange format stays ``model.save`` / ``load_model``. The module's
    forces are autograd's: call it with gradients on, as openmm-torch does (inside
    ``torch.no_grad()`` or ``torch.inference_mode()`` it raises); it may be exported there.
    """
    if not isinstance(model, NeuralPotential):
        from lawful.kernels.errors import InputError

        what = getattr(model, "kind", type(model).__name__)
        raise InputError(
            f"export_torchscript takes a NeuralPotential, got a {what}: the TorchScript module computes "
            "forces as -dE/dR of the energy, and a DirectForceModel's forces are its own output, not the "
            "gradient of an energy (exporting it would silently give different forces). Export a "
            "NeuralPotential trained on the same data, or run the DirectForceModel through "
            "create_force(..., backend='python') / LawfulCalculator.")
    import copy
    import os

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch 2.9+ flags torch.jit as legacy
        if not 0.0 < float(domain_tolerance) <= 1.0:
            from lawful.kernels.errors import InputError

            raise InputError(f"domain_tolerance must be a fraction in (0, 1] of the training minimum distance, "
                             f"got {domain_tolerance!r}: pass e.g. {DOMAIN_TOLERANCE}.")
        # the module's own copy, its weights frozen: its forces are gradients with respect to the
        # positions only, and weights that require grad only make autograd record more
        own = copy.deepcopy(model).eval().requires_grad_(False)
        scripted = torch.jit.script(TorchScriptPotential(own, pbc, domain_tolerance, strict, labels))
        if path is not None:
            tmp = os.fspath(path) + ".tmp"
            torch.jit.save(scripted, tmp)
            os.replace(tmp, path)
    return scripted
