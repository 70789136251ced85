"""Draw ``docs/nve_energy.png``, the README's figure: NVE total energy vs time in ASE and OpenMM
for EMT, the shipped conservative NeuralPotential (``cu-emt``) and the shipped direct-force
control (``cu-emt-direct``), all from the same initial state.

Conditions as ``benchmarks/bench_drift.py``: fcc Cu, 108 atoms (3x3x3 cubic cells), Maxwell-Boltzmann
velocities at 600 K (about 300 K after equipartition), dt = 2 fs, 2.5 ps, float64. Run from any
folder: ``.venv/bin/python docs/make_nve_energy.py`` (about a minute of CPU); the MD outputs go to a
temporary folder and the figure next to this script. The drawing is the demo's own
(:func:`lawful.integrations.demo_forcefields._plot`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(out: Path = Path(__file__).resolve().parent / "nve_energy.png", steps: int = 1250) -> Path:
    from ase.build import bulk

    from lawful.integrations.demo_forcefields import _plot
    from lawful.integrations.md import run_md

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("ase", "openmm"):
            for name, model in (("emt", "emt"), ("conservative", "cu-emt"), ("direct", "cu-emt-direct")):
                res = run_md(atoms, model, engine, timestep_fs=2.0, steps=steps, temperature_K=600.0,
                             report_interval=5, out=Path(tmp) / f"{engine}_{name}", seed=0)
                s = res.summary
                print(f"{engine:6s} {name:12s} drift {s.drift_mev_per_atom_per_ps:+.3g} meV/atom/ps, "
                      f"max |E-E0| {s.max_abs_deviation_mev_per_atom:.3g} meV/atom", flush=True)
                runs.append({"engine": engine, "model": name, "csv": str(res.files["drift_csv"])})
        return _plot(runs, len(atoms), out)


if __name__ == "__main__":
    print(main(*(Path(a) for a in sys.argv[1:2])))
