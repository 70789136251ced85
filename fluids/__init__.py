"""lawful.fluids — MAC-grid incompressible flow in Taichi, scenes, the divergence-free neural
corrector and its baselines, corrector training and in-loop fluid metrics.

Imports lawful.kernels only.
"""

__all__: list[str] = []
