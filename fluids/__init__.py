"""lawful.fluids — MAC-grid incompressible flow in Taichi, scenes, the divergence-free neural
corrector and its baselines, corrector training and in-loop fluid metrics.

Imports lawful.kernels only.
"""

from lawful.fluids import scenes
from lawful.fluids.metrics import MetricsWriter, divergence_metrics, plot_metrics, read_metrics_csv, state_metrics
from lawful.fluids.records import RunRecords
from lawful.fluids.scenes import Scene
from lawful.fluids.solver import Solver, SolverConfig, run
from lawful.fluids.state import FluidState

__all__ = [
    "scenes", "Scene", "Solver", "SolverConfig", "run", "FluidState",
    "state_metrics", "divergence_metrics", "MetricsWriter", "plot_metrics", "read_metrics_csv", "RunRecords",
]

# neural correctors (owner: corrector) — divergence-free corrector, baselines, solver-in-the-loop
from lawful.fluids.correctors import DivergenceFreeCorrector, UnconstrainedCorrector, load_corrector  # noqa: E402
from lawful.fluids.torch_step import TorchStep  # noqa: E402

__all__ += ["DivergenceFreeCorrector", "UnconstrainedCorrector", "load_corrector", "TorchStep"]
