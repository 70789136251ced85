"""Unit constants for the engine adapters: a re-export of :mod:`lawful.kernels.units`, the one
place they are defined (CODATA 2018 from ``ase.units``, checked against ``openmm.unit`` to 1e-12;
kinetic energies of ASE and OpenMM runs agree only to ~8e-9, since ASE's own MD units are CODATA
2014: see that module)."""

from lawful.kernels.units import *  # noqa: F401,F403
from lawful.kernels.units import __all__  # noqa: F401
