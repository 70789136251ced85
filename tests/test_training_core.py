"""The training core (lawful.kernels.training_core) on a toy least-squares task: resume equals an
uninterrupted run, a KeyboardInterrupt keeps the last finished unit and closes the log, best
weights and early stopping, the plateau schedule, rank 0 alone writes; and the failure paths
of the core, the distributed context and the batched evaluation as a table."""

from __future__ import annotations

import json

import pytest
import torch

from lawful.kernels.distributed import DistContext, context, shard
from lawful.kernels.errors import InputError, ModelFileError
from lawful.kernels.training_core import Hooks, Loop, LoopConfig

G = torch.Generator().manual_seed(0)
X = torch.randn(24, 3, generator=G, dtype=torch.float64)
Y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.1 * torch.randn(24, generator=G, dtype=torch.float64)


class Toy(Hooks):
    """Linear regression: epochs of seeded minibatches of 5, validation on the last 6 points."""

    def __init__(self, model, stop_at=None, val_scores=None):
        self.model, self.stop_at, self.val_scores, self.calls = model, stop_at, val_scores, []

    def loss(self, idx, n_global, weight):
        return weight * ((self.model(X[idx]).squeeze(1) - Y[idx]) ** 2).sum() / n_global

    def train_unit(self, loop, unit):
        if unit == self.stop_at:
            raise KeyboardInterrupt
        order = torch.randperm(18, generator=torch.Generator().manual_seed(unit)).tolist()
        total = 0.0
        for k in range(0, 18, 5):
            batch = order[k:k + 5]
            local, w = loop.shard(batch)
            total += float(loop.optimise(torch.tensor(local), len(batch), w))
        return {"unit": unit, "train": total}

    def validate(self, loop, unit):
        self.calls.append(unit)
        if self.val_scores is not None:
            s = self.val_scores[unit]
        else:
            with torch.no_grad():
                s = float(((self.model(X[18:]).squeeze(1) - Y[18:]) ** 2).mean())
        return s, {"val": s}


def _loop(tmp_path=None, units=6, hooks=None, sched=False, **cfg):
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sc = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0) if sched else None
    h = hooks(model) if hooks is not None else Toy(model)
    ck = None if tmp_path is None else tmp_path / "toy.ckpt"
    return Loop(model, opt, sc, h, LoopConfig(units=units, checkpoint=ck, **cfg), ctx=DistContext())


def test_interrupted_loop_resumes_to_the_uninterrupted_weights(tmp_path):
    straight = _loop(units=6)
    assert straight.run() == "units" and straight.done == 6
    log = tmp_path / "log.jsonl"
    part = _loop(tmp_path, units=6, hooks=lambda m: Toy(m, stop_at=3), log=log)
    with pytest.raises(KeyboardInterrupt):
        part.run()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["unit"] for r in rows] == [0, 1, 2]                      # the log was closed, rows intact
    resumed = _loop(tmp_path, units=6, log=log)
    assert resumed.resume() and resumed.done == 3
    resumed.run()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    assert [r["unit"] for r in resumed.history] == list(range(6))
    assert resumed.train_time_s > part.train_time_s > 0
    assert [json.loads(line)["unit"] for line in log.read_text().splitlines()] == list(range(6))   # one run's log
    # a fresh run (no checkpoint) starts a new log: it was appended, units 0..5 then 0, 1
    (tmp_path / "toy.ckpt").unlink()
    fresh = _loop(tmp_path, units=2, log=log)
    assert not fresh.resume()
    fresh.run()
    assert [json.loads(line)["unit"] for line in log.read_text().splitlines()] == [0, 1]


def test_best_weights_early_stopping_and_plateau_schedule():
    scores = [5.0, 3.0, 4.0, 4.5, 4.2, 1.0]
    loop = _loop(units=6, hooks=lambda m: Toy(m, val_scores=scores), patience=3, sched=True)
    seen = {}

    real_run = loop.hooks.train_unit

    def spy(lp, unit):
        seen[unit] = {k: v.detach().clone() for k, v in lp.model.state_dict().items()}
        return real_run(lp, unit)

    loop.hooks.train_unit = spy
    assert loop.run() == "early_stopping"
    assert loop.done == 5 and loop.best_score == 3.0 and loop.best_unit == 2
    # restored: the weights after unit 1, i.e. those unit 2 started from
    for k, v in loop.model.state_dict().items():
        assert torch.equal(v, seen[2][k])
    # ReduceLROnPlateau(patience=0) halved the rate after each of the three bad validations
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 / 8)


class _LrSpy(Toy):
    """Toy that records the learning rate its optimiser steps took in each unit."""

    def train_unit(self, loop, unit):
        self.used = getattr(self, "used", []) + [loop.optimizer.param_groups[0]["lr"]]
        return super().train_unit(loop, unit)


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_history_rows_name_the_learning_rate_the_unit_trained_at(schedule):
    """Each history row's lr is the one its unit's steps used, not the next unit's (the row was
    written after the scheduler stepped: a cosine run's first row read 8.5e-4 for 1e-3)."""
    if schedule == "plateau":
        loop = _loop(units=6, hooks=lambda m: _LrSpy(m, val_scores=[5.0, 3.0, 4.0, 4.5, 4.2, 1.0]), sched=True)
    else:
        loop = _loop(units=4, hooks=_LrSpy, validate_every=0)
        loop.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(loop.optimizer, T_max=4, eta_min=0.0)
    loop.run()
    used = loop.hooks.used
    assert [r["lr"] for r in loop.history] == used
    assert used[0] == 0.05 and len(set(used)) > 1       # the schedule did change the rate


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_validation_score_stops_training(bad):
    """A NaN score compares False with everything: the best weights and the early stop froze and
    the run ended as if complete (runtime audit); it is a NumericalError naming the unit now."""
    from lawful.kernels.errors import NumericalError

    loop = _loop(hooks=lambda m: Toy(m, val_scores=[1.0, 0.5, bad, 0.2, 0.1, 0.1]))
    with pytest.raises(NumericalError, match=rf"validation score became {bad} at epoch 3"):
        loop.run()
    assert loop.best_unit == 2


def test_validate_every_and_max_time():
    loop = _loop(units=7, validate_every=3)
    loop.run()
    assert loop.hooks.calls == [2, 5, 6]                              # every 3rd unit and the last
    timed = _loop(units=1000, max_time=0.0)
    assert timed.run() == "max_time" and timed.done == 0


def test_only_rank_zero_writes_the_checkpoint(tmp_path):
    loop = _loop(tmp_path)
    loop.ctx = DistContext(rank=1, world_size=2)
    loop.save()
    assert not (tmp_path / "toy.ckpt").exists()
    loop.ctx = DistContext()
    loop.save()
    assert (tmp_path / "toy.ckpt").exists()


def test_shard_covers_the_global_batch_and_weights_an_idle_rank_zero():
    items = list(range(5))
    parts = [shard(items, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(x for p, w in parts for x in p) == items and all(w == 1.0 for _, w in parts)
    assert shard([7], DistContext(rank=1, world_size=2)) == ([7], 0.0)
    assert shard(items, DistContext()) == (items, 1.0)


def _old_checkpoint(path):
    from lawful.kernels.checkpoint import save_checkpoint

    save_checkpoint(path, {"epoch": 3, "model": {}})
    return path.read_bytes()


def _bad_env(monkeypatch, **env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return lambda: context("cpu")


CASES = [
    ("units=0", lambda mp, tmp: lambda: LoopConfig(units=0), InputError, "units=0"),
    ("units=-3", lambda mp, tmp: lambda: LoopConfig(units=-3), InputError, "units=-3"),
    ("units=2.5", lambda mp, tmp: lambda: LoopConfig(units=2.5), InputError, "units=2.5"),
    ("units=True", lambda mp, tmp: lambda: LoopConfig(units=True), InputError, "units=True"),
    ("units='10'", lambda mp, tmp: lambda: LoopConfig(units="10"), InputError, "units='10'"),
    ("checkpoint_every=0", lambda mp, tmp: lambda: LoopConfig(units=3, checkpoint_every=0), InputError,
     "checkpoint_every=0"),
    ("validate_every=-1", lambda mp, tmp: lambda: LoopConfig(units=3, validate_every=-1), InputError,
     "validate_every=-1"),
    ("validate_every=0.5", lambda mp, tmp: lambda: LoopConfig(units=3, validate_every=0.5), InputError,
     "validate_every=0.5"),
    ("WORLD_SIZE=two", lambda mp, tmp: _bad_env(mp, WORLD_SIZE="two"), InputError, "WORLD_SIZE='two'"),
    ("RANK=5 of 2", lambda mp, tmp: _bad_env(mp, WORLD_SIZE="2", RANK="5"), InputError, "RANK=5"),
    ("RANK=-1 of 2", lambda mp, tmp: _bad_env(mp, WORLD_SIZE="2", RANK="-1"), InputError, "RANK=-1"),
    ("LOCAL_RANK=x", lambda mp, tmp: _bad_env(mp, WORLD_SIZE="2", RANK="0", LOCAL_RANK="x"), InputError,
     "LOCAL_RANK='x'"),
    ("batch_windows=0", lambda mp, tmp: lambda: __import__("lawful.fluids.corrector_training", fromlist=["x"])
     .TrainConfig(batch_windows=0), InputError, "batch_windows=0"),
    ("chunk_atoms=0", lambda mp, tmp: lambda: _evaluate(chunk_atoms=0), InputError, "chunk_atoms=0"),
    ("chunk_atoms=2.5", lambda mp, tmp: lambda: _evaluate(chunk_atoms=2.5), InputError, "chunk_atoms=2.5"),
    ("chunk_atoms=True", lambda mp, tmp: lambda: _evaluate(chunk_atoms=True), InputError, "chunk_atoms=True"),
    ("checkpoint without counters", lambda mp, tmp: lambda: _train_from(tmp), ModelFileError, "lacks the epoch"),
    ("ema_decay=1", lambda mp, tmp: lambda: LoopConfig(units=3, ema_decay=1.0), InputError, "ema_decay=1.0"),
    ("ema_decay=-0.1", lambda mp, tmp: lambda: LoopConfig(units=3, ema_decay=-0.1), InputError, "ema_decay=-0.1"),
    ("ema_decay=nan", lambda mp, tmp: lambda: LoopConfig(units=3, ema_decay=float("nan")), InputError, "ema_decay=nan"),
    ("ema_decay=True", lambda mp, tmp: lambda: LoopConfig(units=3, ema_decay=True), InputError, "ema_decay=True"),
    ("train(ema_decay=1.5)", lambda mp, tmp: lambda: _train_ema(1.5), InputError, "ema_decay=1.5"),
    ("ema resumed from a run without", lambda mp, tmp: lambda: _resume_with_ema(tmp), ModelFileError,
     "without a weight average"),
    # clip_grad_norm_ with a negative max_norm scales every gradient by a negative factor: the optimiser
    # climbed the loss, silently (the corrector's TrainConfig and LoopConfig took one)
    ("grad_clip=-1", lambda mp, tmp: lambda: LoopConfig(units=3, grad_clip=-1.0), InputError, "grad_clip=-1.0"),
    ("grad_clip=nan", lambda mp, tmp: lambda: LoopConfig(units=3, grad_clip=float("nan")), InputError, "grad_clip=nan"),
    ("TrainConfig grad_clip=-1", lambda mp, tmp: lambda: _corrector_config(grad_clip=-1.0), InputError,
     "TrainConfig.grad_clip=-1.0"),
    ("TrainConfig lr_final_factor=-0.1", lambda mp, tmp: lambda: _corrector_config(lr_final_factor=-0.1), InputError,
     "lr_final_factor=-0.1"),
    ("TrainConfig lr_final_factor=2", lambda mp, tmp: lambda: _corrector_config(lr_final_factor=2.0), InputError,
     "lr_final_factor=2.0"),
    # validation_steps=0 stopped the first validation with a ZeroDivisionError
    ("TrainConfig validation_steps=0", lambda mp, tmp: lambda: _corrector_config(validation_steps=0), InputError,
     "validation_steps=0"),
    ("TrainConfig validate_every=-5", lambda mp, tmp: lambda: _corrector_config(validate_every=-5), InputError,
     "validate_every=-5"),
]


def _corrector_config(**kw):
    from lawful.fluids.corrector_training import TrainConfig

    return TrainConfig(**kw)


def test_a_negative_gradient_clip_would_have_climbed_the_loss():
    """Why grad_clip < 0 is refused: torch scales by max_norm / norm (capped at 1), so the step
    reverses. The clip the Loop applies (a positive one) only shortens the gradient."""
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    p.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.nn.utils.clip_grad_norm_([p], -1.0)
    assert float(p.grad @ torch.tensor([3.0, 4.0], dtype=torch.float64)) < 0      # reversed
    p.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    assert torch.allclose(p.grad, torch.tensor([0.6, 0.8], dtype=torch.float64), atol=1e-6)
    assert LoopConfig(units=1, grad_clip=0.0).grad_clip == 0.0 and _corrector_config(validate_every=0,
                                                                                     validation_steps=0)


def _train_ema(decay):
    from lawful.forcefields import NeuralPotential, train

    return train(NeuralPotential(["Cu"], cutoff=3.0, hidden=(4,)), [], epochs=1, ema_decay=decay)


def _resume_with_ema(tmp):
    """A checkpoint of a run without a weight average, resumed with one: the average would hold
    only the remaining steps."""
    ck = tmp / "old.ckpt"
    first = _loop(units=2)
    first.run()
    first.save(ck)
    tmp.joinpath("before").write_bytes(ck.read_bytes())
    again = _loop(units=4, ema_decay=0.9)
    again.config.checkpoint = again.checkpoint = ck
    again.resume()


def _evaluate(**kw):
    from ase.build import bulk

    from lawful.forcefields import NeuralPotential, evaluate_batch

    return evaluate_batch(NeuralPotential(["Cu"], cutoff=3.0, hidden=(4,)), [bulk("Cu")], **kw)


def _train_from(tmp):
    from lawful.forcefields import NeuralPotential, train
    from lawful.forcefields.reference import emt_metal_dataset

    frames = emt_metal_dataset("Cu", repeat=1, temperatures=(300,), n_md=2, n_rattled=2, n_strained=2, seed=1)
    model = NeuralPotential(["Cu"], cutoff=3.0, n_basis=4, n_radial=3, lmax=1, hidden=(4,))
    from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint

    ck = tmp / "old.ckpt"
    state = load_checkpoint(ck)
    # model and data match, but the file has neither the core's counters nor the old loop's
    from lawful.forcefields.training import _fingerprint

    perm = __import__("numpy").random.default_rng(0).permutation(len(frames))
    n_val = max(1, int(round(0.1 * len(frames))))
    val = [frames[k] for k in sorted(perm[:n_val])]
    tr = [frames[k] for k in sorted(perm[n_val:])]
    state.update(kind=model.kind, config=json.dumps(model.config, sort_keys=True),
                 fingerprint=_fingerprint(tr) + _fingerprint(val))
    save_checkpoint(ck, state)
    tmp.joinpath("before").write_bytes(ck.read_bytes())
    return train(model, frames, epochs=1, checkpoint=ck, progress=False)


@pytest.mark.parametrize("name, make, error, named", CASES, ids=[c[0] for c in CASES])
def test_failure_table(name, make, error, named, monkeypatch, tmp_path):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    keep = tmp_path / "old.ckpt"
    before = _old_checkpoint(keep)
    with pytest.raises(error) as info:
        make(monkeypatch, tmp_path)()
    assert named in str(info.value), str(info.value)
    expected = tmp_path.joinpath("before").read_bytes() if tmp_path.joinpath("before").exists() else before
    assert keep.read_bytes() == expected                                # nothing already written was lost
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "before") == ["old.ckpt"]


def test_a_checkpoint_of_the_loop_before_the_core_resumes(tmp_path):
    """train() checkpoints written before the training core (epoch, best_loss, bad_epochs) resume
    to the weights of an uninterrupted run."""
    from lawful.forcefields import NeuralPotential, train
    from lawful.forcefields.reference import emt_metal_dataset
    from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint

    frames = emt_metal_dataset("Cu", repeat=1, temperatures=(300,), n_md=4, n_rattled=4, n_strained=4, seed=1)
    arch = dict(cutoff=3.5, n_basis=4, n_radial=3, lmax=1, hidden=(8,), seed=0)
    opts = dict(batch_size=4, lr=5e-3, progress=False)
    straight = NeuralPotential(["Cu"], **arch)
    train(straight, frames, epochs=4, **opts)
    ck = tmp_path / "old.ckpt"
    train(NeuralPotential(["Cu"], **arch), frames, epochs=2, checkpoint=ck, **opts)
    new = load_checkpoint(ck)
    old = {k: new[k] for k in ("kind", "config", "fingerprint", "model", "optimizer", "scheduler", "best_state",
                               "train_time_s", "train_cpu_s", "history")}
    old.update(epoch=new["done"] - 1, best_loss=new["best_score"], bad_epochs=new["bad_validations"])
    save_checkpoint(ck, old)
    resumed = NeuralPotential(["Cu"], **arch)
    s = train(resumed, frames, epochs=4, checkpoint=ck, **opts)
    assert s["epochs_run"] == 4 and len(s["history"]) == 4
    for k, v in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[k], v, rtol=0, atol=1e-12), k


@pytest.mark.parametrize("cfg, hooks, stop", [
    (dict(patience=1, validate_every=1), lambda m: Toy(m, val_scores=[1.0, 2.0, 3.0] + [4.0] * 7), "early_stopping"),
    (dict(max_time=1e-12), None, "max_time"),
])
def test_a_stop_rule_checkpoints_the_last_unit_between_checkpoints(tmp_path, cfg, hooks, stop):
    """checkpoint_every=4 and a stop rule after unit 2 (or 0): the checkpoint held nothing (or an
    older unit), although it is written "after the last unit of a call"; a resume redid the units."""
    from lawful.kernels.checkpoint import load_checkpoint

    loop = _loop(tmp_path, units=10, hooks=hooks, checkpoint_every=4, **cfg)
    assert loop.run() == stop
    saved = load_checkpoint(tmp_path / "toy.ckpt")
    assert saved["done"] == loop.done >= 1
    again = _loop(tmp_path, units=10, hooks=hooks, checkpoint_every=4, **cfg)
    assert again.resume() and again.done == loop.done and len(again.history) == len(loop.history)


class _Recorder(Toy):
    """Toy that records the raw weights after every optimiser step and the weights it validates."""

    def __init__(self, model, stop_at=None):
        super().__init__(model, stop_at=stop_at)
        self.raw, self.validated = [], []

    def loss(self, idx, n_global, weight):
        self.raw.append(torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).clone())
        return super().loss(idx, n_global, weight)

    def validate(self, loop, unit):
        self.validated.append(torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).clone())
        return super().validate(loop, unit)


def _weights(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("restore_best", [False, True])
def test_the_weight_average_is_what_is_validated_kept_and_returned(restore_best):
    """ema_decay: after every step a <- d a + (1 - d) w with d = min(decay, (1 + n) / (10 + n)),
    recomputed here from the raw weights the steps produced; validation sees the average, the
    optimiser steps from the raw weights, and the run ends with the average (or the best one)."""
    decay = 0.8
    loop = _loop(units=5, hooks=_Recorder, ema_decay=decay, restore_best=restore_best)
    start = _weights(loop.model).clone()
    loop.run()
    h = loop.hooks
    # the weights each step started from: the start, then each step's result (h.raw[k] = before step k)
    after = h.raw[1:] + [None]
    average, n, per_unit = None, 0, []
    steps_per_unit = 4                                    # 18 training points in batches of 5
    for k in range(len(h.raw)):
        w = after[k]
        if w is None:                                      # the last step's result: not seen by a loss call
            break
        if average is None:                                # the first step's result starts it
            average = w.clone()
        d = min(decay, (1.0 + n) / (10.0 + n))
        average = d * average + (1 - d) * w
        n += 1
        if (k + 1) % steps_per_unit == 0:
            per_unit.append(average.clone())
    assert h.raw[0].equal(start)
    assert len(h.validated) == 5 and len(per_unit) == 4   # the last unit's average needs the last step
    for got, want in zip(h.validated, per_unit):
        assert torch.allclose(got, want, rtol=0, atol=1e-14)
    # the validated weights are not the raw ones the next step started from
    assert not torch.allclose(h.validated[0], h.raw[steps_per_unit], rtol=0, atol=1e-6)
    final = _weights(loop.model)
    if restore_best:
        best = loop.best_unit - 1
        assert torch.allclose(final, h.validated[best], rtol=0, atol=0)
    else:
        assert torch.allclose(final, h.validated[-1], rtol=0, atol=0)
        ema = torch.cat([loop.ema[n].reshape(-1) for n, _ in loop.model.named_parameters()])
        assert torch.equal(final, ema)


def test_a_resumed_run_with_a_weight_average_ends_as_an_uninterrupted_one(tmp_path):
    straight = _loop(units=6, ema_decay=0.9, restore_best=False)
    straight.run()
    part = _loop(tmp_path, units=6, hooks=lambda m: Toy(m, stop_at=3), ema_decay=0.9, restore_best=False)
    with pytest.raises(KeyboardInterrupt):
        part.run()
    resumed = _loop(tmp_path, units=6, ema_decay=0.9, restore_best=False)
    assert resumed.resume() and resumed.done == 3 and resumed.ema_steps == 12
    resumed.run()
    assert torch.allclose(_weights(straight.model), _weights(resumed.model), rtol=0, atol=1e-14)
    assert [r["val"] for r in straight.history] == pytest.approx([r["val"] for r in resumed.history], rel=1e-12)
    # a second run() of the same loop steps on from the raw weights, not from the average it
    # ended with: 6 units, then 2 more, end as 8 units in one call
    eight = _loop(units=8, ema_decay=0.9, restore_best=False)
    eight.run()
    straight.config.units = 8
    straight.run()
    assert torch.allclose(_weights(straight.model), _weights(eight.model), rtol=0, atol=1e-14)
