"""Library checks that a force field's forces and stress are the derivatives of its energy.

:func:`gradient_check` compares ``model.evaluate``'s forces with central differences of its
energy in the atomic positions, and its stress with central differences in a homogeneous strain
(positions and cell deformed together), and returns the relative errors. The test-suite uses it;
users can run it on their own models and structures (use float64).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gradient_check"]


def _pairs(model, pos, cell, pbc, skin):
    from lawful.kernels.neighbors import neighbor_list

    c = None if cell is None else torch.as_tensor(np.asarray(cell, dtype=np.float64))
    nl = neighbor_list(torch.as_tensor(pos), model.cutoff + skin, cell=c, pbc=pbc)
    return nl.i, nl.j, nl.shifts


def gradient_check(model, positions, numbers, cell=None, pbc=False, stress: bool | None = None,
                   h: float = 1e-5, skin: float = 0.5, atoms=None) -> dict:
    """Forces (and stress) of ``model`` against central differences of its energy.

    positions (N,3) Å, numbers (N,), cell (3,3) Å rows or None, pbc bool; ``h``: step in Å for
    positions and (dimensionless) for strain; ``atoms``: indices of the atoms to displace (default
    all). The neighbour pairs are found once with ``cutoff + skin`` and reused for every displaced
    geometry (pairs beyond the cutoff contribute exactly zero, so this is exact for |h| << skin).

    Returns ``{"force_error": max |F - F_fd| / max |F_fd|, "forces": (N,3), "forces_fd": (N,3)}``
    and, for periodic cells (or ``stress=True``), ``"stress_error"``, ``"stress"``, ``"stress_fd"``.
    """
    pos = np.asarray(positions, dtype=np.float64)
    num = np.asarray(numbers)
    periodic = bool(np.all(pbc)) if cell is not None else False
    want_stress = periodic if stress is None else bool(stress)
    pairs = _pairs(model, pos, cell, pbc, skin)

    def energy(p, c):
        return float(model.evaluate(p, num, c, pbc, pairs=pairs)["energy"])

    ref = model.evaluate(pos, num, cell, pbc, stress=want_stress, pairs=pairs)
    f = ref["forces"].detach().cpu().double().numpy()
    idx = range(len(pos)) if atoms is None else list(atoms)
    fd = np.zeros_like(pos)
    for a in idx:
        for d in range(3):
            p = pos.copy()
            p[a, d] += h
            ep = energy(p, cell)
            p[a, d] -= 2 * h
            fd[a, d] = -(ep - energy(p, cell)) / (2 * h)
    sel = np.asarray(list(idx))
    denom = max(np.abs(fd[sel]).max(), 1e-300)
    out = {"force_error": float(np.abs(f[sel] - fd[sel]).max() / denom), "forces": f, "forces_fd": fd}
    if want_stress:
        cell_np = np.asarray(cell, dtype=np.float64)
        vol = abs(np.linalg.det(cell_np))
        sfd = np.zeros((3, 3))
        for a in range(3):
            for b in range(3):
                eps = np.zeros((3, 3))
                eps[a, b] = h
                ep = energy(pos @ (np.eye(3) + eps), cell_np @ (np.eye(3) + eps))
                em = energy(pos @ (np.eye(3) - eps), cell_np @ (np.eye(3) - eps))
                sfd[a, b] = (ep - em) / (2 * h) / vol
        s = ref["stress"].detach().cpu().double().numpy()
        out.update({"stress_error": float(np.abs(s - sfd).max() / max(np.abs(sfd).max(), 1e-300)),
                    "stress": s, "stress_fd": sfd})
    return out
