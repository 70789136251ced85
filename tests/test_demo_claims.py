"""The demo's ``claims_not_shown`` never reads as "every claim shown" for a claim whose number is
missing: a run stopped by strict mode (out of the training domain) or a blow-up has no drift, and
the molecule section used to drop that claim without a word (first-hour audit). Fast: the engines
are replaced by fakes that return the numbers each case needs."""

from types import SimpleNamespace

import numpy as np
import pytest

from lawful.integrations.demo import DemoContext
from lawful.integrations.report import Section


def _drift(value):
    return SimpleNamespace(drift_mev_per_atom_per_ps=value, max_abs_deviation_mev_per_atom=abs(value))


@pytest.fixture
def fake_engines(monkeypatch):
    """Replace every engine call of the molecule section; ``stopped`` names the runs that stop."""
    from lawful.integrations import demo_molecules as dmol
    from lawful.integrations import md, mlmm
    from lawful.kernels.errors import NumericalError

    stopped = set()

    def run_md(atoms, model, engine, **kw):
        name = "direct" if str(model).endswith("organic-xtb-direct.lawful") else "conservative"
        if f"ase_{name}" in stopped:
            raise NumericalError("strict: a pair closer than the training data's (fake)")
        return SimpleNamespace(summary=_drift(0.01 if name == "conservative" else 5.0), steps=kw["steps"],
                               step_seconds=1e-3)

    def run_nve(system, top, start, **kw):
        name = system
        if f"mlmm_{name}" in stopped:
            return SimpleNamespace(summary=None, steps_done=0, wall_s_per_step=0.0,
                                   stopped={"step": 0, "kind": "out_of_domain"})
        return SimpleNamespace(summary=_drift({"all_mm": 0.01, "conservative": 0.01, "direct": 2.0}[name]),
                               steps_done=kw["steps"], wall_s_per_step=1e-3, stopped=None)

    def run_nvt(system, top, start, **kw):
        return SimpleNamespace(phi=np.array([-80.0]), psi=np.array([70.0]), temperature_K=np.array([300.0]),
                               steps_done=kw["steps"], wall_s_per_step=1e-3, out_of_domain_events=0, stopped=None)

    monkeypatch.setattr(md, "run_md", run_md)
    monkeypatch.setattr(mlmm, "alanine_dipeptide_topology", lambda: (None, None))
    monkeypatch.setattr(mlmm, "solvate", lambda top, pos, padding_nm: (SimpleNamespace(getNumAtoms=lambda: 727), None))
    monkeypatch.setattr(mlmm, "mm_system", lambda top: "all_mm")
    monkeypatch.setattr(mlmm, "minimized", lambda *a, **k: None)
    monkeypatch.setattr(mlmm, "mixed_system", lambda top, model, **kw: "direct" if model.endswith(
        "organic-xtb-direct.lawful") else "conservative")
    monkeypatch.setattr(mlmm, "run_nve", run_nve)
    monkeypatch.setattr(mlmm, "run_nvt", run_nvt)
    monkeypatch.setattr(mlmm, "ramachandran_plot", lambda runs, path, title=None: path)
    monkeypatch.setattr(dmol, "_plot", lambda panels, path: path)
    return stopped


@pytest.mark.parametrize("stops", [set(), {"ase_direct"}, {"ase_conservative"}, {"mlmm_conservative"}],
                         ids=["all-complete", "ase-direct-stops", "ase-conservative-stops", "mlmm-conservative-stops"])
def test_a_claim_without_its_number_is_listed_as_not_shown(tmp_path, fake_engines, stops):
    from lawful.integrations.demo_molecules import molecule_section

    fake_engines.update(stops)
    sec = Section("molecules", "t")
    molecule_section(DemoContext(out=tmp_path, mode="quick", log=lambda m: None), sec)
    missed = sec.summary["claims_not_shown"]
    for where, label in (("ase", "ASE in vacuum"), ("mlmm", "OpenMM ML/MM")):
        lost = any(s.startswith(where) for s in stops)
        assert lost is any(c.startswith(label) for c in missed), (where, missed)
    if stops:          # the reader is told why, in the report's text too
        assert any("stopped" in c for c in missed)
        assert any("do not show" in t and "stopped" in t for t in sec.text)


@pytest.mark.parametrize("conservative, shown", [(0.01, True), (0.019, True), (0.1, False)])
def test_the_classical_floor_claim_compares_with_the_all_mm_run(tmp_path, fake_engines, monkeypatch, conservative,
                                                                 shown):
    """"keeps to the classical floor (all-MM run)" was never checked: a conservative run whose energy
    wandered 10x the all-MM run's, but drifted less than the direct model, read as all shown."""
    from lawful.integrations import mlmm
    from lawful.integrations.demo_molecules import molecule_section

    base = mlmm.run_nve

    def run_nve(system, top, start, **kw):
        res = base(system, top, start, **kw)
        if system == "conservative":
            res.summary = _drift(conservative)
        return res

    monkeypatch.setattr(mlmm, "run_nve", run_nve)
    sec = Section("molecules", "t")
    molecule_section(DemoContext(out=tmp_path, mode="quick", log=lambda m: None), sec)
    floor = [c for c in sec.summary["claims_not_shown"] if "all-MM run's excursion" in c]
    assert (not floor) is shown, floor
    assert sec.summary["maxdev_mlmm_all_mm_mev_atom"] == 0.01
