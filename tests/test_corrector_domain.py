"""A trained corrector knows what it was trained on, and says so wherever it is bound (audit F4).

The five committed benchmark correctors carry ``trained_on`` (Kármán, n=16, 4 cells across the
cylinder, Re 100-200); an older file with only ``training.train_cases`` gets its domain from them;
``corrector.bind(scene)`` (the Python path) and ``lawful fluid`` (which calls it) warn with
OutOfDomainWarning for another scene, grid or Re, and a Reynolds-conditioned Kármán corrector on
a Kolmogorov scene is refused with an error naming the scene mismatch, not "pass reynolds=...".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from lawful.fluids import correctors, scenes
from lawful.fluids.correctors import check_training_domain, load_corrector, training_domain
from lawful.kernels.errors import InputError, OutOfDomainWarning

MODELS = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
COMMITTED = sorted(MODELS.glob("corrector_karman_*.lawful"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_the_committed_correctors_record_their_training_domain(path):
    trained = load_corrector(path).metadata["trained_on"]
    assert {k: trained[k] for k in ("scene", "n", "cells_per_diameter", "re", "diameter", "velocity", "dt")} == \
        {"scene": "karman", "n": 16, "cells_per_diameter": 4.0, "re": [100.0, 200.0], "diameter": 0.25,
         "velocity": 1.0, "dt": 0.03125}
    from lawful.fluids.correctors import scene_domain
    from lawful.fluids.fine_reference import TRAIN_CASES, coarse_scene

    assert {k: trained[k] for k in ("diameter", "velocity", "dt")} == \
        {k: scene_domain(coarse_scene(TRAIN_CASES[0]))[k] for k in ("diameter", "velocity", "dt")}


@pytest.mark.parametrize("metadata, expected", [
    ({"trained_on": {"scene": "karman", "n": 16, "cells_per_diameter": 4.0, "re": [100.0, 200.0]}},
     {"scene": "karman", "n": 16, "cells_per_diameter": 4.0, "re": [100.0, 200.0]}),
    ({"scene": "karman", "training": {"train_cases": ["karman_re100_n16", "karman_re200_n16"]}},
     {"scene": "karman", "n": 16, "cells_per_diameter": None, "re": [100.0, 200.0]}),
    ({"training": {"train_cases": ["kolmogorov_s0_n32"]}},
     {"scene": "kolmogorov", "n": 32, "cells_per_diameter": None, "re": None}),
    ({"training": {"train_cases": ["something else"]}}, None),
    ({}, None),
])
def test_training_domain_from_the_record_or_the_train_cases(metadata, expected):
    assert training_domain(metadata) == expected


def _bind(corr, scene):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        corr.bind(scene)
    return [str(w.message) for w in seen if issubclass(w.category, OutOfDomainWarning)]


# scene built, expected warning text (None: inside the domain)
TRAINED = dict(n=16, aspect=2, diameter=0.25)     # fine_reference.coarse_scene(TRAIN_CASES[0]): inflow 1, dt dx/2
BIND = [
    (dict(name="karman", re=150.0, **TRAINED), None),
    (dict(name="karman", re=150.0, n=64), "4 cells across the cylinder (this run: 8"),   # the audit's run
    (dict(name="karman", re=1000.0, **TRAINED), "Re 100-200 (this run: 1000)"),
    (dict(name="lid_driven_cavity", re=150.0, n=16), "scene karman (this run: lid_driven_cavity)"),
    # the same dimensionless flow at another velocity scale or step (units audit F1: cl -0.710 for -0.184)
    (dict(name="karman", re=150.0, inflow=2.0, **TRAINED), "reference velocity U = 1 (this run: 2"),
    (dict(name="karman", re=150.0, dt=0.015625, **TRAINED), "time step dt = 0.03125 (this run: 0.015625"),
    (dict(name="karman", re=150.0, n=32, aspect=2, diameter=0.125),    # 4 cells across, half the blockage
     "a cylinder of 0.25 channel heights (this run: 0.125"),
]


@pytest.mark.parametrize("build, text", BIND)
def test_bind_warns_outside_the_training_domain(build, text):
    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    scene = scenes.make(build.pop("name"), **build)
    said = _bind(corr, scene)
    assert (said == []) if text is None else (len(said) == 1 and text in said[0]), said
    assert corr.reynolds == scene.params["re"]   # bind still takes the scene's Reynolds number
    if text:
        assert "corrector_karman_hard.lawful" in said[0]


def test_a_file_with_only_train_cases_warns_too(tmp_path):
    corr = correctors.DivergenceFreeCorrector.for_scene(scenes.make("karman", n=16))
    corr.save(tmp_path / "old.lawful", metadata={"scene": "karman",
                                                 "training": {"train_cases": ["karman_re100_n16"]}})
    said = _bind(load_corrector(tmp_path / "old.lawful"), scenes.make("karman", n=32, re=400.0))
    assert len(said) == 1 and "n=16 (this run: n=32" in said[0] and "Re 100-100 (this run: 400)" in said[0]
    assert check_training_domain(correctors.DivergenceFreeCorrector.for_scene(scenes.make("karman", n=16)),
                                 scenes.make("karman", n=64)) == []   # no record: nothing to compare


def test_a_karman_corrector_on_kolmogorov_names_the_scene_mismatch(tmp_path, capsys):
    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    with pytest.raises(InputError, match=r"trained on the karman scene\) but the scene 'kolmogorov' has none: a "
                                         r"corrector trained on karman does not apply to kolmogorov; use a corrector "
                                         r"trained on kolmogorov \(lawful train-corrector --scene kolmogorov\)"):
        corr.bind(scenes.make("kolmogorov", n=16))
    from lawful.integrations.cli import main

    assert main(["fluid", "--scene", "kolmogorov", "--n", "16", "--steps", "1", "--frame-every", "0",
                 "--corrector", str(MODELS / "corrector_karman_hard.lawful"), "--out", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "does not apply to kolmogorov" in err and "pass reynolds=" not in err


def test_lawful_fluid_warns_for_a_committed_corrector_on_another_grid(tmp_path):
    from lawful.integrations.cli import main

    # --n given, the cylinder (0.25 channel heights) from the file's record: 16 cells across it
    with pytest.warns(OutOfDomainWarning, match=r"4 cells across the cylinder \(this run: 16"):
        assert main(["fluid", "--scene", "karman", "--re", "150", "--n", "64", "--steps", "1", "--frame-every", "0",
                     "--corrector", str(MODELS / "corrector_karman_hard.lawful"), "--out", str(tmp_path / "c")]) == 0


def test_lawful_fluid_can_run_a_corrector_on_the_scene_it_was_trained_on(tmp_path):
    """No lawful fluid setting matched a train-corrector corrector (cylinder 0.25 in a 2:1
    channel at n = 16; lawful fluid built 0.125 in 4:1): the README's own example warned (corrector
    audit M2). --diameter and --aspect set the channel; the README's line runs in domain."""
    import warnings

    from lawful.integrations.cli import main

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["fluid", "--scene", "karman", "--n", "16", "--aspect", "2", "--diameter", "0.25", "--re", "150",
                     "--steps", "2", "--frame-every", "0", "--corrector", str(MODELS / "corrector_karman_hard.lawful"),
                     "--out", str(tmp_path / "k")]) == 0
    assert [str(w.message) for w in seen if issubclass(w.category, OutOfDomainWarning)] == []
    # a first-hour user names only the file: its training record sets the scene, grid and cylinder
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["fluid", "--re", "150", "--steps", "2", "--frame-every", "0",
                     "--corrector", str(MODELS / "corrector_karman_hard.lawful"), "--out", str(tmp_path / "d")]) == 0
    assert [str(w.message) for w in seen if issubclass(w.category, OutOfDomainWarning)] == []
    assert main(["fluid", "--scene", "taylor_green", "--n", "16", "--aspect", "2", "--steps", "1",
                 "--out", str(tmp_path / "t")]) == 2          # the channel's geometry only for karman


@pytest.mark.parametrize("bind_first", [False, True])
def test_run_warns_too_and_once_with_bind(bind_first):
    """``run(scene, corrector=...)`` without bind() made no check; with both, one warning."""
    import warnings

    from lawful.fluids import run

    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    scene = scenes.make("karman", re=150.0, n=64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if bind_first:
            corr.bind(scene)
        else:
            corr.reynolds = 150.0          # what bind() would set: the Reynolds number the network reads
        run(scene, 1, corrector=corr)
    said = [str(w.message) for w in seen if issubclass(w.category, OutOfDomainWarning)]
    assert len(said) == 1 and "4 cells across the cylinder (this run: 8" in said[0]


def test_run_feeds_the_network_the_scenes_reynolds_number():
    """A corrector bound to Re 100 and run on a Re 150 scene read Re 100 (velocities 0.18 off, cd
    1.915 for 1.954, no warning: units audit F2); run() binds it to the scene's."""
    import torch

    from lawful.fluids import run

    results = {}
    for first in (100.0, 150.0):
        corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
        corr.bind(scenes.make("karman", re=first, **TRAINED))
        scene = scenes.make("karman", re=150.0, **TRAINED)
        run(scene, 20, corrector=corr)
        assert corr.reynolds == 150.0
        results[first] = scene.state.u.clone()
    assert torch.equal(results[100.0], results[150.0])


def _out_of_domain(action):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in seen if issubclass(w.category, OutOfDomainWarning)]


def test_a_resaved_corrector_keeps_its_training_record(tmp_path):
    """corrector.save(path) wrote an empty record: a committed corrector converted to float64 and
    saved again ran at Re 400, 8 cells across the cylinder and U = 2 without a warning (corrector
    audit S1). save() keeps the corrector's own record; a new record that drops trained_on warns."""
    import torch

    corr = load_corrector(MODELS / "corrector_karman_hard.lawful").to(torch.float64)
    corr.save(tmp_path / "f64.lawful")
    again = load_corrector(tmp_path / "f64.lawful")
    assert again.metadata == load_corrector(MODELS / "corrector_karman_hard.lawful").metadata
    said = _out_of_domain(lambda: again.bind(scenes.make("karman", re=400.0, n=32, inflow=2.0)))
    assert len(said) == 1 and "Re 100-200 (this run: 400)" in said[0]
    with pytest.warns(UserWarning, match=r"without the training record it was loaded with"):
        corr.save(tmp_path / "bare.lawful", metadata={"note": "mine"})


def test_a_scene_changed_after_bind_is_checked_again():
    """The check was remembered by the scene object: halving its dt after bind() ran unwarned."""
    from dataclasses import replace

    from lawful.fluids import run

    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    scene = scenes.make("karman", re=150.0, **TRAINED)
    assert _out_of_domain(lambda: corr.bind(scene)) == []
    scene.config = replace(scene.config, dt=scene.config.dt / 2)
    said = _out_of_domain(lambda: run(scene, 1, corrector=corr))
    assert len(said) == 1 and "time step dt = 0.03125 (this run: 0.015625" in said[0]


def test_run_checks_the_solver_that_runs_not_the_scenes_config():
    """run(scene, solver=...) compared the scene's dt (in domain) while the solver ran at half of
    it; a solver at twice the viscosity runs the scene at half its Reynolds number."""
    from lawful.fluids import run

    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    scene = scenes.make("karman", re=150.0, **TRAINED)
    said = _out_of_domain(lambda: run(scene, 1, corrector=corr, solver=scene.make_solver(dt=scene.config.dt / 2)))
    assert len(said) == 1 and "(this run: 0.015625" in said[0]
    scene = scenes.make("karman", re=150.0, **TRAINED)
    said = _out_of_domain(lambda: run(scene, 1, corrector=corr,
                                      solver=scene.make_solver(viscosity=2 * scene.config.viscosity)))
    assert corr.reynolds == pytest.approx(75.0)
    assert len(said) == 1 and "Re 100-200 (this run: 75)" in said[0]


@pytest.mark.parametrize("how", ["run_pair", "solver_step"])
def test_a_corrector_run_outside_a_scene_warns_that_it_was_not_checked(how):
    """run((state, config)) and a bare Solver.step know no scene: a corrector bound to Re 100 ran a
    Re 150 flow at Re 100 (3.7 % off after 150 steps, no warning: corrector audit S2)."""
    from lawful.fluids import run

    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    corr.bind(scenes.make("karman", re=100.0, **TRAINED))
    other = scenes.make("karman", re=150.0, **TRAINED)

    def go():
        if how == "run_pair":
            run((other.state, other.config), 2, corrector=corr)
        else:
            solver = other.make_solver()
            for _ in range(2):
                solver.step(other.state, corr)

    said = _out_of_domain(go)
    assert len(said) == 1 and "never checked" in said[0] and "Re = 100" in said[0] and "bind(scene)" in said[0]
    mine = scenes.make("karman", re=150.0, **TRAINED)     # bound to its own scene: no warning
    corr.bind(mine)
    assert _out_of_domain(lambda: mine.make_solver().step(mine.state, corr)) == []


@pytest.mark.parametrize("build, text", [
    (dict(viscosity=1e-3), "viscosity 0.01 (this run: 0.001)"),           # lawful fluid's default
    (dict(viscosity=0.01, wavenumber=2), "wavenumber 4 (this run: 2)"),
    (dict(viscosity=0.01, forcing=3.0, drag=0.0), "linear drag 0.1 (this run: 0)"),
    (dict(viscosity=0.01), None),
])
def test_a_kolmogorov_corrector_records_the_flow_it_learned(tmp_path, build, text):
    """A scene without a Reynolds number recorded nothing that sets its flow: a corrector trained
    at nu = 0.01 (lawful train-corrector's default) ran unwarned at lawful fluid's nu = 1e-3."""
    from lawful.fluids.correctors import scene_domain

    trained = scenes.make("kolmogorov", n=16, viscosity=0.01)
    corr = correctors.DivergenceFreeCorrector.for_scene(trained)
    corr.save(tmp_path / "k.lawful", metadata={"trained_on": scene_domain(trained)})
    said = _out_of_domain(lambda: load_corrector(tmp_path / "k.lawful").bind(scenes.make("kolmogorov", n=16, **build)))
    assert said == [] if text is None else (len(said) == 1 and text in said[0]), said


@pytest.mark.parametrize("change, text", [("viscosity", "viscosity 0.0166667 (checked: 0.00166667)"),
                                          ("dt", "time step 0.015625 (checked: 0.03125)"),
                                          # audit w22: drag and buoyancy drive the flow too (not compared)
                                          ("drag", "linear drag 0.5 (checked: 0)")])
def test_a_solver_other_than_the_checked_one_warns_on_the_bound_scenes_state(change, text):
    """Bound in domain at Re 150, then stepped by a Solver at ten times the viscosity (the flow at
    Re 15 while the network reads 150) or half the step: no warning (review of 173f77a)."""
    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    scene = scenes.make("karman", re=150.0, **TRAINED)
    assert _out_of_domain(lambda: corr.bind(scene)) == []
    value = {"viscosity": 10 * scene.config.viscosity, "dt": scene.config.dt / 2, "drag": 0.5}[change]
    solver = scene.make_solver(**{change: value})

    def steps():
        for _ in range(3):
            solver.step(scene.state, corr)

    said = _out_of_domain(steps)
    assert len(said) == 1 and text in said[0] and "bind(scene, solver.config)" in said[0], said
    assert _out_of_domain(lambda: scene.make_solver().step(scene.state, corr)) == []   # the checked solver


def test_a_copy_of_a_checked_corrector_starts_unchecked():
    """A deep copy carried the memo of the original's state (a 'never checked' warning for an
    identical, in-domain copy stepped with a copied scene): a copy starts unchecked and is bound
    like a fresh one (review of 173f77a)."""
    import copy

    from lawful.fluids import run

    corr = load_corrector(MODELS / "corrector_karman_hard.lawful")
    scene = scenes.make("karman", re=150.0, **TRAINED)
    corr.bind(scene)
    twin = copy.deepcopy(corr)
    assert "_domain_checked" not in twin.__dict__ and "_domain_checked" in corr.__dict__
    other = copy.deepcopy(scene)
    assert _out_of_domain(lambda: run(other, 2, corrector=twin)) == []
