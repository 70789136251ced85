"""The MACE comparison of ``benchmarks/bench_molecules.py``: one metric function for both models
(checked against a hand-computed case and against lawful's own training metric), bad input refused,
and the tiny mode of the parts ``mace``, ``cost``, ``drift`` running end to end, with mace-torch
(skipped without it) and without it (every MACE figure None, the run still complete)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lawful.kernels.errors import InputError, ShapeError

from conftest import load_benchmark  # a benchmark script loaded as a module

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bm():
    return load_benchmark("bench_molecules.py")


def _frame(n, energy, forces):
    a = Atoms("H" * n, positions=np.arange(3 * n, dtype=float).reshape(n, 3))
    a.calc = SinglePointCalculator(a, energy=energy, forces=np.asarray(forces, dtype=float))
    return a


def test_prediction_errors_hand_computed(bm):
    # frame 1: 2 atoms, E_ref 1.0 eV, predicted 1.2 -> |dE|/N = 0.1 eV/atom; force errors 0,0,0, 0.3,0,-0.6
    # frame 2: 1 atom (labels in info/arrays), E_ref -3.0, predicted -3.3 -> 0.3 eV/atom; errors 0.1, 0.2, 0.2
    a = _frame(2, 1.0, [[0, 0, 0], [1, 0, 0]])
    b = Atoms("H", positions=[[0, 0, 0]])
    b.info["energy"], b.arrays["forces"] = -3.0, np.array([[0.0, 0.0, 0.0]])
    pred_f = [np.array([[0, 0, 0], [1.3, 0, -0.6]]), np.array([[0.1, -0.2, 0.2]])]
    r = bm.prediction_errors([a, b], [1.2, -3.3], pred_f)
    assert r["energy_mae_meV_per_atom"] == pytest.approx(1e3 * (0.1 + 0.3) / 2, rel=1e-12)
    assert r["energy_rmse_meV_per_atom"] == pytest.approx(1e3 * math.sqrt((0.01 + 0.09) / 2), rel=1e-12)
    assert r["force_mae_meV_per_A"] == pytest.approx(1e3 * (0.3 + 0.6 + 0.1 + 0.2 + 0.2) / 9, rel=1e-12)
    assert r["force_rmse_meV_per_A"] == pytest.approx(1e3 * math.sqrt((0.09 + 0.36 + 0.01 + 0.04 + 0.04) / 9),
                                                      rel=1e-12)
    assert r["n_frames"] == 2


@pytest.mark.parametrize("case, exc", [
    ("fewer energies", InputError),
    ("fewer forces", InputError),
    ("no frames", InputError),
    ("forces of the wrong shape", ShapeError),
])
def test_prediction_errors_refuses_mismatched_predictions(bm, case, exc):
    frames = [_frame(2, 1.0, np.zeros((2, 3))), _frame(3, 2.0, np.zeros((3, 3)))]
    energies, forces = [1.0, 2.0], [np.zeros((2, 3)), np.zeros((3, 3))]
    if case == "fewer energies":
        energies = energies[:1]
    elif case == "fewer forces":
        forces = forces[:1]
    elif case == "no frames":
        frames, energies, forces = [], [], []
    else:
        forces = [np.zeros((2, 3)), np.zeros((2, 3))]
    with pytest.raises(exc, match="pass"):
        bm.prediction_errors(frames, energies, forces)


def test_prediction_errors_agrees_with_lawfuls_training_metric(bm):
    """The comparison's metric on lawful's calculator predictions equals evaluate_errors (the
    metric lawful's training and the ``errors`` part report), on a few real test frames."""
    from lawful.forcefields import NeuralPotential
    from lawful.forcefields.training import evaluate_errors, prepare

    frames = bm.read_split("ethanol", "test")[:4] + bm.read_split("water-dimer", "test")[:2]
    model = NeuralPotential(bm.SPECIES, cutoff=5.0, n_basis=4, n_radial=3, lmax=2, hidden=(16,), seed=0,
                            dtype=torch.float64)
    ours = bm.prediction_errors(frames, *bm.predict(bm.lawful_calculator(model), frames))
    ref = evaluate_errors(model, prepare(model, frames))
    assert ours["energy_mae_meV_per_atom"] == pytest.approx(1e3 * ref["energy_mae_per_atom"], rel=1e-9)
    assert ours["force_mae_meV_per_A"] == pytest.approx(1e3 * ref["force_mae"], rel=1e-9)
    assert ours["force_rmse_meV_per_A"] == pytest.approx(1e3 * ref["force_rmse"], rel=1e-9)


def test_water_box_is_periodic_whole_and_uncrowded(bm):
    box = bm.water_box(27, 9.0, 0.2, seed=3)
    assert len(box) == 81 and box.pbc.all() and np.allclose(box.cell.lengths(), 9.0)
    d = box.get_all_distances(mic=True)
    mol = np.arange(len(box)) // 3
    inter = d[mol[:, None] != mol[None, :]]
    assert inter.min() > 1.5                                   # no two molecules closer than 1.5 Å
    oh = [d[3 * k, 3 * k + 1] for k in range(27)] + [d[3 * k, 3 * k + 2] for k in range(27)]
    assert np.allclose(oh, oh[0], atol=1e-9) and 0.9 < oh[0] < 1.0   # rigid monomers, O-H ~0.96 Å


def _run_tiny(tmp_path, args: list) -> dict:
    env = dict(os.environ, LAWFUL_BENCH_TINY="1", LAWFUL_BENCH_DIR=str(tmp_path / "results"), OMP_NUM_THREADS="1")
    env.pop("LAWFUL_BENCH_QUICK", None)
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(work.iterdir()) == []                          # nothing written into the working directory
    return json.loads((tmp_path / "results" / "molecules_mace.json").read_text())


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_lawful_figures(fig):
    for system in ("alanine-dipeptide", "water-box"):
        for dtype in ("float64", "float32"):
            row = fig["cost_per_call"][system][dtype]
            for kind in ("lawful_fresh", "lawful_md"):
                assert _finite(row[kind]["median"]) and row[kind]["median"] > 0, (system, dtype, kind)
    for dt in ("0.5fs", "1fs"):
        r = fig["nve_drift"]["lawful"][dt]
        assert r["steps"] == 10 and isinstance(r["in_domain"], bool)
        assert r["blew_up"] or _finite(r["drift_meV_per_atom_per_ps"])
    assert set(fig["verdict"]) >= {"force_mae_ratio", "cost_ratio", "accuracy_goal_met", "cost_goal_met", "shortfall"}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 1e-3)])
def test_torchscript_cost_series_computes_what_the_calculator_does(bm, dtype, tol):
    """The cost table's TorchScript series times the same energy and forces as lawful's ASE
    calculator (the shipped model on alanine dipeptide; float64 to 1e-9 eV, float32 to 1e-3)."""
    from ase.calculators.calculator import all_changes

    from lawful.forcefields.molecules import alanine_dipeptide

    atoms = alanine_dipeptide()
    path = bm.lawful_model_path(False)
    ts = bm._TorchScriptCall(path, dtype, atoms)
    ts.calculate(atoms)
    calc = bm.lawful_calculator(path, dtype)
    calc.calculate(atoms.copy(), ["energy", "forces"], all_changes)
    assert abs(ts.results["energy"] - calc.results["energy"]) < tol * len(atoms)
    assert np.abs(ts.results["forces"] - calc.results["forces"]).max() < tol * 10


def test_tiny_mace_comparison_runs_end_to_end(tmp_path):
    pytest.importorskip("mace")
    doc = _run_tiny(tmp_path, [str(BENCH / "bench_molecules.py"), "--only", "mace,cost,drift"])
    fig = doc["figures"]
    assert doc["benchmark"] == "molecules_mace" and doc["provenance"]["tiny"] is True
    assert fig["mace_available"] is True
    tr = fig["mace_training"]
    assert tr["converged"]["epochs_run"] == 2 and tr["same_budget"]["epochs_run"] == 1
    assert _finite(tr["converged"]["train_cpu_s"]) and 0 < tr["same_budget"]["train_cpu_s"] <= tr["converged"]["train_cpu_s"]
    assert tr["n_train"] > 0 and tr["parameters"] > 0
    for model in ("lawful", "mace_same_budget", "mace_converged"):
        for m in ("alanine-dipeptide", "ethanol"):
            row = fig["test_errors"][model][m]
            assert all(_finite(row[k]) for k in ("energy_mae_meV_per_atom", "force_mae_meV_per_A")), (model, m)
    _check_lawful_figures(fig)
    for system in ("alanine-dipeptide", "water-box"):
        for dtype in ("float64", "float32"):
            row = fig["cost_per_call"][system][dtype]
            assert _finite(row["mace"]["median"]) and _finite(row["mace_over_lawful_fresh_ratio"])
            assert _finite(row["mace_ef"]["median"]) and _finite(row["mace_ef_over_lawful_fresh_ratio"])
    assert set(fig["nve_drift"]) == {"lawful", "mace_converged"}
    v = fig["verdict"]
    assert v["cost_ratio_series"] == "mace_ef"        # like for like: MACE without its virial
    # the energy+forces-only MACE gives its calculator's energy and forces
    import sys

    sys.path.insert(0, str(BENCH))
    import mace_peer
    from lawful.forcefields.molecules import alanine_dipeptide

    model = tr["converged"]["model"]
    full, ef = alanine_dipeptide(), alanine_dipeptide()
    full.calc, ef.calc = mace_peer.calculator(model), mace_peer.calculator(model, stress=False)
    assert ef.get_potential_energy() == pytest.approx(full.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(ef.get_forces(), full.get_forces(), rtol=0, atol=1e-10)
    assert "stress" in full.calc.results and "stress" not in ef.calc.results
    assert _finite(v["force_mae_ratio"]) and _finite(v["cost_ratio"])
    assert v["accuracy_goal_met"] == (v["force_mae_ratio"] <= 1.5)
    assert v["cost_goal_met"] == (v["cost_ratio"] >= 10.0)
    assert (v["shortfall"] is None) == (v["accuracy_goal_met"] and v["cost_goal_met"])
    # the cost part alone again: it times the MACE the first run trained and keeps that run's errors
    # and drift (lawful's test errors recomputed and found equal), so the verdict still has both
    (tmp_path / "cwd").rmdir()
    again = _run_tiny(tmp_path, [str(BENCH / "bench_molecules.py"), "--only", "cost"])
    fig2 = again["figures"]
    assert fig2["part_origin"]["cost"] == "this run"
    assert fig2["part_origin"]["mace"]["date"] == fig2["part_origin"]["drift"]["date"] == doc["date"]
    assert fig2["test_errors"] == fig["test_errors"] and fig2["nve_drift"] == fig["nve_drift"]
    assert fig2["cost_mace_model"]["arch"] == tr["arch"] and fig2["cost_per_call"] != fig["cost_per_call"]
    assert again["params"]["kept_parts"]["parts"] == ["mace", "drift"]
    assert again["params"]["kept_parts"]["lawful_errors_largest_relative_difference"] <= 1e-9
    assert fig2["verdict"]["force_mae_ratio"] == v["force_mae_ratio"] and _finite(fig2["verdict"]["cost_ratio"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_comparison_without_mace_reports_none(tmp_path):
    """mace-torch is only the bench extra: without it the run completes, lawful's figures are
    there and every MACE figure is None."""
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('bm', '{BENCH / 'bench_molecules.py'}'); "
            "bm = importlib.util.module_from_spec(spec); spec.loader.exec_module(bm); "
            "bm._peer().available = lambda: False; bm.main(['--only', 'mace,cost,drift'])")
    fig = _run_tiny(tmp_path, ["-c", code])["figures"]
    assert fig["mace_available"] is False and "mace_training" not in fig
    assert fig["test_errors"]["mace_converged"] is None and fig["test_errors"]["mace_same_budget"] is None
    assert _finite(fig["test_errors"]["lawful"]["ethanol"]["force_mae_meV_per_A"])
    _check_lawful_figures(fig)
    assert fig["cost_per_call"]["water-box"]["float64"]["mace_over_lawful_fresh_ratio"] is None
    assert set(fig["nve_drift"]) == {"lawful"}
    assert fig["verdict"]["force_mae_ratio"] is None and fig["verdict"]["cost_ratio"] is None
    assert fig["verdict"]["shortfall"] is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mace_driver_honours_its_cpu_cap_and_keeps_the_best_checkpoint(bm, tmp_path):
    """The stopping rule added around mace-torch's training: an epoch expected to end past the CPU
    cap is not started (cap 0: exactly one epoch runs), and when the run stops before the budget
    the same-budget model is the run's own final model (the best checkpoint), weight for weight."""
    pytest.importorskip("mace")
    peer = bm._peer()
    tr, va = bm.training_sets(200)
    res = peer.run_training(tmp_path / "m", tr, va, arch=peer.MACE_ARCH_TINY, train=bm.TRAIN, snapshot_cpu_s=1e9,
                            cap_cpu_s=0.0, plateau_epochs=30, max_epochs=5)
    assert res["stop_reason"] == "cpu_cap" and res["epochs_run"] == 1 and len(res["epoch_cpu_s"]) == 1
    assert res["budget_snapshot"]["epochs_run"] == 1 and res["budget_snapshot"]["cpu_s"] == res["train_cpu_s"]
    # MACE .model files are pickled modules (weights_only=True cannot read them); this run wrote them
    final = torch.load(res["converged_model"], map_location="cpu", weights_only=False).state_dict()
    budget = torch.load(res["budget_model"], map_location="cpu", weights_only=False).state_dict()
    assert final.keys() == budget.keys()
    assert all(torch.equal(final[k], budget[k]) for k in final)


_PARENT = """
import subprocess, sys, time
code = "import sys, time; sys.path.insert(0, {bench!r}); import mace_peer; " + ("mace_peer._die_with_parent(); " if {die} else "") + "time.sleep(30)"
p = subprocess.Popen([sys.executable, "-c", code])
print(p.pid, flush=True)
time.sleep(30)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("die", [True, False])
def test_the_mace_worker_dies_with_a_killed_benchmark(die):
    """A SIGKILLed parent leaves no MACE worker behind (it once trained on as an orphan); the control
    without the request stays alive."""
    import os
    import signal
    import subprocess
    import time

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(bench=bench, die=die)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    time.sleep(1.0)
    try:
        state = Path(f"/proc/{child}/status").read_text().split("State:")[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    try:
        assert (state in ("Z", "X", "gone")) == die, state
    finally:
        if state not in ("Z", "X", "gone"):
            os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(300)
def test_training_further_keeps_the_normalisation_and_counts_every_stage(bm, tmp_path, monkeypatch):
    """``--init-from``: the shipped model trained one more epoch on the current data keeps its
    reference energies and feature statistics (its weights were learnt against them), and its
    summary counts the CPU of both stages, which the MACE same-budget run then uses."""
    from lawful.forcefields import load_model

    monkeypatch.setenv("LAWFUL_BENCH_DIR", str(tmp_path))
    torch.set_num_threads(1)
    shipped = load_model("organic-xtb")
    prior = shipped.training_summary or {}
    out = bm.train_models(True, 1, 120.0, kinds=("conservative",), init_from="organic-xtb", lr=1e-5)
    path = Path(out["conservative"]["file"])
    assert path.parent == tmp_path / "molecules-models"
    model = load_model(path)
    for k in ("reference_energies", "feature_mean", "feature_std", "energy_scale"):
        assert torch.equal(getattr(model, k), getattr(shipped, k)), k
    s = model.training_summary
    assert s["fit_normalisation"] is False and s["epochs_run"] == 1 and len(s["stages"]) >= 2
    assert s["stages"][-1]["init_from"] == "organic-xtb" and s["stages"][-1]["lr"] == 1e-5
    assert s["train_cpu_s_total"] == pytest.approx(sum(st["train_cpu_s"] for st in s["stages"]))
    assert s["train_cpu_s_total"] > float(prior.get("train_cpu_s_total", prior["train_cpu_s"]))
    assert bm.lawful_budget_cpu_s(path) == pytest.approx(s["train_cpu_s_total"])


def _reuse_folder(bm, tmp_path, stride=100, budget=1000.0):
    """A MACE work folder as a finished mace run leaves it: two model files and record.json."""
    tr, _ = bm.training_sets(stride)
    rec = {"n_train": len(tr), "n_train_atoms": bm._n_atoms(tr),
           "same_budget": {"model": str(tmp_path / "m_budget.model"), "budget_cpu_s": budget},
           "converged": {"model": str(tmp_path / "m.model"), "stop_reason": "plateau", "cap_cpu_s": 5400.0}}
    for key in ("same_budget", "converged"):
        Path(rec[key]["model"]).write_bytes(b"not read here")
    bm.save_mace_record(tmp_path, rec)
    return rec


@pytest.mark.parametrize("damage, budget, cap, message", [
    (None, 1000.0, None, None),
    (None, 1000.0, 5400.0, None),
    ("no-record", 1000.0, None, "no record.json"),
    ("no-model", 1000.0, None, "is missing"),
    (None, 1500.0, None, "lawful budget of 1000 s CPU"),
    ("frames", 1000.0, None, "the data changed since"),
    (None, 1000.0, 3600.0, "trained with a cap of 5400 s CPU, not the 3600 s"),
])
def test_mace_reuse_refuses_a_folder_that_does_not_match_this_comparison(bm, tmp_path, damage, budget, cap, message):
    """Reused MACE models are checked against this run; their cap is the record's (reported as
    such), and an explicit --mace-cap-cpu-s that contradicts it is refused."""
    rec = _reuse_folder(bm, tmp_path)
    if damage == "no-record":
        (tmp_path / "record.json").unlink()
    elif damage == "no-model":
        Path(rec["converged"]["model"]).unlink()
    elif damage == "frames":
        rec["n_train"] += 1
        bm.save_mace_record(tmp_path, rec)
    if message is None:
        got = bm.reused_mace_record(tmp_path, budget, 100, cap)
        assert got["reused_from"] == str(tmp_path / "record.json")
        assert got["same_budget"] == rec["same_budget"] and got["converged"]["cap_cpu_s"] == 5400.0
    else:
        with pytest.raises(SystemExit, match=message):
            bm.reused_mace_record(tmp_path, budget, 100, cap)


# -- a run of some parts keeps the others' figures (keep_earlier_parts) -----------------------------

_ERRS = {"ethanol": {"energy_mae_meV_per_atom": 0.7, "force_mae_meV_per_A": 35.5, "n_frames": 100}}
_ARCH = {"num_channels": 64, "max_L": 1}


def _earlier(tmp_path, **change):
    """An earlier molecules_mace.json with the mace and drift parts (the cost part's figures too)."""
    fig = {"mace_training": {"arch": dict(_ARCH)}, "test_errors": {"lawful": _ERRS, "mace_converged": _ERRS},
           "test_errors_cpu_s": 1.0, "nve_drift": {"lawful": {}}, "training_pair_minima_A": {"H-H": 0.7},
           "alanine_start": "xTB minimum", "cost_per_call": {"old": True}}
    doc = {"benchmark": "molecules_mace", "date": "2026-12-01T17:35:25+00:00", "figures": fig,
           "params": {"quick": False, "tiny": False, "test_frames_per_molecule": None},
           "provenance": {"git": {"commit": "d137c4d"}, "command": ["bench_molecules.py", "--only", "mace,cost,drift"]}}
    for key, value in change.items():
        if key == "params":
            doc["params"].update(value)
        else:
            fig[key] = value
    path = tmp_path / "molecules_mace.json"
    path.write_text(json.dumps(doc) if change.get("figures") is None else "{not json")
    return path


def _cost_run():
    return {"cost_per_call": {"new": True}, "cost_mace_model": {"model": "m.model", "arch": dict(_ARCH)},
            "alanine_start": "xTB minimum"}


@pytest.mark.parametrize("case, kept", [
    ("same model", True),
    ("lawful errors changed", False),
    ("earlier run was quick", False),
    ("timed MACE of another architecture", False),
    ("timed MACE without a training record", False),
    ("earlier file has no lawful errors", False),
    ("earlier file unreadable", False),
])
def test_a_partial_run_keeps_the_other_parts_only_for_the_same_model(bm, tmp_path, case, kept):
    change = {"lawful errors changed": {"test_errors": {"lawful": {"ethanol": dict(_ERRS["ethanol"],
                                                                                    force_mae_meV_per_A=36.0)}}},
              "earlier run was quick": {"params": {"quick": True}},
              "earlier file has no lawful errors": {"test_errors": {"mace_converged": _ERRS}},
              "earlier file unreadable": {"figures": "broken"}}.get(case, {})
    path = _earlier(tmp_path, **change)
    figures = _cost_run()
    if case == "timed MACE of another architecture":
        figures["cost_mace_model"]["arch"] = {"num_channels": 128, "max_L": 1}
    if case == "timed MACE without a training record":
        figures["cost_mace_model"]["arch"] = None
    asked = []

    def lawful_errors(molecules, n_frames):
        asked.append((molecules, n_frames))
        return _ERRS

    record = bm.keep_earlier_parts(figures, {"cost"}, path, False, False, lawful_errors)
    assert figures["cost_per_call"] == {"new": True}              # this run's figures are never replaced
    if kept:
        assert asked == [(["ethanol"], None)]
        assert figures["test_errors"]["mace_converged"] == _ERRS and figures["nve_drift"] == {"lawful": {}}
        assert figures["part_origin"]["cost"] == "this run"
        assert figures["part_origin"]["mace"]["commit"] == "d137c4d" == record["commit"]
        assert record["parts"] == ["mace", "drift"] and record["lawful_errors_largest_relative_difference"] == 0.0
    else:
        assert record is None
        assert "test_errors" not in figures and "nve_drift" not in figures
        dropped = figures["earlier_parts_dropped"]
        assert dropped["why"]
        if case != "earlier file unreadable":     # the file about to be replaced is copied aside
            assert Path(dropped["copied_to"]).read_bytes() == path.read_bytes()


def test_a_partial_run_keeps_nothing_without_an_earlier_file_or_when_every_part_ran(bm, tmp_path):
    figures = _cost_run()
    assert bm.keep_earlier_parts(figures, {"cost"}, tmp_path / "none.json", False, False, None) is None
    assert figures["part_origin"] == {"cost": "this run"} and "earlier_parts_dropped" not in figures
    path = _earlier(tmp_path)
    figures = dict(_cost_run(), test_errors={"lawful": _ERRS}, nve_drift={})
    assert bm.keep_earlier_parts(figures, {"mace", "cost", "drift"}, path, False, False, None) is None
    assert figures["nve_drift"] == {} and set(figures["part_origin"]) == {"mace", "cost", "drift"}


_CONVERGED = {"model": "/runs/mace-a/mace_organic.model", "cap_cpu_s": 3600.0, "train_cpu_s": 3598.2,
              "epochs_run": 31, "stop_reason": "cpu_cap"}
_RETRAINED = dict(_CONVERGED, cap_cpu_s=600.0, train_cpu_s=599.7, epochs_run=5)


@pytest.mark.parametrize("case, ran_now, kept", [
    # this run trains MACE again; the earlier run's MACE drift would sit beside the new MACE's errors
    ("mace retrained, drift kept", "mace", False),
    ("mace reused (same record), drift kept", "mace", True),
    # this run's drift uses the MACE models of a folder; the kept errors are of the earlier run's MACE
    ("drift with the same MACE, mace kept", "drift", True),
    ("drift with another MACE, mace kept", "drift", False),
    ("drift with a MACE without a record, mace kept", "drift", False),
])
def test_a_partial_run_keeps_mace_drift_only_beside_the_errors_of_that_mace(bm, tmp_path, case, ran_now, kept):
    """The drift depends on the weights (a call's cost does not): MACE's NVE drift is kept beside
    MACE's test errors only when both describe the same trained model (its training record)."""
    mace_errors = {"ethanol": dict(_ERRS["ethanol"], force_mae_meV_per_A=20.0)}
    drift = {"lawful": {"1fs": {"drift_meV_per_atom_per_ps": 0.01}},
             "mace_converged": {"1fs": {"drift_meV_per_atom_per_ps": 0.002}}}
    path = _earlier(tmp_path, mace_training={"arch": dict(_ARCH), "converged": dict(_CONVERGED)},
                    test_errors={"lawful": _ERRS, "mace_converged": mace_errors}, nve_drift=drift,
                    cost_mace_model={"arch": dict(_ARCH)})
    if ran_now == "mace":
        converged = _RETRAINED if case.startswith("mace retrained") else _CONVERGED
        figures = {"mace_training": {"arch": dict(_ARCH), "converged": dict(converged)},
                   "test_errors": {"lawful": _ERRS, "mace_converged": {"ethanol": dict(_ERRS["ethanol"],
                                                                                      force_mae_meV_per_A=60.0)}}}
    else:
        folder = tmp_path / "mace-b"
        folder.mkdir()
        if "without a record" not in case:
            converged = _CONVERGED if "same MACE" in case else _RETRAINED
            bm.save_mace_record(folder, {"arch": dict(_ARCH), "converged": dict(converged)})
        figures = {"mace_models_from": str(folder), "training_pair_minima_A": {"H-H": 0.7},
                   "nve_drift": {"lawful": {"1fs": {"drift_meV_per_atom_per_ps": 0.03}},
                                 "mace_converged": {"1fs": {"drift_meV_per_atom_per_ps": 0.5}}}}
    record = bm.keep_earlier_parts(figures, {ran_now}, path, False, False, lambda molecules, n: _ERRS)
    if kept:
        assert record is not None and ran_now not in record["parts"]
        assert figures["test_errors"]["mace_converged"] and figures["nve_drift"]["mace_converged"]
    else:
        assert record is None and "MACE whose NVE drift" in figures["earlier_parts_dropped"]["why"]
        other = "nve_drift" if ran_now == "mace" else "mace_training"
        assert other not in figures           # nothing of the earlier file is combined with this run's


class _FailingCalculator:
    """An ASE calculator: harmonic springs to the start (finite energy and forces) until call
    ``fail_at``, then ``how``: raise ``error`` on finite positions ("bug", "lawful"), or return
    infinite forces once and raise ``error`` on the non-finite positions that follow ("peer")."""

    def __new__(cls, start, fail_at, how, error):
        from ase.calculators.calculator import Calculator, all_changes

        class Failing(Calculator):
            implemented_properties = ["energy", "forces"]

            def __init__(self):
                super().__init__()
                self.calls = 0

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                self.calls += 1
                d = self.atoms.positions - start.positions
                if self.calls >= fail_at:
                    if how == "peer" and np.isfinite(d).all():
                        self.results = {"energy": 0.0, "forces": np.full_like(d, np.inf)}
                        return
                    raise error
                self.results = {"energy": float(0.5 * (d ** 2).sum()), "forces": -d}

        return Failing()


@pytest.mark.parametrize("how, error, blew_up", [
    ("bug", ValueError("a wrong argument in the run"), None),          # must reach the caller
    ("bug", KeyError("typo"), None),
    ("lawful", None, True),                                            # lawful's NumericalError: a blow-up
    ("peer", RuntimeError("neighbour list failed on NaN positions"), True),
])
def test_nve_drift_reports_a_blow_up_but_raises_a_bug(bm, how, error, blew_up):
    """nve_drift caught every exception as ``blew_up=True``: a bug of the run (a wrong argument,
    too few samples) was published as a physical blow-up of the model. Now only lawful's
    NumericalError, or any error once the atoms' state went non-finite, counts as one."""
    from lawful.kernels.errors import NumericalError

    start = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    error = error if error is not None else NumericalError("energy rose by 5 eV/atom: blew up")
    calc = _FailingCalculator(start, 6, how, error)
    run = lambda: bm.nve_drift(calc, start, 0.5, 20, 2, {"H-O": 0.9, "H-H": 1.4})   # noqa: E731
    if blew_up is None:
        with pytest.raises(type(error)):
            run()
    else:
        res = run()
        assert res["blew_up"] is True and res["drift_meV_per_atom_per_ps"] is None and not res["in_domain"]
