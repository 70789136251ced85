"""The openmm-ml way in: ``MLPotential("lawful", model=path)``.

lawful registers :class:`LawfulPotentialImplFactory` in the entry-point group
``openmmml.potentials`` under the name ``"lawful"``, so with openmm-ml installed:

>>> from openmmml import MLPotential
>>> potential = MLPotential("lawful", model="cu.lawful")            # or a model object
>>> system = potential.createSystem(topology, removeCMMotion=False)  # NVE: no CMMotionRemover
>>> mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)   # ML/MM

Keyword arguments of ``MLPotential(...)``: ``model`` (required: a ``.lawful`` path, a shipped
model's name or a model), ``precision`` ("single" | "double", as openmm-ml's MACE potential) or
``dtype``, ``device``, ``backend`` ("auto" | "python" | "torch"), ``skin`` (Å), ``strict``.
``createSystem`` / ``createMixedSystem`` take ``precision``, ``device``, ``backend``, ``skin``,
``strict`` and ``charge`` (the ML atoms' total charge in e, as openmm-ml's other potentials take
it); a misspelled keyword is an :class:`InputError` listing the accepted ones. The models have no
charge input, so the charge is checked against the charges the model was trained on (a warning, or
an error with ``strict``): ``createSystem`` takes it as given (default 0, openmm-ml's convention);
``createMixedSystem`` by default takes the sum of the ML atoms' charges in the classical System
(rounded to whole e), so a charged ML region (a lysine, +1, through a model trained on neutral
molecules) is not passed over in silence. The forces are made by
:func:`lawful.integrations.openmm.create_force` (whose ``backend`` rules apply: "auto" keeps a model
that records its training domain on the python backend, which checks it). lawful models are short-ranged (no long-range
electrostatics), which :meth:`LawfulPotentialImpl.getMLLongRange` tells openmm-ml's embeddings.
"""

from __future__ import annotations

import torch
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from lawful.integrations.runner import model_dtype, resolve_model
from lawful.kernels.errors import InputError
from lawful.kernels.precision import resolve_dtype

__all__ = ["LawfulPotentialImplFactory", "LawfulPotentialImpl", "mm_charge"]


#: keywords of ``createSystem`` / ``createMixedSystem`` this potential reads
CREATE_KEYWORDS = ("precision", "device", "backend", "skin", "strict", "charge")
#: keywords openmm-ml's own embeddings pass through to ``addForces`` (read by openmm-ml, not here)
EMBEDDING_KEYWORDS = ("mlLongRange", "linkAtomDistances")
#: keywords of ``MLPotential("lawful", ...)``
POTENTIAL_KEYWORDS = ("model", "precision", "dtype", "device", "backend", "skin", "strict")
PRECISIONS = {"single": torch.float32, "double": torch.float64, None: None}


def _precision_dtype(precision):
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r} is not one of {list(PRECISIONS)}: 'single' (float32), "
                         "'double' (float64) or None (the model's own).")
    return PRECISIONS[precision]


def _charge_value(charge) -> int:
    """``charge`` (the ML atoms' total charge, e) as an int; InputError for a non-integer."""
    import numbers

    if isinstance(charge, bool) or not isinstance(charge, numbers.Real) or charge != round(charge):
        raise InputError(f"charge={charge!r} must be the whole-number total charge (e) of the ML atoms, e.g. "
                         "charge=0 or charge=1.")
    return int(round(charge))


def mm_charge(system, atoms) -> int:
    """The total charge (e) of ``atoms`` in ``system``'s ``NonbondedForce`` (all of them summed;
    0 without one), rounded to whole e as the ASE side rounds initial charges: the charge of the ML
    region :meth:`LawfulPotentialImpl.createMixedSystem` checks when ``charge=`` is not given."""
    import openmm
    from openmm import unit

    total = 0.0
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            total += sum(force.getParticleParameters(int(i))[0].value_in_unit(unit.elementary_charge)
                         for i in atoms)
    return int(round(total))


def _check_keywords(args: dict, accepted, where: str) -> None:
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise InputError(f"unknown keyword(s) {unknown} for {where}: the 'lawful' potential accepts "
                         f"{sorted(accepted)}; check the spelling.")


def _keep_molecules_whole(topology, system, atoms, force_group: int) -> None:
    """A zero-energy ``CustomBondForce`` over the topology's bonds among ``atoms`` (None: all).

    OpenMM finds molecules from the bonds its forces report; a PythonForce or TorchForce reports
    none and openmm-ml removes the ML region's MM bonds, so every ML atom was a molecule of its
    own: wrapped output (``getState(enforcePeriodicBox=True)``, DCD/PDB reporters) tore the solute
    apart (φ/ψ read (82.5, −98.1) for (−80, 75)) and a barostat scaled its atoms apart."""
    import openmm

    ml = None if atoms is None else set(int(i) for i in atoms)
    keep = openmm.CustomBondForce("0")
    keep.setName("LawfulMoleculeBonds")
    keep.setForceGroup(int(force_group))
    for a, b in topology.bonds():
        if ml is None or (a.index in ml and b.index in ml):
            keep.addBond(a.index, b.index, [])
    if keep.getNumBonds():
        system.addForce(keep)


class LawfulPotentialImplFactory(MLPotentialImplFactory):
    """openmm-ml factory for the ``"lawful"`` potential (registered by entry point)."""

    def createImpl(self, name: str, **args) -> "LawfulPotentialImpl":
        """Build the implementation; ``model`` is a ``.lawful`` path, a shipped model's name or a
        lawful model object. Unknown keywords are an :class:`InputError` listing the accepted ones."""
        _check_keywords(args, POTENTIAL_KEYWORDS, 'MLPotential("lawful", ...)')
        return LawfulPotentialImpl(name, **args)


class LawfulPotentialImpl(MLPotentialImpl):
    """openmm-ml implementation of the ``"lawful"`` potential.

    The model is loaded (and checked) when the ``MLPotential`` is created, so a missing or
    invalid file fails at once with :class:`lawful.kernels.ModelFileError`. ``precision``
    ("single" -> float32, "double" -> float64, None -> the model's own) and ``dtype`` say the same
    thing; give one. ``device``: a torch device (None: the model's own; openmm-ml's own potentials
    pick CUDA when available, lawful keeps the model where it is unless told).
    """

    def __init__(self, name: str, model=None, precision=None, dtype=None, device=None, backend: str = "auto",
                 skin: float = 0.5, strict: bool = False):
        if model is None:
            raise InputError('MLPotential("lawful") needs a model: MLPotential("lawful", model="cu-emt") or '
                             'model="path/to/model.lawful".')
        p_dtype = _precision_dtype(precision)
        if p_dtype is not None and dtype is not None and resolve_dtype(dtype) != p_dtype:
            raise InputError(f"precision={precision!r} and dtype={dtype!r} disagree: give one of them.")
        self.name = name
        self.model = resolve_model(model, device=device, dtype=p_dtype if p_dtype is not None else dtype)
        # what was passed, so a precision asked for later is made from it, not from this (maybe
        # rounded) copy: "single" here then "double" in createSystem gave float32-rounded weights
        self._source, self._device = model, device
        self.backend = backend
        self.skin = float(skin)
        self.strict = bool(strict)

    def addForces(self, topology, system, atoms, forceGroup: int, **args) -> None:
        """Add the lawful force for ``atoms`` (None: all) of ``topology`` to ``system``.

        Keywords (from ``createSystem`` / ``createMixedSystem``): ``precision`` ("single" |
        "double" | None), ``device``, ``backend``, ``skin`` (Å), ``strict``, ``charge`` (the total
        charge of ``atoms`` in e, default 0; checked against the model's training charges by
        :func:`lawful.integrations.openmm.create_force`); anything else (but
        the embedding keywords openmm-ml itself reads) is an :class:`InputError`. The topology's box
        decides periodicity; a System that uses periodic boundary conditions with a topology
        without box vectors is an :class:`InputError` (the two disagree), and a periodic System
        whose box was never set is refused when first evaluated.
        """
        from lawful.integrations.openmm import create_force

        _check_keywords(args, CREATE_KEYWORDS + EMBEDDING_KEYWORDS, "createSystem/createMixedSystem")
        if system.usesPeriodicBoundaryConditions() and topology.getPeriodicBoxVectors() is None:
            raise InputError(
                "the System uses periodic boundary conditions but the topology has no box vectors, so the "
                "lawful force cannot know the box it should see: set topology.setPeriodicBoxVectors(...) to "
                "the System's box, or make the classical System non-periodic."
            )
        dtype = _precision_dtype(args.get("precision"))
        model = self.model
        if dtype is not None and dtype != model_dtype(model):
            model = resolve_model(self._source, device=self._device, dtype=dtype)
        force = create_force(
            model, topology=topology, atoms=None if atoms is None else list(atoms), periodic=None,
            backend=args.get("backend", self.backend), skin=args.get("skin", self.skin), force_group=forceGroup,
            device=args.get("device"), dtype=dtype, strict=args.get("strict", self.strict),
            charge=_charge_value(args.get("charge", 0)),
        )
        system.addForce(force)
        _keep_molecules_whole(topology, system, atoms, forceGroup)

    def getSupportedEmbeddings(self) -> list[str]:
        """Every embedding openmm-ml offers: lawful checks the ML atoms and keywords first
        (:meth:`createMixedSystem`), then hands over to openmm-ml's own embedding plugin."""
        from openmmml.mlpotential import MLPotential

        return sorted(MLPotential._embeddingFactories)

    def createMixedSystem(self, topology, system, atoms, forceGroup: int, interpolate: bool, embedding: str,
                          returnInfo: bool = False, **args):
        """openmm-ml's mixed System, after checking what its embeddings would otherwise meet as a
        C++ assertion: the ML atom indices (in range, unique, non-negative), that the topology and
        the System have the same particles, that a topology with a box comes with a periodic System
        (the lawful force follows the box, so the ML atoms saw their images while a NoCutoff MM
        part did not), and the keywords. Without ``charge=`` the ML region's
        charge is its atoms' total charge in ``system`` (:func:`mm_charge`): a charged region warns
        (or, with ``strict``, raises) when the model was not trained on that charge; before, every
        region was taken as neutral without a word."""
        from openmmml.mlpotential import MLPotential

        from lawful.integrations.openmm import _subset

        _check_keywords(args, CREATE_KEYWORDS + EMBEDDING_KEYWORDS, "createMixedSystem")
        n = system.getNumParticles()
        if topology.getNumAtoms() != n:
            raise InputError(f"the topology has {topology.getNumAtoms()} atoms but the System has {n} particles: "
                             "pass the System made from this topology.")
        atoms = _subset(atoms, n, "the System")
        if topology.getPeriodicBoxVectors() is not None and not system.usesPeriodicBoundaryConditions():
            # the lawful force follows the topology's box and would make the mixed System periodic:
            # the ML atoms would meet their periodic images while the MM part stays in vacuum
            raise InputError(
                "the topology has periodic box vectors but the MM System is not periodic (e.g. "
                "nonbondedMethod=NoCutoff), so the ML region would see periodic images that the MM part does not: "
                "make the MM System periodic (nonbondedMethod=PME or CutoffPeriodic) or, for a structure in "
                "vacuum, remove the box (topology.setPeriodicBoxVectors(None)) before creating both Systems.")
        if "charge" not in args:   # the models have no charge input: check the region's own charge
            args["charge"] = mm_charge(system, atoms)
        no_element = [a for a in topology.atoms() if a.element is None]
        if no_element:
            a = no_element[0]
            raise InputError(
                f"the topology has {len(no_element)} particle(s) without an element (the first: {a.name!r} of "
                f"residue {a.residue.name} {a.residue.id}; virtual sites such as TIP4P's EP): openmm-ml's "
                "createMixedSystem reads every atom's element and fails on them (an AttributeError inside "
                "openmm-ml). Use a water model without virtual sites (TIP3P), or build the ML/MM System by hand: "
                "remove the ML atoms' MM terms and add create_force(model, topology=..., atoms=ml_atoms).")
        plugin = MLPotential._embeddingFactories[embedding].createEmbedding(embedding)
        out = plugin.createMixedSystem(self, topology, system, atoms, forceGroup, interpolate,
                                       returnInfo=returnInfo, **args)
        if interpolate:
            # openmm-ml wraps the ML term (with the ML atoms' MM terms) in a CustomCVForce it leaves in
            # group 0, so getState(groups={forceGroup}) read 0 instead of the ML energy
            mixed = out[0] if isinstance(out, tuple) else out
            import openmm

            for force in mixed.getForces():
                if isinstance(force, openmm.CustomCVForce) and any(
                        force.getGlobalParameterName(k) == "lambda_interpolate"
                        for k in range(force.getNumGlobalParameters())):
                    force.setForceGroup(int(forceGroup))
        return out

    def getMLLongRange(self) -> bool:
        """lawful models are local (finite cutoff, no Ewald/PME): always False."""
        return False
