"""lawful.forcefields — energy-conserving neural force fields, their non-conservative control,
Hamiltonian/Lagrangian networks, integrators, training, data and model files.

Imports lawful.kernels only.

* :class:`NeuralPotential` — learns one smooth energy; forces and stress are its exact derivatives.
* :class:`DirectForceModel` — the non-conservative control (forces from their own output head).
* :func:`train` — fits either model to labelled structures (energy + force (+ stress) loss);
  :func:`refit_reference_energies` re-balances a trained model's per-species energy offsets.
* :func:`evaluate_batch` — energies/forces/stress of many structures in one call (screening).
* :func:`load_model` / ``model.save`` — the safe ``.lawful`` model files; shipped models by name
  (:func:`shipped_models`: ``"cu-emt"``, ``"cu-emt-direct"``, ``"organic-xtb"``, ``"organic-xtb-direct"``).
  :func:`load_dynamics_model` reads the same files for HNN/LNN/baseline models (``model.save``).
* :func:`export_torchscript` — a scripted energy + forces module for openmm-torch.
* :func:`gradient_check` — forces/stress against finite differences of the energy.
* :mod:`lawful.forcefields.reference` — labelled reference data (EMT, Lennard-Jones, OpenMM).
"""

from lawful.forcefields.direct import DirectForceModel
from lawful.forcefields.gradcheck import gradient_check
from lawful.forcefields.model_io import load_model, save_model
from lawful.forcefields.potential import NeuralPotential, TorchScriptPotential, export_torchscript
from lawful.forcefields.shipped import shipped_models
from lawful.forcefields.training import refit_reference_energies, train
from lawful.forcefields.batch import evaluate_batch  # noqa: E402

__all__: list[str] = [
    "NeuralPotential", "DirectForceModel", "train", "refit_reference_energies", "load_model", "save_model",
    "export_torchscript", "TorchScriptPotential", "gradient_check", "shipped_models",
    "evaluate_batch",
]

# Hamiltonian / Lagrangian networks, their baseline, integrators (owner: hamiltonian)
from lawful.forcefields.derivative_mlp import DerivativeMLP  # noqa: E402
from lawful.forcefields.dynamics_training import train_dynamics  # noqa: E402
from lawful.forcefields.hamiltonian import HamiltonianNN  # noqa: E402
from lawful.forcefields.integrators import energy_drift, integrate  # noqa: E402
from lawful.forcefields.lagrangian import LagrangianNN  # noqa: E402
from lawful.forcefields.model_io import load_dynamics_model  # noqa: E402

__all__ += ["HamiltonianNN", "LagrangianNN", "DerivativeMLP", "integrate", "energy_drift",
            "train_dynamics", "load_dynamics_model"]

# alanine dipeptide conformers (C7eq, C5, restrained alphaR) minimised with any ASE calculator
from lawful.forcefields.conformers import conformer_start, minimise_conformers  # noqa: E402

__all__ += ["conformer_start", "minimise_conformers"]
