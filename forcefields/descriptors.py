"""Smooth, rotation-invariant atomic-environment descriptors built from Cartesian moment tensors.

For every atom ``i`` and every radial channel ``n`` and angular order ``l <= lmax`` we form the
moment tensor

    A[i, n, l] = sum_{j in N(i)}  R_{n,l}(r_ij, Z_j)  *  u_ij ⊗ u_ij ⊗ ... ⊗ u_ij      (l factors)

with ``u_ij`` the unit vector from ``i`` to ``j``. The rotation invariants fed to the energy network
are the scalars ``A[i, n, 0]`` and the full contractions ``<A[i, n, l], A[i, m, l]>`` for
``n <= m`` and ``1 <= l <= lmax``. Expanding the contraction gives

    <A_nl, A_ml> = sum_{j,k} R_nl(r_ij) R_ml(r_ik) cos(theta_jik)**l,

so each invariant is a genuine three-body (radial + angular) function, but it is computed with
O(pairs) work: no loop over triplets ever happens. This is the Cartesian form of the ACE / moment
tensor potential (MTP) descriptors truncated at body order three.

Why this choice (rather than Behler-Parrinello symmetry functions or message passing):

* cost - Behler-Parrinello angular functions loop over neighbour *triplets* (~40**2 per Cu atom at
  a 4.5 Å cutoff); message passing repeats the neighbour sum once per layer and widens the
  effective cutoff. The moment form costs one pass over pairs, which keeps energy + forces for a
  500-atom copper cell in the tens of milliseconds on one CPU core;
* completeness - the invariants span all three-body functions of (r_ij, r_ik, theta_jik) up to
  the radial and angular truncation, and the learned radial mixing adapts the radial basis;
* smoothness - every radial function is a Chebyshev polynomial times the envelope
  ``(1 - (r/r_c)**2)**p`` (p >= 3). The descriptor and hence the energy change by O((r_c - r)**p)
  when a neighbour crosses the cutoff, so for the default p = 3 energy, forces and the first
  derivative of forces all vanish at r_c (C² at the cutoff).

Symmetric tensors are stored by their unique components (monomials ``x^a y^b z^c`` with
``a + b + c = l``) multiplied by the square root of their multiplicity ``l!/(a! b! c!)``, so a plain
dot product of two stored tensors equals the full tensor contraction.

Everything here is TorchScript-compatible and device/dtype agnostic (no process-wide state).
"""

from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple

import torch

__all__ = ["MomentDescriptor", "InteractionBlock", "EdgeBasis", "PairLayout", "cutoff_envelope", "monomial_table"]


def monomial_table(lmax: int) -> Tuple[List[int], List[int], List[int], List[int], List[float]]:
    """Exponents ``(a, b, c)``, degree ``l`` and sqrt-multiplicity weight of every unique component
    of the symmetric tensors ``u^{⊗l}`` for ``l = 0..lmax`` (ordered by ``l``)."""
    ax: List[int] = []
    by: List[int] = []
    cz: List[int] = []
    deg: List[int] = []
    w: List[float] = []
    for l in range(lmax + 1):
        for a in range(l, -1, -1):
            for b in range(l - a, -1, -1):
                c = l - a - b
                ax.append(a)
                by.append(b)
                cz.append(c)
                deg.append(l)
                mult = math.factorial(l) / (math.factorial(a) * math.factorial(b) * math.factorial(c))
                w.append(math.sqrt(mult))
    return ax, by, cz, deg, w


def cutoff_envelope(r: torch.Tensor, cutoff: float, power: int = 3) -> torch.Tensor:
    """``(1 - (r/r_c)^2)^power`` for ``r < r_c``, else 0: a zero of order ``power`` at ``r_c``.

    ``r``: distances in Å, any shape/dtype. With ``power >= 3`` a function linear in the envelope
    has value, first and second derivative zero at the cutoff (C² continuation by zero).
    """
    x = r / cutoff
    inside = x < 1.0
    base = torch.where(inside, 1.0 - x * x, torch.zeros_like(x))
    return base ** power


class EdgeBasis(NamedTuple):
    """The geometry of one pair list that every moment pass over it shares (built once per
    evaluation by :meth:`MomentDescriptor.edge_basis`, or by :meth:`MomentDescriptor.edge_geometry`
    from a kept :class:`PairLayout`; read by :meth:`MomentDescriptor.invariants` of the descriptor
    and of each :class:`InteractionBlock`).

    The pairs are grouped by their neighbour's species: ``order`` (E,) int64 gives the original
    index of each grouped pair and ``species_counts`` the pairs per species (n_species entries), so
    each species' radial mixing is one matrix product over its own rows. ``basis`` (E, K): the
    radial basis functions (envelope included) of the grouped pairs; ``centre`` (E,): their atom
    i; ``slot`` (E,): their row ``i * M + rank`` in a layout that pads every atom's pairs to M,
    the largest neighbour count; ``comps`` (N, lmax, M, C): the weighted unique components of
    ``u_ij^{⊗l}`` for l = 1..lmax in that layout, each order padded to C, the component count
    of ``lmax`` (every padding entry is exactly zero).
    """
    basis: torch.Tensor
    comps: torch.Tensor
    centre: torch.Tensor
    slot: torch.Tensor
    order: torch.Tensor
    species_counts: List[int]
    n_atoms: int
    m: int


# (the functional form: its field types stay objects under ``from __future__ import annotations``,
# which TorchScript needs to read it inside ``Optional``)
PairLayout = NamedTuple("PairLayout", [("order", torch.Tensor), ("species_counts", List[int]),
                                       ("centre", torch.Tensor), ("slot", torch.Tensor), ("n_atoms", int),
                                       ("m", int)])
PairLayout.__doc__ = """The bookkeeping of one pair list behind an :class:`EdgeBasis`: integer tensors (no
gradient) that depend on the pairs' centres, their neighbours' species and the atom count only, not
on the geometry (built by :meth:`MomentDescriptor.pair_layout`). A caller that evaluates the same
pairs again (an MD step whose pair list did not change) may keep it and pass it to
:meth:`MomentDescriptor.edge_geometry`. ``order``, ``species_counts``, ``centre``, ``slot``,
``n_atoms`` and ``m`` as in :class:`EdgeBasis`."""


class MomentDescriptor(torch.nn.Module):
    """Per-atom invariants from Cartesian moment tensors (see the module docstring).

    Parameters
    ----------
    n_species: number of chemical species the model knows (species indices 0..n_species-1).
    cutoff: radial cutoff r_c in Å.
    n_basis: number K of Chebyshev radial basis functions (per neighbour species).
    n_radial: number n of learned radial channels per angular order.
    lmax: highest angular order (0..4); lmax = 0 gives a purely radial (two-body) description.
    envelope_power: order p of the cutoff zero (>= 3 for C² at r_c).

    ``forward(vectors, centre, neighbour_species, n_atoms, neighbour_weights=None)``: ``vectors``
    (E,3) Å are the displacement vectors r_j - r_i of the directed pairs, ``centre`` (E,) int64 the
    index i of each pair, ``neighbour_species`` (E,) int64 the species index of j.
    ``neighbour_weights`` (E, (lmax+1)*n_radial), optional, multiplies each pair's radial channels
    (l-major columns): :class:`InteractionBlock` passes a learned function of atom j's own
    invariants there. Returns (n_atoms, n_features) invariants in the dtype of ``vectors``.
    ``forward`` is :meth:`edge_basis` (the pair geometry, shareable between passes over the same
    pairs) followed by :meth:`invariants` (the learned radial mixing and the contractions).
    """

    def __init__(self, n_species: int, cutoff: float, n_basis: int = 8, n_radial: int = 8,
                 lmax: int = 3, envelope_power: int = 3):
        super().__init__()
        if not 0 <= lmax <= 4:
            raise ValueError(f"lmax={lmax} is not supported: use 0 <= lmax <= 4")
        self.n_species = int(n_species)
        self.cutoff = float(cutoff)
        self.n_basis = int(n_basis)
        self.n_radial = int(n_radial)
        self.lmax = int(lmax)
        self.envelope_power = int(envelope_power)
        ax, by, cz, deg, w = monomial_table(self.lmax)
        # The components of the orders l = 1..lmax, each padded to the count of the highest order
        # (exponents 0, weight 0: the padding is exactly zero, and so is its gradient), so that all
        # orders are contracted in one batched product: column (l - 1) * C + c is component c of
        # order l. Order 0 has the one component 1: its moments are plain sums over the pairs.
        width = (self.lmax + 1) * (self.lmax + 2) // 2
        pad_ax, pad_by, pad_cz, pad_w = ([0] * (self.lmax * width) for _ in range(4))
        for k in range(1, len(deg)):
            col = (deg[k] - 1) * width + (k - deg[k] * (deg[k] + 1) * (deg[k] + 2) // 6)
            pad_ax[col], pad_by[col], pad_cz[col], pad_w[col] = ax[k], by[k], cz[k], w[k]
        self.n_components = width
        self.register_buffer("_ax", torch.tensor(pad_ax, dtype=torch.long), persistent=False)
        self.register_buffer("_by", torch.tensor(pad_by, dtype=torch.long), persistent=False)
        self.register_buffer("_cz", torch.tensor(pad_cz, dtype=torch.long), persistent=False)
        self.register_buffer("_w", torch.tensor(pad_w, dtype=torch.float64), persistent=False)
        # Invariants of orders 1..lmax: the upper triangle (n <= m) of each order's Gram matrix,
        # as columns of the (lmax * n * n) flattened stack of the Gram matrices.
        iu = torch.triu_indices(self.n_radial, self.n_radial)
        triu = iu[0] * self.n_radial + iu[1]
        blocks = [triu + l * self.n_radial ** 2 for l in range(self.lmax)]
        self.register_buffer("_triu_flat", torch.cat(blocks) if blocks else triu[:0], persistent=False)
        # Learned radial mixing: (species_j, basis k) -> (channel n, order l).
        fan_in = self.n_species * self.n_basis
        # Columns are l-major: column l * n_radial + n is channel n of order l.
        self.radial_weights = torch.nn.Parameter(
            torch.randn(fan_in, (self.lmax + 1) * self.n_radial, dtype=torch.float64) / math.sqrt(fan_in)
        )
        self.n_features = self.n_radial + self.lmax * (self.n_radial * (self.n_radial + 1)) // 2

    def radial_basis(self, r: torch.Tensor) -> torch.Tensor:
        """(E,) distances in Å -> (E, K) Chebyshev polynomials of 2 r/r_c - 1 times the envelope."""
        x = 2.0 * r / self.cutoff - 1.0
        env = cutoff_envelope(r, self.cutoff, self.envelope_power)
        two_x = 2.0 * x
        polys: List[torch.Tensor] = [torch.ones_like(x), x]
        for _ in range(2, self.n_basis):
            polys.append(two_x * polys[-1] - polys[-2])
        return torch.stack(polys[: self.n_basis], dim=1) * env.unsqueeze(1)

    def pair_layout(self, centre: torch.Tensor, neighbour_species: torch.Tensor, n_atoms: int) -> PairLayout:
        """The :class:`PairLayout` of pairs with centres ``centre`` (E,) and neighbour species
        ``neighbour_species`` (E,) among ``n_atoms`` atoms (arguments as :meth:`forward`)."""
        device = centre.device
        n_edges = centre.shape[0]
        with torch.no_grad():
            if self.n_species > 1:
                order = torch.sort(neighbour_species, stable=True)[1]
                counts_s: List[int] = torch.bincount(neighbour_species, minlength=self.n_species).tolist()
            else:
                order = torch.arange(n_edges, device=device)
                counts_s = [n_edges]
            centre = centre.index_select(0, order)
            # Sum over each atom's pairs as a batched matrix product: pad the pairs of every atom to
            # the largest neighbour count M (slot = centre * M + rank of the pair among its centre's).
            counts = torch.bincount(centre, minlength=n_atoms)
            m = int(counts.max()) if n_edges > 0 else 1
            by_centre = torch.argsort(centre, stable=True)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.empty_like(centre)
            rank[by_centre] = (torch.arange(n_edges, device=device)
                               - starts.index_select(0, centre.index_select(0, by_centre)))
            slot = centre * m + rank
        return PairLayout(order, counts_s, centre, slot, n_atoms, m)

    def edge_basis(self, vectors: torch.Tensor, centre: torch.Tensor, neighbour_species: torch.Tensor,
                   n_atoms: int) -> EdgeBasis:
        """The pair geometry of :class:`EdgeBasis` (arguments as :meth:`forward`); it depends on
        the species count, cutoff, basis size, envelope and lmax only, not on learned weights.
        The same as :meth:`edge_geometry` of :meth:`pair_layout`."""
        return self.edge_geometry(vectors, self.pair_layout(centre, neighbour_species, n_atoms))

    def edge_geometry(self, vectors: torch.Tensor, layout: PairLayout) -> EdgeBasis:
        """The :class:`EdgeBasis` of the pairs of ``layout`` (:meth:`pair_layout`) with displacement
        vectors ``vectors`` (E,3) Å in their original order (as :meth:`forward`'s)."""
        device = vectors.device
        order, centre, slot, n_atoms, m = layout.order, layout.centre, layout.slot, layout.n_atoms, layout.m
        vectors = vectors.index_select(0, order)
        r = torch.linalg.norm(vectors, dim=1)
        # Pairs beyond the cutoff (a Verlet skin) contribute exactly zero through the envelope;
        # clamp r away from 0 only to keep the unit vector finite for such masked pairs.
        u = vectors / r.clamp_min(1e-12).unsqueeze(1)
        basis = self.radial_basis(r)                                       # (E, K)
        if self.lmax == 0:
            return EdgeBasis(basis, basis[:0], centre, slot, order, layout.species_counts, n_atoms, m)
        # Unique components of u^{⊗l}, l = 1..lmax, with sqrt-multiplicity weights: (E, lmax*C).
        powers = [torch.ones_like(u)]
        for _ in range(self.lmax):
            powers.append(powers[-1] * u)
        pw = torch.stack(powers, dim=2)                                    # (E, 3, lmax+1)
        comps = (pw[:, 0, :].index_select(1, self._ax) * pw[:, 1, :].index_select(1, self._by)
                 * pw[:, 2, :].index_select(1, self._cz)) * self._w.to(vectors.dtype)
        c = self.n_components
        cmp_pad = torch.zeros((n_atoms * m, comps.shape[1]), dtype=comps.dtype, device=device).index_copy(0, slot, comps)
        cmp_pad = cmp_pad.view(n_atoms, m, self.lmax, c).permute(0, 2, 1, 3).contiguous()   # (N, lmax, M, C)
        return EdgeBasis(basis, cmp_pad, centre, slot, order, layout.species_counts, n_atoms, m)

    def invariants(self, edges: EdgeBasis, neighbour_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, n_features) invariants from a shared :class:`EdgeBasis` and this pass's radial
        mixing; ``neighbour_weights`` as in :meth:`forward` but in the grouped pair order
        (row k belongs to pair ``edges.order[k]``)."""
        n_atoms = edges.n_atoms
        k = self.n_basis
        weights = self.radial_weights.to(edges.basis.dtype)
        # each neighbour species' rows times its own block of the radial mixing; one split, not a
        # slice per species: in the force pass a slice's backward fills a zero copy of the whole
        # basis and the copies are summed, a split's backward is one concatenation
        parts: List[torch.Tensor] = []
        for s, rows in enumerate(edges.basis.split(edges.species_counts)):
            if rows.shape[0] > 0:
                parts.append(rows @ weights[s * k:(s + 1) * k])
        if len(parts) == 0:
            return torch.zeros((n_atoms, self.n_features), dtype=edges.basis.dtype, device=edges.basis.device)
        radial = parts[0] if len(parts) == 1 else torch.cat(parts)        # (E, (lmax+1)*n), l-major
        if neighbour_weights is not None:
            radial = radial * neighbour_weights
        n = self.n_radial
        radial0, radial_l = radial.split([n, self.lmax * n], dim=1)       # order 0 | orders 1..lmax
        scalars = torch.zeros((n_atoms, n), dtype=radial.dtype, device=radial.device).index_add(
            0, edges.centre, radial0)                                      # order 0: A[i, n, 0]
        if self.lmax == 0:
            return scalars
        m = edges.m
        rad_pad = torch.zeros((n_atoms * m, self.lmax * n), dtype=radial.dtype,
                              device=radial.device).index_copy(0, edges.slot, radial_l)
        rad_pad = rad_pad.view(n_atoms, m, self.lmax, n).permute(0, 2, 3, 1)   # (N, lmax, n, M)
        a = torch.matmul(rad_pad, edges.comps)                            # (N, lmax, n, C): A[i, n, l]
        gram = torch.matmul(a, a.transpose(2, 3)).reshape(n_atoms, -1)     # (N, lmax*n*n)
        return torch.cat([scalars, gram.index_select(1, self._triu_flat)], dim=1)

    def forward(self, vectors: torch.Tensor, centre: torch.Tensor, neighbour_species: torch.Tensor,
                n_atoms: int, neighbour_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        edges = self.edge_basis(vectors, centre, neighbour_species, n_atoms)
        if neighbour_weights is not None:
            neighbour_weights = neighbour_weights.index_select(0, edges.order)
        return self.invariants(edges, neighbour_weights)


class InteractionBlock(torch.nn.Module):
    """One more pass of moment tensors whose neighbour weights depend on the neighbour's invariants.

    With ``x_j`` the normalised invariants of atom j from the previous layer, a small SiLU network
    gives per-channel weights ``g_j = W2 silu(W1 x_j + b1) + b2`` ((lmax+1)*n_radial of them), and

        A'[i, n, l] = sum_j g_j[l, n] R'_{n,l}(r_ij, Z_j) u_ij^{⊗l},

    contracted to invariants exactly as in :class:`MomentDescriptor` (its own radial mixing). Each
    ``g_j`` already describes j's three-body neighbourhood, so the new invariants couple atoms up
    to two cutoffs apart and raise the body order beyond three, while the energy stays one smooth
    scalar: every neighbour term still carries the envelope, so the C² cutoff behaviour and exact
    gradient forces are unchanged.

    ``forward(x (N, n_in), edges, neighbour (E,) index j)`` returns (N, n_features); ``edges`` is
    the :class:`EdgeBasis` of the pairs, built by the model's first :class:`MomentDescriptor`
    (same species count, cutoff, basis, envelope and lmax as this block's). TorchScript compatible.
    """

    def __init__(self, n_in: int, n_species: int, cutoff: float, n_basis: int, n_radial: int, lmax: int,
                 envelope_power: int, hidden: int):
        super().__init__()
        self.moments = MomentDescriptor(n_species, cutoff, n_basis, n_radial, lmax, envelope_power)
        self.gate = torch.nn.Sequential(torch.nn.Linear(n_in, hidden, dtype=torch.float64), torch.nn.SiLU(),
                                        torch.nn.Linear(hidden, (lmax + 1) * n_radial, dtype=torch.float64))
        self.n_features = self.moments.n_features

    def forward(self, x: torch.Tensor, edges: EdgeBasis, neighbour: torch.Tensor) -> torch.Tensor:
        g = self.gate(x).index_select(0, neighbour.index_select(0, edges.order))
        return self.moments.invariants(edges, g)
