"""lawful.forcefields — energy-conserving neural force fields, their non-conservative control,
Hamiltonian/Lagrangian networks, integrators, training, data and model files.

Imports lawful.kernels only.
"""

__all__: list[str] = []
