"""The moment-tensor invariants against their definition, term by term.

``MomentDescriptor`` computes ``<A_nl, A_ml>`` with O(pairs) work through padded batched products
(all orders in one product, the pair geometry shared between layers). These tests hold it to the
three-body sum it stands for, written out as plain loops over pairs and triplets:

    A_n0[i] = sum_j R_n0(r_ij, Z_j),
    <A_nl, A_ml>[i] = sum_{j,k} R_nl(r_ij, Z_j) R_ml(r_ik, Z_k) (u_ij . u_ik)^l,

with ``R_nl(r, Z) = g_j[l, n] * sum_b basis_b(r) W[(Z, b), (l, n)]`` (``g`` = 1 without neighbour
weights).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from lawful.forcefields.descriptors import InteractionBlock, MomentDescriptor
from lawful.kernels.neighbors import neighbor_list


def _cluster(n_atoms: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand((n_atoms, 3), generator=g, dtype=torch.float64) * 4.0
    species = torch.randint(0, 3, (n_atoms,), generator=g)
    nl = neighbor_list(pos, 3.5)
    vectors = pos[nl.j] - pos[nl.i]
    return pos, species, nl, vectors


def _by_definition(desc: MomentDescriptor, vectors, centre, neighbour_species, n_atoms, weights=None):
    """The invariants from explicit loops over each atom's pairs and pair-of-pairs."""
    nr, lmax = desc.n_radial, desc.lmax
    r = torch.linalg.norm(vectors, dim=1)
    u = vectors / r.unsqueeze(1)
    basis = desc.radial_basis(r)                                        # (E, K)
    w = desc.radial_weights.detach()
    radial = torch.stack([basis[e] @ w[neighbour_species[e] * desc.n_basis:(neighbour_species[e] + 1) * desc.n_basis]
                          for e in range(len(r))])                      # (E, (lmax+1) nr)
    if weights is not None:
        radial = radial * weights
    rows = []
    for i in range(n_atoms):
        pairs = [e for e in range(len(r)) if int(centre[e]) == i]
        feats = [sum((radial[e, n] for e in pairs), torch.zeros((), dtype=torch.float64)) for n in range(nr)]
        for l in range(1, lmax + 1):
            for n in range(nr):
                for m in range(n, nr):
                    total = torch.zeros((), dtype=torch.float64)
                    for a, b in itertools.product(pairs, pairs):
                        total = total + (radial[a, l * nr + n] * radial[b, l * nr + m]
                                         * torch.dot(u[a], u[b]) ** l)
                    feats.append(total)
        rows.append(torch.stack(feats))
    return torch.stack(rows)


@pytest.mark.parametrize("lmax", [0, 1, 3, 4])
def test_invariants_equal_the_three_body_sum(lmax):
    pos, species, nl, vectors = _cluster(7, seed=lmax)
    torch.manual_seed(1)
    desc = MomentDescriptor(3, 3.5, n_basis=5, n_radial=3, lmax=lmax)
    ns = species[nl.j]
    got = desc(vectors, nl.i, ns, len(pos))
    want = _by_definition(desc, vectors, nl.i, ns, len(pos))
    assert got.shape == (len(pos), desc.n_features)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-13)


def test_neighbour_weights_scale_each_pair_channel():
    pos, species, nl, vectors = _cluster(6, seed=11)
    torch.manual_seed(2)
    desc = MomentDescriptor(3, 3.5, n_basis=4, n_radial=2, lmax=2)
    weights = torch.rand((len(vectors), 3 * 2), dtype=torch.float64) + 0.5
    ns = species[nl.j]
    got = desc(vectors, nl.i, ns, len(pos), weights)
    assert torch.allclose(got, _by_definition(desc, vectors, nl.i, ns, len(pos), weights), rtol=1e-12, atol=1e-13)


def test_a_block_reading_the_shared_pair_geometry_equals_one_building_its_own():
    pos, species, nl, vectors = _cluster(8, seed=5)
    torch.manual_seed(3)
    first = MomentDescriptor(3, 3.5, n_basis=6, n_radial=3, lmax=3)
    block = InteractionBlock(first.n_features, 3, 3.5, 6, 3, 3, 3, hidden=8).double()
    ns = species[nl.j]
    edges = first.edge_basis(vectors, nl.i, ns, len(pos))
    x = torch.randn((len(pos), first.n_features), dtype=torch.float64)
    shared = block(x, edges, nl.j)
    own = block.moments(vectors, nl.i, ns, len(pos), block.gate(x)[nl.j])
    assert torch.allclose(shared, own, rtol=1e-14, atol=1e-15)
    # the padding of every order beyond its own components, and of every atom beyond its own
    # pairs, is exactly zero: it adds nothing to any sum
    counts = torch.bincount(nl.i, minlength=len(pos))
    for l in range(1, 4):
        assert torch.count_nonzero(edges.comps[:, l - 1, :, (l + 1) * (l + 2) // 2:]) == 0
    for i, c in enumerate(counts.tolist()):
        assert torch.count_nonzero(edges.comps[i, :, c:, :]) == 0
