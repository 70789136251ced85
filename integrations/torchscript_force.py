"""The ``backend="torch"`` path of :func:`lawful.integrations.openmm.create_force`: an
``openmmtorch.TorchForce`` running a TorchScript export of a lawful model.

:func:`openmm_torch_module` wraps the model's TorchScript export (from
:func:`lawful.forcefields.export_torchscript`, which computes energy and forces — by autograd inside
the script for the conservative model — from positions in Å) in a scripted module that speaks
openmm-torch's protocol: ``forward(positions [nm], boxvectors [nm]) -> (energy [kJ/mol],
forces [kJ/mol/nm])``, used with ``setOutputsForces(True)``: the forces the script computed
(autograd of its energy) are applied as they are, not differentiated again by openmm-torch (a
``DirectForceModel`` has no export: ``backend="torch"`` refuses it). For an ML/MM subset the module picks the subset's
rows out of the full position array and scatters the forces back (openmm-torch passes every
particle). Units are converted with the constants of :mod:`lawful.integrations.units`, baked into
the module as plain floats.

openmm-torch is optional (a large install: it needs a matching libtorch). A combination seen to run
on CPU here: torch 2.9.1 (CUDA build) + openmmtorch 1.5 + openmm 8.6.1 (conda-forge packages).
Without it, ``create_force(..., backend="torch")`` raises :class:`BackendError`, and
``backend="auto"`` uses the python backend.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from lawful.integrations import units
from lawful.kernels.errors import BackendError, InputError
from lawful.kernels.neighbors import wrap_positions

__all__ = ["openmm_torch_module", "create_torch_force", "OpenMMTorchModule"]


def _import_openmmtorch():
    try:
        import openmmtorch
    except ImportError as exc:
        raise BackendError(
            "backend='torch' needs the optional package openmmtorch (openmm-torch), which is not "
            "installed here: install it with conda (conda install -c conda-forge openmm-torch, matching "
            "your torch), or use backend='python' (openmm.PythonForce, same numbers)."
        ) from exc
    return openmmtorch


def _export_core(model, periodic: bool, strict: bool = False, labels: Optional[List[int]] = None
                 ) -> torch.jit.ScriptModule:
    try:
        from lawful.forcefields import export_torchscript
    except ImportError as exc:
        raise BackendError("lawful.forcefields.export_torchscript is not available: use backend='python'.") from exc
    try:
        return export_torchscript(model, pbc=bool(periodic), strict=bool(strict), labels=labels)
    except (TypeError, InputError) as exc:  # a model without an export (InputError; TypeError before)
        raise BackendError(
            f"backend='torch' needs a TorchScript export, which {type(model).__name__} does not have "
            f"({exc}); use backend='python' (openmm.PythonForce) for this model."
        ) from exc


class OpenMMTorchModule(torch.nn.Module):
    """openmm-torch protocol around a scripted lawful core.

    ``core(positions Å (n,3), numbers (n,), cell Å (3,3)) -> (energy eV 0-d, forces eV/Å (n,3))``
    (:class:`lawful.forcefields.TorchScriptPotential`, its periodicity fixed at export). ``forward(positions nm (P,3), boxvectors nm (3,3)) -> (energy kJ/mol, forces
    kJ/mol/nm (P,3))`` where P is the number of OpenMM particles. For a model in lower precision
    than float64 the positions are wrapped into the box (periodic) and moved to the origin in
    float64 before rounding, as :class:`lawful.integrations.runner.ModelRunner` does.
    """

    def __init__(self, core, numbers: Tensor, subset: Optional[Tensor], n_particles: int, periodic: bool,
                 dtype: torch.dtype, refuse_default_box: bool = True):
        super().__init__()
        self.core = core
        self.register_buffer("numbers", numbers.to(torch.long))
        self.has_subset = subset is not None
        self.register_buffer("subset", subset if subset is not None else torch.zeros(0, dtype=torch.long))
        self.n_particles = int(n_particles)
        self.periodic = bool(periodic)
        self.model_dtype = dtype
        self.length_scale = float(units.ANGSTROM_PER_NM)
        self.energy_scale = float(units.KJMOL_PER_EV)
        self.force_scale = float(units.FORCE_OPENMM_PER_ASE)
        # OpenMM's default box (2 nm cube): a periodic force refuses it unless the topology declares it
        self.refuse_default_box = bool(periodic and refuse_default_box)
        self.register_buffer("default_box", 2.0 * torch.eye(3, dtype=torch.float64))

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if positions.shape[0] != self.n_particles:
            raise RuntimeError("InputError: this lawful force was made for " + str(self.n_particles)
                               + " particles but the System has " + str(positions.shape[0])
                               + ": pass one atomic number per System particle.")
        if self.periodic:
            if boxvectors is None:
                raise RuntimeError("InputError: this lawful force is periodic but OpenMM passed no box: "
                                   "call force.setUsesPeriodicBoundaryConditions(True).")
            box64 = boxvectors.to(torch.float64).cpu()
            if self.refuse_default_box and bool(torch.equal(box64, self.default_box.cpu())):
                raise RuntimeError("InputError: this lawful force is periodic but the Context's box is OpenMM's "
                                   "default 2 nm cube, i.e. the System's box was never set: call "
                                   "system.setDefaultPeriodicBoxVectors(...) with your structure's cell.")
        pos64 = positions.to(torch.float64)
        if self.has_subset:
            pos64 = pos64.index_select(0, self.subset)
        pos64 = pos64 * self.length_scale
        if self.periodic and boxvectors is not None:
            cell64 = boxvectors.to(torch.float64) * self.length_scale
            cell = cell64.to(self.model_dtype)
        else:
            cell64 = torch.zeros(3, 3, dtype=torch.float64, device=pos64.device)
            cell = cell64.to(self.model_dtype)
        if self.model_dtype != torch.float64 and pos64.shape[0] > 0:
            # a lower-precision model: in float64, wrap each atom into the box centred on atom 0
            # along the periodic axes (OpenMM does not wrap: atoms 1e4 cells out kept forces 0.1
            # eV/A off in float32; centred on atom 0, a solute straddling a face stays whole)
            # and move the structure to the origin (a molecule 1e4 A out: 0.04 eV/A), as the
            # python backend's runner does; energies and forces do not see either move
            if self.periodic and boxvectors is not None:
                pos64 = wrap_positions(pos64, cell64, [True, True, True], True)
            pos64 = pos64 - pos64[0]
        pos = pos64.to(self.model_dtype)
        energy, forces = self.core(pos, self.numbers, cell)
        forces = forces * self.force_scale
        if self.has_subset:
            full = torch.zeros(positions.shape[0], 3, dtype=forces.dtype, device=forces.device)
            forces = full.index_copy(0, self.subset, forces)
        return energy * self.energy_scale, forces.to(positions.dtype)


def openmm_torch_module(model, numbers, subset: Optional[List[int]], n_particles: Optional[int],
                        periodic: bool, box_nm=None, strict: bool = False) -> torch.jit.ScriptModule:
    """A scripted :class:`OpenMMTorchModule` for ``model`` acting on ``numbers`` (of the subset, if
    any). Works without openmmtorch (it is plain TorchScript), so it can be checked anywhere.
    ``box_nm``: the topology's box ((3, 3) nm) or None; a periodic module refuses OpenMM's default
    2 nm cube (a System box never set) unless ``box_nm`` is that cube. The core's training-domain
    check names OpenMM particle indices; ``strict``: it raises instead of warning once."""
    core = _export_core(model, periodic, strict, None if subset is None else [int(k) for k in subset])
    dtype = getattr(model, "dtype", torch.float64)
    device = getattr(model, "device", torch.device("cpu"))
    z = torch.as_tensor(list(numbers), dtype=torch.long, device=device)
    sub = None if subset is None else torch.as_tensor(list(subset), dtype=torch.long, device=device)
    if sub is not None and n_particles is None:
        raise InputError("an ML subset with backend='torch' needs the total particle count: pass topology=...")
    n = int(n_particles) if n_particles is not None else int(z.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 flags torch.jit as legacy
        refuse = box_nm is None or not bool(torch.equal(torch.as_tensor(box_nm, dtype=torch.float64),
                                                          2.0 * torch.eye(3, dtype=torch.float64)))
        return torch.jit.script(OpenMMTorchModule(core, z, sub, n, periodic, dtype, refuse_default_box=refuse))


def create_torch_force(model, numbers, subset, n_particles, periodic: bool, box_nm=None, strict: bool = False):
    """An ``openmmtorch.TorchForce`` for ``model`` (raises :class:`BackendError` without openmmtorch)."""
    ot = _import_openmmtorch()
    module = openmm_torch_module(model, numbers, subset, n_particles, periodic, box_nm=box_nm, strict=strict)
    force = ot.TorchForce(module)
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    return force
