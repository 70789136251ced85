"""`lawful md`'s summary line under a thermostat does not call its total-energy slope a drift that
measures energy conservation (first-hour audit: the NVT line printed the slope as heat exchanged
with the bath, then "the drift measures energy conservation" on the next line)."""

from lawful.integrations.cli import main


def test_nvt_summary_does_not_call_the_slope_a_conservation_measure(tmp_path, capsys):
    assert main(["md", "--model", "cu-emt", "--ensemble", "nvt", "--repeat", "2", "--steps", "10",
                 "--report-interval", "5", "--out", str(tmp_path / "nvt")]) == 0
    out = capsys.readouterr().out
    assert "total-energy slope" in out and "model accuracy" in out
    assert "the drift measures energy conservation" not in out


def test_the_summary_says_per_atom_means_per_moving_atom_when_atoms_are_fixed(tmp_path, capsys):
    """A structure with FixAtoms: the drift and fluctuation are per moving atom (both engines); the
    summary line said "32 atoms ... meV/atom/ps" as if all 32 counted."""
    import json

    from ase.build import bulk
    from ase.constraints import FixAtoms
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.set_constraint(FixAtoms(indices=range(8)))
    write(tmp_path / "slab.traj", atoms)             # a trajectory keeps the constraint
    for engine in ("ase", "openmm"):
        out = tmp_path / engine
        assert main(["md", "--model", "cu-emt", "--engine", engine, "--structure", str(tmp_path / "slab.traj"),
                     "--steps", "10", "--report-interval", "5", "--out", str(out)]) == 0
        line = [ln for ln in capsys.readouterr().out.splitlines() if "meV/atom/ps" in ln][0]
        assert "32 atoms (8 held fixed; per atom = per moving atom)" in line, line
        assert json.loads((out / "md.json").read_text())["drift"]["n_atoms"] == 24
