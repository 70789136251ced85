"""Unit constants for the engine adapters: a re-export of :mod:`lawful.kernels.units`, the one
place they are defined (CODATA 2018 from ``ase.units``, checked against ``openmm.unit``)."""

from lawful.kernels.units import *  # noqa: F401,F403
from lawful.kernels.units import __all__  # noqa: F401
