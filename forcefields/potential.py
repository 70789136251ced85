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

``forward`` (per-atom energies from positions, species indices and pair list) is TorchScript
compatible; :func:`export_torchscript` returns a scripted module computing energy and forces
(autograd inside the script) from positions and cell, for openmm-torch.
"""

from __future__ import annotations

from typing import Sequence

import torch

from lawful.kernels.neighbors import neighbor_list

from lawful.forcefields.base import AtomisticModel, SpeciesMLP
from lawful.forcefields.batch import Batch
from lawful.forcefields.descriptors import MomentDescriptor

__all__ = ["NeuralPotential", "TorchScriptPotential", "export_torchscript", "strained_geometry"]


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

    Units: Å, eV, eV/Å, eV/Å^3. See :meth:`evaluate` for outputs.
    """

    kind = "NeuralPotential"

    def __init__(self, species: Sequence, cutoff: float = 4.5, n_basis: int = 8, n_radial: int = 8,
                 lmax: int = 3, hidden: Sequence[int] = (64, 64), envelope_power: int = 3,
                 dtype=None, device=None, seed: int = 0):
        super().__init__(species, cutoff)
        self._arch = dict(n_basis=int(n_basis), n_radial=int(n_radial), lmax=int(lmax),
                          hidden=[int(h) for h in hidden], envelope_power=int(envelope_power))
        with _seeded(seed):
            self.descriptor = MomentDescriptor(len(self.species), self.cutoff, n_basis, n_radial, lmax,
                                               envelope_power)
            self.readout = SpeciesMLP(len(self.species), self.descriptor.n_features, hidden)
        nf = self.descriptor.n_features
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
                 edge_j: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) invariants (N, n_features) of the atoms."""
        return self.descriptor(vectors, edge_i, species.index_select(0, edge_j), positions.shape[0])

    def forward(self, positions: torch.Tensor, species: torch.Tensor, edge_i: torch.Tensor,
                edge_j: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (N,) in eV.

        positions (N,3) Å (only their count, device and dtype are used: the geometry enters via
        ``vectors``); species (N,) int64 species indices; edge_i, edge_j (E,) int64 directed pairs;
        vectors (E,3) = r_j - r_i (+ periodic image shift) in Å. TorchScript compatible.
        """
        d = self.descriptor(vectors, edge_i, species.index_select(0, edge_j), positions.shape[0])
        x = (d - self.feature_mean) / self.feature_std
        return self.reference_energies.index_select(0, species) + self.energy_scale * self.readout(x, species)

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
        energies = self.forward(pos_s, batch.species, batch.edge_i, batch.edge_j, vectors)
        energy = torch.zeros(batch.n_structures, dtype=energies.dtype, device=energies.device)
        energy = energy.index_add(0, batch.batch, energies)
        out = {"energy": energy, "energies": energies}
        if inputs:
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=training, allow_unused=True)
            k = 0
            if forces:
                g = grads[0]
                out["forces"] = -g if g is not None else torch.zeros_like(pos)
                k = 1
            if stress:
                g = grads[k]
                g = g if g is not None else torch.zeros_like(strain)
                out["stress"] = g / self._volumes(batch).view(-1, 1, 1)
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


class TorchScriptPotential(torch.nn.Module):
    """Energy and forces of a :class:`NeuralPotential` in a TorchScript-able module (openmm-torch).

    ``forward(positions (N,3) Å, numbers (N,) int64 atomic numbers, cell (3,3) Å rows)`` returns
    ``(energy 0-d eV, forces (N,3) eV/Å)``; forces are ``-dE/dR`` by autograd inside the module.
    The periodicity is fixed when the module is built; for ``pbc=False`` the cell is ignored (pass
    any (3,3) tensor). Units are lawful's (Å, eV): the OpenMM side converts at its boundary.
    Build it with :func:`export_torchscript`.
    """

    def __init__(self, model: NeuralPotential, pbc: bool):
        super().__init__()
        self.model = model
        self.cutoff = float(model.cutoff)
        self.periodic = bool(pbc)
        self.register_buffer("z_to_index", model.z_to_index.clone())

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
        if bool((torch.linalg.norm(vectors, dim=1) < 1e-4).any()):
            raise ValueError("NumericalError: two atoms are closer than 1e-4 Angstrom (coincident)")
        energy = self.model(pos, species, nl.i, nl.j, vectors).sum()
        grads = torch.autograd.grad([energy], [pos], allow_unused=True)
        g = grads[0]
        if g is None:
            forces = torch.zeros_like(pos)
        else:
            forces = -g
        return energy.detach(), forces.detach()


def export_torchscript(model: NeuralPotential, pbc: bool = True, path=None) -> torch.jit.ScriptModule:
    """A scripted :class:`TorchScriptPotential` (energy + autograd forces) for ``model``, in the
    model's dtype and device; saved with ``torch.jit.save`` to ``path`` if given.

    Loading a TorchScript file runs its code, so hand such files only to engines that need them
    (openmm-torch); the safe exchange format stays ``model.save`` / ``load_model``.
    """
    if not isinstance(model, NeuralPotential):
        raise TypeError("export_torchscript takes a NeuralPotential (the conservative model).")
    import copy
    import os
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch 2.9+ flags torch.jit as legacy
        scripted = torch.jit.script(TorchScriptPotential(copy.deepcopy(model).eval(), pbc))
        if path is not None:
            tmp = os.fspath(path) + ".tmp"
            torch.jit.save(scripted, tmp)
            os.replace(tmp, path)
    return scripted
