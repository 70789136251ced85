"""lawful.kernels — the base layer: Taichi runtime, dtype/device policy, errors, and the compute
kernels (neighbour lists, grid stencils, constraint strategies, model files) both sides stand on.

Imports no other lawful layer.
"""

from lawful.kernels.errors import (
    BackendError,
    ConvergenceError,
    InputError,
    LawfulError,
    ModelFileError,
    NumericalError,
    OutOfDomainWarning,
    ShapeError,
    UnsupportedSpeciesError,
)
from lawful.kernels.precision import (
    FLUID_DTYPE,
    MD_DTYPE,
    fluid_dtype,
    md_dtype,
    resolve_device,
    resolve_dtype,
)
from lawful.kernels.runtime import ensure_taichi, taichi_arch

__all__ = [
    "LawfulError", "InputError", "ShapeError", "UnsupportedSpeciesError", "ModelFileError",
    "NumericalError", "ConvergenceError", "BackendError", "OutOfDomainWarning",
    "MD_DTYPE", "FLUID_DTYPE", "md_dtype", "fluid_dtype", "resolve_dtype", "resolve_device",
    "ensure_taichi", "taichi_arch",
]

# constraint strategies (owner: hamiltonian) — shared by force-field and fluid-corrector training
from lawful.kernels.constraints import AugmentedLagrangian, SoftPenalty  # noqa: E402

__all__ += ["SoftPenalty", "AugmentedLagrangian"]

# neighbour lists, model files, checkpoints (owner: neighbours)
from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from lawful.kernels.modelfile import (  # noqa: E402
    FORMAT_VERSION,
    ModelFile,
    atomic_write,
    load_model_file,
    save_model_file,
)
from lawful.kernels.neighbors import NeighborList, VerletList, neighbor_list  # noqa: E402

__all__ += ["neighbor_list", "NeighborList", "VerletList", "save_model_file", "load_model_file",
            "ModelFile", "FORMAT_VERSION", "atomic_write", "save_checkpoint", "load_checkpoint"]

# MAC-grid fluid kernels (owner: fluids) — Taichi is only imported when a kernel first runs
from lawful.kernels.mac_grid import Boundary, face_bc, solid_corner_mask  # noqa: E402
from lawful.kernels.mac_operators import curl, curl_torch, divergence, divergence_torch  # noqa: E402
from lawful.kernels.mac_pressure import PressureSolver, ProjectionStats  # noqa: E402

__all__ += ["Boundary", "face_bc", "solid_corner_mask", "curl", "curl_torch", "divergence",
            "divergence_torch", "PressureSolver", "ProjectionStats"]
