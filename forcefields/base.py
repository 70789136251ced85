"""What the lawful atomistic models share: the species table, input handling, normalisation
buffers, ``evaluate`` and ``save``. :class:`~lawful.forcefields.NeuralPotential` and
:class:`~lawful.forcefields.DirectForceModel` derive from :class:`AtomisticModel`.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from ase.data import atomic_numbers, chemical_symbols

from lawful.kernels.errors import InputError, NumericalError
from lawful.kernels.precision import md_dtype, resolve_device

from lawful.forcefields.batch import Batch, make_batch

__all__ = ["AtomisticModel", "SpeciesMLP", "UNITS"]

#: The units every lawful force field speaks (ASE's).
UNITS = {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}


def _symbols(species: Sequence) -> list[str]:
    out = []
    for s in species:
        if isinstance(s, str):
            if s not in atomic_numbers:
                raise InputError(f"unknown element symbol {s!r} in species; use symbols like 'Cu', 'O'.")
            out.append(s)
        else:
            z = int(s)
            if not 0 < z < len(chemical_symbols):
                raise InputError(f"unknown atomic number {z} in species.")
            out.append(chemical_symbols[z])
    if not out:
        raise InputError("species is empty: give the elements the model covers, e.g. species=['Cu'].")
    if len(set(out)) != len(out):
        raise InputError(f"species {out} lists an element twice.")
    return out


class SpeciesMLP(torch.nn.Module):
    """One small SiLU multilayer perceptron per species: (N, D) features + (N,) species -> (N,)
    (``groups``, optional: :meth:`groups` of ``species``, kept from an earlier call).

    SiLU is smooth (C^∞), so the energy inherits the smoothness of the descriptor.
    """

    def __init__(self, n_species: int, n_in: int, hidden: Sequence[int]):
        super().__init__()
        nets = []
        for _ in range(n_species):
            layers: list[torch.nn.Module] = []
            width = n_in
            for h in hidden:
                layers += [torch.nn.Linear(width, h, dtype=torch.float64), torch.nn.SiLU()]
                width = h
            layers.append(torch.nn.Linear(width, 1, dtype=torch.float64))
            nets.append(torch.nn.Sequential(*layers))
        self.nets = torch.nn.ModuleList(nets)
        self.single = n_species == 1

    def groups(self, species: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
        """``(order, counts)``: the atoms sorted by species (stable) and the atoms per species, as
        :meth:`forward` groups them; depends on ``species`` only, so a caller evaluating the same
        atoms again may keep it and pass it to :meth:`forward`."""
        order = torch.sort(species, stable=True)[1]
        counts: List[int] = torch.bincount(species, minlength=len(self.nets)).tolist()
        return order, counts

    def forward(self, x: torch.Tensor, species: torch.Tensor,
                groups: Optional[Tuple[torch.Tensor, List[int]]] = None) -> torch.Tensor:
        if self.single:
            for net in self.nets:
                return net(x).squeeze(1)
        # One gather sorts the atoms by species; each net reads its contiguous block (species
        # absent from the structure cost nothing) and one scatter puts the energies back.
        if groups is None:
            groups = self.groups(species)
        order, counts = groups
        blocks = x.index_select(0, order).split(counts)
        out: List[torch.Tensor] = []
        for s, net in enumerate(self.nets):
            if counts[s] > 0:
                out.append(net(blocks[s]).squeeze(1))
        if len(out) == 0:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        y = torch.cat(out)
        return torch.zeros_like(y).index_copy(0, order, y)


class AtomisticModel(torch.nn.Module):
    """Base of the lawful force fields (not used directly).

    Subclasses implement ``_evaluate_batch(batch, forces, stress, training) -> dict``.
    """

    kind = "AtomisticModel"
    __jit_unused_properties__ = ["config", "dtype", "device", "stress_fitted"]

    def __init__(self, species: Sequence, cutoff: float):
        super().__init__()
        self.species = _symbols(species)
        try:
            value = float(cutoff)
        except (TypeError, ValueError):
            value = float("nan")
        if not 0.0 < value < float("inf"):
            raise InputError(f"cutoff must be a positive finite distance in Å, got {cutoff!r}: pass e.g. "
                             "cutoff=4.5.")
        self.cutoff = value
        table = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        for k, s in enumerate(self.species):
            table[atomic_numbers[s]] = k
        self.register_buffer("z_to_index", table)
        n = len(self.species)
        # Per-species reference energies (eV/atom), fitted by least squares before training.
        self.register_buffer("reference_energies", torch.zeros(n, dtype=torch.float64))
        self.training_summary: dict = {}
        #: Smallest interatomic distance (Å) per species pair in the training data, e.g.
        #: ``{"Cu-Cu": 2.21}`` (keys from :func:`lawful.forcefields.batch.pair_key`); set by
        #: :func:`lawful.forcefields.train`, saved in the model file. Empty: unknown (an untrained
        #: model or an old file), and the engine adapters then make no domain check.
        self.pair_min_distance: dict[str, float] = {}
        #: the span of the training compositions (lawful.forcefields.domain.composition_record)
        self.training_compositions: dict = {}
        #: {symbol: [fewest, most]} neighbours within the cutoff in training (domain.neighbour_count_record)
        self.neighbour_counts: dict = {}
        #: {symbol: [lowest, highest]} neighbour density in training (domain.neighbour_density_record);
        #: checked instead of neighbour_counts (files written before it) when present
        self.neighbour_density: dict = {}
        #: total charges (e) of the training structures (domain.charge_record; empty: not recorded)
        self.training_charges: list = []

    # -- configuration -----------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-able) that rebuild this architecture."""
        raise NotImplementedError

    @property
    def stress_fitted(self) -> bool:
        """Whether this model's stress is determined by what it learned. True here: a model whose
        forces and stress are derivatives of its energy gets both from the one fitted energy
        (:class:`~lawful.forcefields.DirectForceModel` overrides this)."""
        return True

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the weights (float64 by default)."""
        return self.reference_energies.dtype

    @property
    def device(self) -> torch.device:
        """The device holding the weights."""
        return self.reference_energies.device

    def _place(self, dtype, device) -> None:
        self.to(dtype=md_dtype(dtype), device=resolve_device(device if device is not None else "cpu"))

    # -- evaluation ---------------------------------------------------------------------------
    def make_batch(self, structures: Sequence, pairs: Sequence | None = None) -> Batch:
        """Batch ``ase.Atoms`` or ``(positions, numbers, cell, pbc)`` tuples for this model
        (checks the input, finds neighbour pairs within the cutoff)."""
        return make_batch(structures, self.z_to_index, self.species, self.cutoff, self.dtype, self.device, pairs)

    def evaluate(self, positions, numbers, cell=None, pbc=None, stress: bool = False,
                 pairs=None) -> dict:
        """Energy, forces (and stress) of one structure.

        positions: (N,3) Å, tensor or array; numbers: (N,) atomic numbers; cell: (3,3) Å with the
        lattice vectors as rows (or None); pbc: bool or 3 bools; None (default) is False for a
        structure without a cell and refused for one with a cell (a box alone could be a
        crystal's or a molecule's: it was read as an isolated cluster; the rule of
        :func:`~lawful.forcefields.batch.structure_args`). ``pairs``: optional ``(i, j,
        shifts)`` neighbour pairs (e.g. from a :class:`~lawful.kernels.neighbors.VerletList`), or
        ``(i, j, shifts, d2)`` already cut to the cutoff (see :func:`~lawful.forcefields.batch.make_batch`).

        Returns ``{"energy": 0-d tensor eV, "forces": (N,3) eV/Å, "energies": (N,) eV,
        "stress": (3,3) eV/Å^3 (if stress=True; ASE sign: (1/V) dE/dstrain)}``, detached, in the
        model's dtype and on its device.
        """
        one = {"positions": positions, "numbers": numbers, "cell": cell}
        if pbc is not None:
            one["pbc"] = pbc
        b = self.make_batch([one], pairs=None if pairs is None else [pairs])
        if pairs is None:   # a caller passing its own pairs (the engine runner) makes its own domain checks
            from lawful.forcefields.domain import warn_outside

            warn_outside(self, b, stacklevel=3)
        out = self.evaluate_batch(b, forces=True, stress=stress)
        res = {"energy": out["energy"][0], "forces": out["forces"], "energies": out["energies"]}
        if stress:
            res["stress"] = out["stress"][0]
        return res

    def evaluate_batch(self, batch: Batch, forces: bool = True, stress: bool = False,
                       training: bool = False) -> dict:
        """Evaluate a :class:`Batch` of B structures.

        Returns ``{"energy": (B,) eV, "energies": (N,) eV, "forces": (N,3) eV/Å (if forces),
        "stress": (B,3,3) eV/Å^3 (if stress)}``. With ``training=True`` the outputs keep their
        graph (forces differentiable w.r.t. the weights); otherwise they are detached. No domain
        or unit-mistake check is made here (training's path, and the engines' after their own
        checks): for structures of your own use :meth:`evaluate` or the function
        :func:`lawful.forcefields.evaluate_batch`, which check and warn.
        """
        if stress and not bool(batch.pbc.all()):
            k = int(torch.nonzero(~batch.pbc.all(dim=1))[0])           # batch.pbc: (B, 3)
            whose = f"structure {k} has " if batch.pbc.shape[0] > 1 else ""
            raise InputError(f"stress needs a periodic cell in all three directions (pbc=True and a cell), but "
                             f"{whose}pbc={batch.pbc[k].tolist()}: a slab or wire has no bulk stress (make it periodic with a vacuum gap "
                             "to get the cell's), and for a molecule ask for energy and forces only.")
        if batch.positions.dtype != self.dtype or batch.positions.device != self.device:
            batch = batch.to(device=self.device, dtype=self.dtype)
        out = self._evaluate_autograd(batch, forces, stress, training)
        if not training:
            out = {k: v.detach() for k, v in out.items()}
            # one test of everything; each output is tested (for the message) only when it fails
            finite = bool(torch.isfinite(torch.cat([v.reshape(-1) for v in out.values()])).all())
            for k, v in (() if finite else out.items()):
                if not bool(torch.isfinite(v).all()):
                    raise NumericalError(
                        f"the model returned non-finite {k} (NaN/inf) for valid input: its weights or "
                        "normalisation are corrupt (check the model file / the training run).")
        return out

    def _evaluate_autograd(self, batch: Batch, forces: bool, stress: bool, training: bool) -> dict:
        """:meth:`_evaluate_batch` with autograd on: forces and stress are the energy's gradients,
        also inside a caller's ``torch.no_grad()`` or ``torch.inference_mode()`` (whose tensors
        autograd cannot save: copied to normal ones first, and nothing made here, the kept pair
        plan included, becomes an inference tensor). Every evaluation path goes through it."""
        with torch.inference_mode(False), torch.enable_grad():
            if any(t.is_inference() for t in vars(batch).values()):
                batch = Batch(**{k: t.clone() for k, t in vars(batch).items()})
            return self._evaluate_batch(batch, forces, stress, training)

    def _evaluate_batch(self, batch: Batch, forces: bool, stress: bool, training: bool) -> dict:
        raise NotImplementedError

    @staticmethod
    def _volumes(batch: Batch) -> torch.Tensor:
        return torch.linalg.det(batch.cell).abs()

    @classmethod
    def _per_volume(cls, batch: Batch, virial: torch.Tensor) -> torch.Tensor:
        """``virial`` (B, 3, 3) divided by each structure's volume where it is periodic in all three
        directions, NaN elsewhere (no stress is defined there). A batch may mix both (training on
        bulk and clusters): the NaN entries are constants, so the periodic ones' gradients stay
        finite, where dividing by a zero volume put NaN into every gradient."""
        periodic = batch.pbc.all(1)
        vol = torch.where(periodic, cls._volumes(batch), torch.ones_like(periodic, dtype=virial.dtype))
        return torch.where(periodic.view(-1, 1, 1), virial / vol.view(-1, 1, 1),
                           torch.full_like(virial, float("nan")))

    # -- persistence --------------------------------------------------------------------------
    def save(self, path, training_summary: dict | None = None):
        """Write the model to ``path`` (a ``.lawful`` file; safetensors weights + JSON config,
        written atomically). Load it back with :func:`lawful.forcefields.load_model`."""
        from lawful.forcefields.model_io import save_model

        return save_model(self, path, training_summary=training_summary)

    def extra_repr(self) -> str:
        return f"species={self.species}, cutoff={self.cutoff}"
