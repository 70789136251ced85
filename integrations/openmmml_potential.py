"""The openmm-ml way in: ``MLPotential("lawful", model=path)``.

lawful registers :class:`LawfulPotentialImplFactory` in the entry-point group
``openmmml.potentials`` under the name ``"lawful"``, so with openmm-ml installed:

>>> from openmmml import MLPotential
>>> potential = MLPotential("lawful", model="cu.lawful")            # or a model object
>>> system = potential.createSystem(topology, removeCMMotion=False)  # NVE: no CMMotionRemover
>>> mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)   # ML/MM

Keyword arguments of ``MLPotential(...)``: ``model`` (required: a ``.lawful`` path or model),
``device``, ``dtype``, ``backend`` ("auto" | "python" | "torch"), ``skin`` (Å). ``backend`` and
``skin`` may also be given to ``createSystem`` / ``createMixedSystem``. The forces are made by
:func:`lawful.integrations.openmm.create_force`. lawful models are short-ranged (no long-range
electrostatics), which :meth:`LawfulPotentialImpl.getMLLongRange` tells openmm-ml's embeddings.
"""

from __future__ import annotations

from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from lawful.integrations.runner import resolve_model
from lawful.kernels.errors import InputError

__all__ = ["LawfulPotentialImplFactory", "LawfulPotentialImpl"]


class LawfulPotentialImplFactory(MLPotentialImplFactory):
    """openmm-ml factory for the ``"lawful"`` potential (registered by entry point)."""

    def createImpl(self, name: str, model=None, **args) -> "LawfulPotentialImpl":
        """Build the implementation; ``model`` is a ``.lawful`` path or a lawful model object."""
        return LawfulPotentialImpl(name, model, **args)


class LawfulPotentialImpl(MLPotentialImpl):
    """openmm-ml implementation of the ``"lawful"`` potential.

    The model is loaded (and checked) when the ``MLPotential`` is created, so a missing or
    invalid file fails at once with :class:`lawful.kernels.ModelFileError`.
    """

    def __init__(self, name: str, model, device=None, dtype=None, backend: str = "auto", skin: float = 0.5):
        if model is None:
            raise InputError('MLPotential("lawful") needs a model: MLPotential("lawful", model="path/to/model.lawful").')
        self.name = name
        self.model = resolve_model(model, device=device, dtype=dtype)
        self.backend = backend
        self.skin = float(skin)

    def addForces(self, topology, system, atoms, forceGroup: int, **args) -> None:
        """Add the lawful force for ``atoms`` (None: all) of ``topology`` to ``system``."""
        from lawful.integrations.openmm import create_force

        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        force = create_force(
            self.model, topology=topology, atoms=None if atoms is None else list(atoms), periodic=periodic,
            backend=args.get("backend", self.backend), skin=args.get("skin", self.skin), force_group=forceGroup,
        )
        system.addForce(force)

    def getMLLongRange(self) -> bool:
        """lawful models are local (finite cutoff, no Ewald/PME): always False."""
        return False
