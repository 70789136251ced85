"""The training domain of a force field: how close each pair of species came in its training data.

A trained model records ``pair_min_distance`` (``{"H-O": 0.93, ...}``, Å; see
:func:`lawful.forcefields.batch.pair_min_distances`). A structure with a pair closer than
:data:`DOMAIN_TOLERANCE` times that record is outside what the model has seen, and its forces
are extrapolation. Both places that evaluate models in engines check it from the table built
here: the engine runner (ASE, OpenMM's python backend: ``lawful.integrations.runner``) and the
TorchScript export that openmm-torch runs (:class:`lawful.forcefields.TorchScriptPotential`).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["DOMAIN_TOLERANCE", "domain_limits"]

#: Default fraction of the training minimum distance below which a pair is out of domain.
DOMAIN_TOLERANCE = 0.9


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
