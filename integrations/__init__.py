"""lawful.integrations — engine adapters (ASE calculator, OpenMM force, openmm-ml potential), drift
monitors, the ``lawful`` command line and its HTML report.

Imports every layer below; nothing below imports it. Submodules are imported on demand
(``from lawful.integrations.ase import LawfulCalculator``) so that importing this package does not
pull in OpenMM or ASE.
"""

__all__: list[str] = []
