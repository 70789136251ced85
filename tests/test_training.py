"""train(): the loss goes down, metrics are reported, checkpoints are atomic and a run killed
mid-epoch resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from lawful.forcefields import DirectForceModel, NeuralPotential, train
from lawful.forcefields.reference import emt_metal_dataset, write_extxyz
from lawful.kernels.errors import InputError, ModelFileError

ARCH = dict(cutoff=3.5, n_basis=5, n_radial=4, lmax=2, hidden=(16,), seed=0)
OPTS = dict(epochs=5, batch_size=4, lr=5e-3, seed=0, progress=False)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    frames = emt_metal_dataset("Cu", repeat=1, temperatures=(300, 900), n_md=5, n_rattled=4, n_strained=5, seed=1)
    path = tmp_path_factory.mktemp("data") / "cu.extxyz"
    write_extxyz(path, frames)
    return path


def test_training_lowers_the_errors_and_reports_metrics(data_file, tmp_path):
    model = NeuralPotential(["Cu"], **ARCH)
    log = tmp_path / "log.jsonl"
    summary = train(model, data_file, log=log, stress_weight=1.0, **dict(OPTS, epochs=8))
    hist = summary["history"]
    assert len(hist) == 8 == summary["epochs_run"]
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert summary["val_force_mae_eV_per_A"] < hist[0]["val_force_mae"]
    for key in ("val_energy_mae_per_atom_eV", "val_force_mae_eV_per_A", "val_stress_mae_eV_per_A3", "n_train",
                "n_val", "train_time_s"):
        assert summary[key] is not None, key
    assert summary["n_val"] == 2 and summary["n_train"] == 17
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(8))
    assert model.training_summary is summary


def test_direct_model_trains_too(data_file):
    model = DirectForceModel(["Cu"], embed=8, force_hidden=(16,), **ARCH)
    summary = train(model, data_file, **dict(OPTS, epochs=4))
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]


_CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from lawful.forcefields import NeuralPotential, train
data, ckpt, flag = sys.argv[1:4]

def on_batch(epoch, step):
    if epoch == 2 and step == 1:          # in the middle of the third epoch
        open(flag, "w").close()
        time.sleep(300)

model = NeuralPotential(["Cu"], **{arch})
train(model, data, checkpoint=ckpt, on_batch=on_batch, **{opts})
"""


def test_killed_mid_epoch_resumes_to_the_uninterrupted_result(data_file, tmp_path):
    from lawful.kernels.checkpoint import load_checkpoint

    ckpt = tmp_path / "run.ckpt"
    flag = tmp_path / "flag"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(arch=repr(ARCH), opts=repr(OPTS))))
    proc = subprocess.Popen([sys.executable, str(script), str(data_file), str(ckpt), str(flag)])
    try:
        deadline = time.time() + 120
        while not flag.exists():
            assert proc.poll() is None, "the training process died before the kill"
            assert time.time() < deadline, "the training process never reached epoch 2"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1                              # the last finished epoch
    assert not list(tmp_path.glob("*.tmp*"))                # no half-written files left behind

    resumed = NeuralPotential(["Cu"], **ARCH)
    s_res = train(resumed, data_file, checkpoint=ckpt, **OPTS)
    assert s_res["epochs_run"] == OPTS["epochs"] and len(s_res["history"]) == OPTS["epochs"]

    straight = NeuralPotential(["Cu"], **ARCH)
    s_ref = train(straight, data_file, **OPTS)
    for k, v in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k], v, rtol=1e-9, atol=1e-12), k
    for a, b in zip(s_res["history"], s_ref["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-8)

    # a checkpoint belongs to one model and one data set
    with pytest.raises(ModelFileError, match="another model"):
        train(NeuralPotential(["Cu"], **dict(ARCH, n_radial=3)), data_file, checkpoint=ckpt, **OPTS)
    with pytest.raises(ModelFileError, match="other training data"):
        train(NeuralPotential(["Cu"], **ARCH), data_file, checkpoint=ckpt, **dict(OPTS, seed=1))


def test_a_checkpoint_resumes_only_the_same_labels_and_options(data_file, tmp_path):
    """A finished checkpoint used to hand back its weights for relabelled data (the structures
    alone were fingerprinted) or other options, with a summary claiming the new ones (a control
    trained without stress then said stress_fitted). Now both are refused; a longer run of the
    same settings continues."""
    from ase.io import read

    from lawful.forcefields.reference import write_extxyz

    ckpt = tmp_path / "run.ckpt"
    opts = dict(OPTS, epochs=2)
    train(NeuralPotential(["Cu"], **ARCH), data_file, checkpoint=ckpt, **opts)
    frames = read(data_file, index=":")
    for a in frames:                                     # the same structures, energies doubled
        a.calc.results["energy"] = 2.0 * a.calc.results["energy"]
    relabelled = tmp_path / "relabelled.extxyz"
    write_extxyz(relabelled, frames)
    with pytest.raises(ModelFileError, match="other labels"):
        train(NeuralPotential(["Cu"], **ARCH), relabelled, checkpoint=ckpt, **opts)
    for change in (dict(lr=1e-3), dict(stress_weight=1.0), dict(batch_size=2), dict(energy_weight=10.0),
                   dict(ema_decay=0.99)):
        with pytest.raises(ModelFileError, match="other training options"):
            train(NeuralPotential(["Cu"], **ARCH), data_file, checkpoint=ckpt, **dict(opts, **change))
    with pytest.raises(ModelFileError, match="is of a float64 run, the model is float32"):
        train(NeuralPotential(["Cu"], **ARCH, dtype=torch.float32), data_file, checkpoint=ckpt, **opts)
    longer = train(NeuralPotential(["Cu"], **ARCH), data_file, checkpoint=ckpt, **dict(opts, epochs=3))
    assert longer["epochs_run"] == 3


def test_stress_of_periodic_frames_counts_in_batches_that_hold_a_cluster():
    """Bulk frames with stress and a cluster in one batch: the loss keeps the stress term (it was
    dropped for the whole batch) with finite gradients, and validation scores every periodic
    frame's stress (a chunk holding a cluster was skipped: 36 of 180 components in the
    helper's case). The clusters' stress entries are NaN and never enter a loss or a metric."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from lawful.forcefields.training import _collate, _loss_terms, _norms, evaluate_errors, prepare

    frames = []
    for k in range(5):
        a = bulk("Cu", "fcc", a=3.58 + 0.03 * k, cubic=True)
        a.rattle(0.02, seed=k)
        a.calc = EMT()
        e, f, st = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=st)
        frames.append(a)
    cluster = bulk("Cu", "fcc", a=3.6, cubic=True)
    cluster.pbc, cluster.cell = False, [0, 0, 0]
    cluster.rattle(0.03, seed=9)
    cluster.calc = EMT()
    e, f = cluster.get_potential_energy(), cluster.get_forces()
    cluster.calc = SinglePointCalculator(cluster, energy=e, forces=f)
    model = NeuralPotential(["Cu"], **ARCH)
    items = prepare(model, frames + [cluster])
    norms = _norms(items, 1.0)
    assert norms["use_stress"] and norms["stress_components"] == 45
    b, t = _collate(items, model.device)
    loss = _loss_terms(model, b, t, (1.0, 1.0, 1.0), norms)
    no_stress = _loss_terms(model, b, t, (1.0, 1.0, 0.0), dict(norms, use_stress=False))
    assert torch.isfinite(loss) and float(loss.detach()) > float(no_stress.detach())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    mixed = evaluate_errors(model, items, batch_size=16)["stress_mae"]
    bulk_only = evaluate_errors(model, items[:5], batch_size=16)["stress_mae"]
    assert mixed == pytest.approx(bulk_only, rel=1e-12)


def test_going_on_training_keeps_the_training_domain_of_the_earlier_data(data_file):
    """fit_normalisation=False (going on training a trained model on new data): the domain record
    is the per-pair minimum over old and new data (a pair only the old data had stays: the union
    of the keys); a fresh fit records the new data alone."""
    model = NeuralPotential(["Cu"], **ARCH)
    train(model, data_file, **dict(OPTS, epochs=1))
    learned = dict(model.pair_min_distance)
    model.pair_min_distance = {"Cu-Cu": learned["Cu-Cu"] - 0.3}     # as if earlier data went closer
    train(model, data_file, fit_normalisation=False, **dict(OPTS, epochs=1))
    assert model.pair_min_distance == {"Cu-Cu": pytest.approx(learned["Cu-Cu"] - 0.3)}
    model.pair_min_distance = {}                                      # no record yet: the new data's
    train(model, data_file, fit_normalisation=False, **dict(OPTS, epochs=1))
    assert model.pair_min_distance == pytest.approx(learned)
    train(model, data_file, **dict(OPTS, epochs=1))
    assert model.pair_min_distance == pytest.approx(learned)


def test_the_validation_score_includes_the_stress_when_it_is_trained(data_file):
    """With a stress weight the validation score (which picks the best epoch and stops early) is
    the loss's combination, stress included; it used to leave the stress out."""
    model = NeuralPotential(["Cu"], **ARCH)
    summary = train(model, data_file, energy_weight=2.0, force_weight=0.5, stress_weight=3.0, **dict(OPTS, epochs=2))
    for row in summary["history"]:
        expected = (2.0 * row["val_energy_rmse_per_atom"] ** 2 + 0.5 * row["val_force_rmse"] ** 2
                    + 3.0 * row["val_stress_rmse"] ** 2)
        assert row["val_loss"] == pytest.approx(expected, rel=1e-12)
        assert row["val_stress_rmse"] >= row["val_stress_mae"] > 0


def test_bad_training_inputs(data_file):
    from ase.build import bulk

    with pytest.raises(InputError, match="no labels"):
        train(NeuralPotential(["Cu"], **ARCH), [bulk("Cu", cubic=True)] * 3, **OPTS)
    with pytest.raises(InputError, match="val_fraction"):
        train(NeuralPotential(["Cu"], **ARCH), data_file, val_fraction=1.5, **OPTS)


def test_training_records_the_smallest_pair_distance_of_the_training_frames_only(data_file, tmp_path):
    """model.pair_min_distance is the smallest Cu-Cu distance over the *training* frames (ASE's
    own neighbour list as the reference), not the validation frames, and it is saved."""
    from ase.neighborlist import neighbor_list as ase_neighbor_list

    from lawful.forcefields import load_model
    from lawful.forcefields.training import load_frames

    frames = load_frames(data_file)
    closest = [float(ase_neighbor_list("d", a, ARCH["cutoff"]).min()) for a in frames]
    k = min(range(len(frames)), key=closest.__getitem__)
    train_frames = [a for q, a in enumerate(frames) if q != k]
    model = NeuralPotential(["Cu"], **ARCH)
    train(model, train_frames, validation=[frames[k]], **dict(OPTS, epochs=1))
    expected = min(c for q, c in enumerate(closest) if q != k)
    assert expected > closest[k]
    assert model.pair_min_distance.keys() == {"Cu-Cu"}
    assert model.pair_min_distance["Cu-Cu"] == pytest.approx(expected, rel=1e-12)
    model.save(tmp_path / "m.lawful")
    assert load_model(tmp_path / "m.lawful").pair_min_distance == model.pair_min_distance


@pytest.mark.parametrize("kwargs, named", [
    (dict(force_loss="l1"), "force_loss='l1'"),
    (dict(force_loss="huber", huber_delta=0.0), "huber_delta=0.0"),
    (dict(force_loss="huber", huber_delta=float("nan")), "huber_delta=nan"),
    (dict(huber_delta=0.5), "huber_delta=0.5"),          # would be silently ignored by the squared error
    (dict(grad_clip=-1.0), "grad_clip=-1.0"),
    (dict(grad_clip=float("inf")), "grad_clip=inf"),
    (dict(ema_decay=1.0), "ema_decay=1.0"),
    (dict(ema_decay=-0.5), "ema_decay=-0.5"),
])
def test_bad_loss_options_are_refused_before_training(data_file, kwargs, named):
    model = NeuralPotential(["Cu"], **ARCH)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(InputError) as err:
        train(model, data_file, **OPTS, **kwargs)
    assert named in str(err.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_huber_force_loss_is_the_squared_error_inside_delta_and_linear_outside(data_file):
    """With a delta far above every force error, Huber training is MSE training to round-off; with a
    small delta the weights differ (the large errors are weighted linearly), and both train."""
    runs = {}
    for name, kw in {"mse": {}, "huber_wide": dict(force_loss="huber", huber_delta=1e6),
                     "huber_tight": dict(force_loss="huber", huber_delta=1e-3)}.items():
        model = NeuralPotential(["Cu"], **ARCH)
        s = train(model, data_file, **dict(OPTS, epochs=3), **kw)
        runs[name] = (torch.cat([p.detach().reshape(-1) for p in model.parameters()]), s)
    assert torch.allclose(runs["mse"][0], runs["huber_wide"][0], rtol=0, atol=1e-10)
    assert float((runs["mse"][0] - runs["huber_tight"][0]).abs().max()) > 1e-4
    hist = runs["huber_tight"][1]["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_gradient_clipping_bounds_the_first_step(data_file):
    """One optimiser step of plain SGD-like size: with Adam the first step is ~lr per weight whatever
    the gradient, so compare the clipped gradient norm directly through the training core's hook."""
    import lawful.kernels.training_core as core

    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        norm = real(params, max_norm, *a, **k)
        seen.append((float(norm), float(torch.sqrt(sum((p.grad ** 2).sum() for p in params if p.grad is not None)))))
        return norm

    mp = pytest.MonkeyPatch()
    mp.setattr(core.torch.nn.utils, "clip_grad_norm_", spy)
    try:
        train(NeuralPotential(["Cu"], **ARCH), data_file, **dict(OPTS, epochs=1), grad_clip=1e-3)
    finally:
        mp.undo()
    assert seen, "grad_clip did not reach the optimiser step"
    assert all(after <= 1e-3 * (1 + 1e-6) for _, after in seen)
    assert max(before for before, _ in seen) > 1e-3     # it really clipped something


def test_fit_normalisation_false_continues_a_trained_model(data_file):
    """Going on training keeps the fitted reference energies, feature statistics and scales (the
    weights were learnt against them), and starts from the trained model's errors, not from scratch;
    the default refits them."""
    model = NeuralPotential(["Cu"], **ARCH)
    first = train(model, data_file, **dict(OPTS, epochs=4))
    stats = {k: v.detach().clone() for k, v in model.state_dict().items()
             if k in ("reference_energies", "feature_mean", "feature_std", "energy_scale")}
    with torch.no_grad():                       # a visible offset, so a refit would show
        model.feature_mean.add_(0.25)
        model.reference_energies.add_(0.5)
    moved = {k: getattr(model, k).detach().clone() for k in stats}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    again = train(model, data_file, **dict(OPTS, epochs=1), fit_normalisation=False)
    assert again["fit_normalisation"] is False and first["fit_normalisation"] is True
    for k in stats:
        assert torch.equal(getattr(model, k), moved[k]), k
    model.load_state_dict(state)
    train(model, data_file, **dict(OPTS, epochs=1))
    # refitted: the reference energies depend on the data only; the feature statistics on the
    # (trained) descriptor too, so they are new but nowhere near the offset ones
    assert torch.allclose(model.reference_energies, stats["reference_energies"], rtol=1e-10, atol=1e-10)
    assert float((model.feature_mean - moved["feature_mean"]).abs().max()) > 0.2


def test_refit_reference_energies_moves_offsets_only_and_balances_each_composition():
    """The shipped organic model on committed xTB test frames of three compositions, with a
    planted offset (water's oxygen reference energy raised by 50 meV, as a stage of training on
    other molecules might leave it): the refit removes the per-composition bias (water's mean
    per-atom residual from 15 meV to < 1), and forces and every energy difference between frames
    of one composition are unchanged to round-off."""
    from pathlib import Path

    import numpy as np

    from lawful.forcefields import load_model, refit_reference_energies
    from lawful.forcefields.reference import read_extxyz

    data = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "xtb"
    frames = [a for m in ("water", "ethanol", "alanine-dipeptide") for a in read_extxyz(data / m / "test.extxyz")[:12]]
    model = load_model("organic-xtb")
    model.reference_energies[model.species.index("O")] += 0.05

    def predict(m):
        out = [m.evaluate(a.positions, a.numbers) for a in frames]
        return (np.array([float(o["energy"]) for o in out]),
                np.concatenate([o["forces"].detach().numpy() for o in out]))

    def water_bias(e):
        return np.mean([(e[k] - a.get_potential_energy()) / len(a) for k, a in enumerate(frames) if len(a) == 3])

    e0, f0 = predict(model)
    rec = refit_reference_energies(model, frames)
    e1, f1 = predict(model)
    assert abs(water_bias(e0)) > 0.012 and abs(water_bias(e1)) < 1e-3, (water_bias(e0), water_bias(e1))
    assert np.abs(f1 - f0).max() < 1e-10
    for n in (3, 9, 22):                               # differences within one composition are kept
        idx = [k for k, a in enumerate(frames) if len(a) == n]
        assert np.abs((e1[idx] - e1[idx[0]]) - (e0[idx] - e0[idx[0]])).max() < 1e-9
    assert abs(rec["mean_residual_meV_per_atom_after"]) < 1e-6
    assert rec["rms_residual_meV_per_atom_after"] < rec["rms_residual_meV_per_atom_before"]
    assert set(rec["shift_eV"]) == set(model.species) and rec["n_frames"] == len(frames)


def test_a_weight_average_is_validated_and_returned(data_file, tmp_path):
    """train(ema_decay=...): the model handed back is the average the validation scored (its
    errors are the best history row's), not the last raw weights; the summary says so, and a
    checkpoint of the run resumes only with the same decay."""
    ckpt = tmp_path / "ema.ckpt"
    model = NeuralPotential(["Cu"], **ARCH)
    summary = train(model, data_file, checkpoint=ckpt, ema_decay=0.9, **dict(OPTS, epochs=4))
    assert summary["ema_decay"] == 0.9
    best = min(summary["history"], key=lambda r: r["val_loss"])
    assert summary["val_force_mae_eV_per_A"] == pytest.approx(best["val_force_mae"], rel=1e-12)
    raw = NeuralPotential(["Cu"], **ARCH)
    plain = train(raw, data_file, **dict(OPTS, epochs=4))
    assert plain["ema_decay"] == 0.0
    assert plain["history"][0]["val_force_mae"] != pytest.approx(summary["history"][0]["val_force_mae"], rel=1e-6)
    with pytest.raises(ModelFileError, match="other training options"):
        train(NeuralPotential(["Cu"], **ARCH), data_file, checkpoint=ckpt, **dict(OPTS, epochs=4))
    again = train(NeuralPotential(["Cu"], **ARCH), data_file, checkpoint=ckpt, ema_decay=0.9, **dict(OPTS, epochs=4))
    assert again["val_force_mae_eV_per_A"] == summary["val_force_mae_eV_per_A"]
