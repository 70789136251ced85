"""An analytic reference model for the engine tests: a Morse pair potential with ASE's smooth
quintic cutoff, written as a torch module that speaks lawful's model protocol
(``evaluate(positions, numbers, cell, pbc, stress) -> dict``; ``species``, ``cutoff``, ``dtype``,
``device``). Its energy/forces/stress are checked here against ASE's own ``MorsePotential`` so the
engine tests (ASE, OpenMM, openmm-ml) can rely on an exactly known model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.morse import MorsePotential
from ase.neighborlist import primitive_neighbor_list


class MorsePairModel(torch.nn.Module):
    """V(r) = eps (e^{-2 rho (r/r0-1)} - 2 e^{-rho (r/r0-1)}) * fcut(r), ASE's quintic cutoff
    between ``rcut1`` and ``rcut2`` (absolute Å). Energy eV, forces eV/Å, stress eV/Å³ by autograd
    (strain trick), per-atom energies split half/half over each pair."""

    def __init__(self, species=("Cu",), epsilon=0.35, rho0=4.0, r0=2.55, rcut1=4.0, rcut2=5.0,
                 dtype=torch.float64, conservative=True):
        super().__init__()
        self.species = list(species)
        self.cutoff = float(rcut2)
        self.eps, self.rho0, self.r0 = epsilon, rho0, r0
        self.rcut1, self.rcut2 = rcut1, rcut2
        # a parameter so that .to(dtype=...) works and the module has a dtype/device
        self.scale = torch.nn.Parameter(torch.ones((), dtype=dtype), requires_grad=False)
        self.conservative = conservative

    @property
    def dtype(self):
        return self.scale.dtype

    @property
    def device(self):
        return self.scale.device

    def _fcut(self, r):
        s = 1.0 - (r - self.rcut1) / (self.rcut2 - self.rcut1)
        poly = 6 * s**5 - 15 * s**4 + 10 * s**3
        return torch.where(s >= 1.0, torch.ones_like(r), torch.where(s > 0.0, poly, torch.zeros_like(r)))

    def evaluate(self, positions, numbers, cell=None, pbc=False, stress=False):
        pos = torch.as_tensor(positions, dtype=self.dtype, device=self.device)
        n = pos.shape[0]
        pbc3 = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        cell_t = (torch.zeros(3, 3, dtype=self.dtype) if cell is None
                  else torch.as_tensor(cell, dtype=self.dtype, device=self.device))
        i, j, S = primitive_neighbor_list("ijS", pbc3, cell_t.detach().cpu().numpy(),
                                          pos.detach().cpu().numpy(), self.cutoff, self_interaction=False)
        i, j = torch.as_tensor(i), torch.as_tensor(j)
        S = torch.as_tensor(S, dtype=self.dtype)
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            strain = torch.zeros(3, 3, dtype=self.dtype, requires_grad=True)
            deform = torch.eye(3, dtype=self.dtype) + 0.5 * (strain + strain.T)
            p = pos @ deform
            c = cell_t @ deform
            d = p[j] - p[i] + S @ c
            r = torch.linalg.norm(d, dim=1)
            ex = torch.exp(self.rho0 * (1.0 - r / self.r0))
            pair = self.scale * self.eps * ex * (ex - 2.0) * self._fcut(r)
            energies = torch.zeros(n, dtype=self.dtype).index_add(0, i, 0.5 * pair)
            energy = energies.sum()
            gp, gs = torch.autograd.grad(energy, (pos, strain), allow_unused=True)
        out = {"energy": energy.detach(), "energies": energies.detach(),
               "forces": -gp if gp is not None else torch.zeros_like(pos)}
        if not self.conservative:  # a "direct" head: the forces plus a smooth non-gradient swirl
            f = out["forces"].clone()
            f[:, 0] += 1e-3 * torch.sin(pos.detach()[:, 1])
            out["forces"] = f
        if stress:
            vol = torch.abs(torch.linalg.det(cell_t))
            out["stress"] = (gs if gs is not None else torch.zeros(3, 3, dtype=self.dtype)) / vol
        return out


def ase_morse(model: MorsePairModel) -> MorsePotential:
    """ASE's own Morse calculator with the same parameters."""
    return MorsePotential(epsilon=model.eps, rho0=model.rho0, r0=model.r0,
                          rcut1=model.rcut1 / model.r0, rcut2=model.rcut2 / model.r0)


def rattled_copper(size=(2, 2, 2), seed=0, amp=0.08):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(size)
    atoms.rattle(amp, seed=seed)
    return atoms


@pytest.mark.parametrize("periodic", [True, False])
def test_pair_model_matches_ase_morse(periodic):
    atoms = rattled_copper() if periodic else Atoms("Cu13", positions=bulk("Cu", "fcc", a=3.61, cubic=True)
                                                    .repeat((2, 2, 2)).positions[:13])
    model = MorsePairModel()
    out = model.evaluate(atoms.positions, atoms.numbers, atoms.cell.array if periodic else None,
                         pbc=periodic, stress=periodic)
    ref = ase_morse(model)
    atoms.calc = ref
    assert float(out["energy"]) == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(out["forces"].numpy(), atoms.get_forces(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out["energies"].numpy(), atoms.get_potential_energies(), atol=1e-12)
    if periodic:
        np.testing.assert_allclose(out["stress"].numpy(), atoms.get_stress(voigt=False), atol=1e-10)


def test_pair_model_molecule_species():
    mol = molecule("CH3CH2OH")
    model = MorsePairModel(species=["H", "C", "O"], r0=1.3, rcut1=2.5, rcut2=3.2, epsilon=0.2)
    out = model.evaluate(mol.positions, mol.numbers)
    mol.calc = ase_morse(model)
    assert float(out["energy"]) == pytest.approx(mol.get_potential_energy(), rel=1e-12)
