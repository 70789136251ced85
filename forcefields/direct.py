"""DirectForceModel: the non-conservative control for NeuralPotential.

Same inputs, same ``evaluate`` outputs, same descriptor, but the forces come from their own
output head instead of the gradient of the energy:

    F_i = sum_{j in N(i)}  s(h_i, h_j, r_ij) * fc(r_ij) * u_ij ,      h_i = phi(D_i),

with ``u_ij`` the unit vector from i to j, ``D_i`` the moment-tensor invariants of atom i, ``phi`` a
learned embedding and ``s`` an MLP that is symmetric in (i, j) (it sees ``h_i + h_j`` and
``h_i * h_j``). So the forces rotate with the structure (equivariant), the pair terms obey
Newton's third law (total force and torque-free pair sums vanish exactly) and an embedded-atom
(EAM/EMT) force field — whose forces have exactly this central-pair form — is representable: it
is a strong control, not a straw man. What it lacks is a potential: ``curl F != 0`` in general, so
molecular dynamics with it does not conserve energy. That is what the drift tables measure.

The energy comes from a separate per-species MLP head on the same invariants, and the stress
from the pair forces, ``sigma = (1/2V) sum_e s_e r_e ⊗ u_e`` (exact for forces of pair form).
"""

from __future__ import annotations

from typing import Sequence

import torch

from lawful.forcefields.base import AtomisticModel, SpeciesMLP
from lawful.forcefields.batch import Batch
from lawful.forcefields.descriptors import MomentDescriptor, cutoff_envelope
from lawful.forcefields.potential import _seeded, strained_geometry

__all__ = ["DirectForceModel"]


class DirectForceModel(AtomisticModel):
    """Direct (non-conservative) force model: energy head + equivariant pair-force head.

    Parameters as :class:`~lawful.forcefields.NeuralPotential`, plus ``embed`` (width of the
    per-atom embedding h_i) and ``force_hidden`` (hidden widths of the pair-force MLP s).
    Units: Å, eV, eV/Å, eV/Å^3; dtype float64 (default) or float32.
    """

    kind = "DirectForceModel"

    def __init__(self, species: Sequence, cutoff: float = 4.5, n_basis: int = 8, n_radial: int = 8,
                 lmax: int = 3, hidden: Sequence[int] = (64, 64), envelope_power: int = 3,
                 embed: int = 32, force_hidden: Sequence[int] = (64, 64), dtype=None, device=None,
                 seed: int = 0):
        super().__init__(species, cutoff)
        self._arch = dict(n_basis=int(n_basis), n_radial=int(n_radial), lmax=int(lmax),
                          hidden=[int(h) for h in hidden], envelope_power=int(envelope_power),
                          embed=int(embed), force_hidden=[int(h) for h in force_hidden])
        with _seeded(seed):
            self.descriptor = MomentDescriptor(len(self.species), self.cutoff, n_basis, n_radial, lmax,
                                               envelope_power)
            nf = self.descriptor.n_features
            self.readout = SpeciesMLP(len(self.species), nf, hidden)
            self.embedding = torch.nn.Sequential(torch.nn.Linear(nf, embed, dtype=torch.float64),
                                                 torch.nn.SiLU())
            layers: list[torch.nn.Module] = []
            width = 2 * embed + int(n_basis)
            for h in force_hidden:
                layers += [torch.nn.Linear(width, h, dtype=torch.float64), torch.nn.SiLU()]
                width = h
            layers.append(torch.nn.Linear(width, 1, dtype=torch.float64))
            self.pair_head = torch.nn.Sequential(*layers)
        self.register_buffer("feature_mean", torch.zeros(nf, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(nf, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("force_scale", torch.ones((), dtype=torch.float64))
        self.seed = int(seed)
        self._place(dtype, device)

    @property
    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture (JSON-able)."""
        return dict(species=list(self.species), cutoff=self.cutoff, seed=self.seed, **self._arch)

    def features(self, positions: torch.Tensor, species: torch.Tensor, edge_i: torch.Tensor,
                 edge_j: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) invariants (N, n_features) of the atoms (arguments as :meth:`forward`)."""
        return self.descriptor(vectors, edge_i, species.index_select(0, edge_j), positions.shape[0])

    def forward(self, positions: torch.Tensor, species: torch.Tensor, edge_i: torch.Tensor,
                edge_j: torch.Tensor, vectors: torch.Tensor):
        """Per-atom energies (N,) eV, forces (N,3) eV/Å and pair magnitudes s (E,) eV/Å.

        Arguments as :meth:`NeuralPotential.forward`. No gradient with respect to positions is
        taken: the forces are a direct output.
        """
        n_atoms = positions.shape[0]
        d = self.features(positions, species, edge_i, edge_j, vectors)
        x = (d - self.feature_mean) / self.feature_std
        energies = self.reference_energies.index_select(0, species) + self.energy_scale * self.readout(x, species)
        h = self.embedding(x)
        hi = h.index_select(0, edge_i)
        hj = h.index_select(0, edge_j)
        r = torch.linalg.norm(vectors, dim=1)
        rb = self.descriptor.radial_basis(r)
        s = self.pair_head(torch.cat([hi + hj, hi * hj, rb], dim=1)).squeeze(1)
        s = self.force_scale * s * cutoff_envelope(r, self.cutoff, self.descriptor.envelope_power)
        u = vectors / r.clamp_min(1e-12).unsqueeze(1)
        forces = torch.zeros((n_atoms, 3), dtype=vectors.dtype, device=vectors.device)
        forces = forces.index_add(0, edge_i, s.unsqueeze(1) * u)
        return energies, forces, s

    @property
    def stress_fitted(self) -> bool:
        """Whether training fitted the stress (``stress_weight > 0`` in its training summary).
        Otherwise the stress is not determined: in a perfect crystal every atom's force vanishes by
        symmetry whatever the pair magnitudes ``s``, so training on forces leaves the virial's
        isotropic part free (the shipped ``cu-emt-direct``, trained with stress weight 0, is about
        10 GPa off EMT's pressure while its shear stress agrees). The ASE calculator warns when
        such a stress is asked for."""
        weights = self.training_summary.get("weights") or {}
        try:
            return float(weights.get("stress", 0.0)) > 0.0
        except (TypeError, ValueError):
            return False

    def _evaluate_batch(self, batch: Batch, forces: bool, stress: bool, training: bool) -> dict:
        with torch.set_grad_enabled(training):      # no autograd needed outside training
            return self._outputs(batch, forces, stress)

    def _outputs(self, batch: Batch, forces: bool, stress: bool) -> dict:
        _, vectors = strained_geometry(batch, batch.positions, None)
        energies, f, s = self.forward(batch.positions, batch.species, batch.edge_i, batch.edge_j, vectors)
        energy = torch.zeros(batch.n_structures, dtype=energies.dtype, device=energies.device)
        energy = energy.index_add(0, batch.batch, energies)
        out = {"energy": energy, "energies": energies}
        if forces:
            out["forces"] = f
        if stress:
            r = torch.linalg.norm(vectors, dim=1).clamp_min(1e-12)
            outer = (s / r).view(-1, 1, 1) * vectors.unsqueeze(2) * vectors.unsqueeze(1)
            virial = torch.zeros_like(batch.cell).index_add(0, batch.edge_batch, outer)
            out["stress"] = self._per_volume(batch, 0.5 * virial)
        return out
