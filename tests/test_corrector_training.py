"""Fine-reference data, solver-in-the-loop training (checkpoints, resume, constraint strategies)
and rollout evaluation of the correctors."""

import re

import pytest
import torch

from lawful.kernels import InputError, ShapeError
from lawful.kernels.mac_operators import curl_torch
from lawful.fluids.corrector_training import CorrectorTrainer, TrainConfig, make_corrector, rollout_errors
from lawful.fluids.fine_reference import (ReferenceCase, ReferenceTrajectory, coarse_scene, downsample_cells,
                                          downsample_faces, generate_reference, load_or_generate)

F64 = torch.float64


def test_conservative_downsampling_keeps_fluxes_and_divergence():
    g = torch.Generator().manual_seed(0)
    f, nx, ny = 4, 5, 3
    psi = torch.randn(f * nx + 1, f * ny + 1, generator=g, dtype=F64)
    u, v = curl_torch(psi, 1.0, (False, False))           # discretely divergence-free fine field
    uc, vc = downsample_faces(u, v, f)
    assert uc.shape == (nx + 1, ny) and vc.shape == (nx, ny + 1)
    d = (uc[1:] - uc[:-1]) + (vc[:, 1:] - vc[:, :-1])
    assert float(d.abs().max()) <= 1e-13 * float(u.abs().max())
    # coarse flux through a coarse face = sum of the fine fluxes through it (face length f dx)
    assert float(uc[2, 1] * f) == pytest.approx(float(u[2 * f, f:2 * f].sum()), rel=1e-12)
    c = torch.randn(2, f * nx, f * ny, generator=g, dtype=F64)
    assert float(downsample_cells(c, f).sum() * f * f) == pytest.approx(float(c.sum()), rel=1e-12)
    # the pressure's mean over fluid fine cells only: solid cells hold 0 and pulled it toward 0 (25 %
    # low next to the obstacle in the fluids audit)
    fluid = torch.ones(f * nx, f * ny, dtype=torch.bool)
    fluid[:f - 1, :f] = False                                  # coarse cell (0, 0): only its last fine row is fluid
    fluid[f:2 * f, :f] = False                                 # coarse cell (1, 0): none
    p = torch.randn(f * nx, f * ny, generator=g, dtype=F64)
    pc = downsample_cells(p, f, fluid)
    assert float(pc[0, 0]) == pytest.approx(float(p[f - 1, :f][fluid[f - 1, :f]].mean()), rel=1e-12)
    assert float(pc[1, 0]) == 0.0
    assert float(pc[2, 1]) == pytest.approx(float(p[2 * f:3 * f, f:2 * f].mean()), rel=1e-12)
    with pytest.raises(ShapeError):
        downsample_faces(u[:, :-1], v[:-1], f)


@pytest.fixture(scope="module")
def tiny_traj():
    case = ReferenceCase("karman", n=8, factor=2, steps=10, warmup=2, re=80.0)
    return generate_reference(case, dtype=F64)


def test_reference_trajectory_is_the_downsampled_fine_run(tiny_traj):
    case = tiny_traj.case
    assert tiny_traj.u.shape == (case.steps + 1, 17, 8) and tiny_traj.scalars.shape[1] == 1
    fine = coarse_scene(case, n=case.n * case.factor, dtype=F64)
    solver = fine.make_solver()
    for _ in range(case.warmup * case.factor):
        solver.step(fine.state)
    uc, vc = downsample_faces(fine.state.u, fine.state.v, case.factor)
    assert torch.allclose(uc, tiny_traj.u[0], rtol=0, atol=1e-12)
    assert torch.allclose(vc, tiny_traj.v[0], rtol=0, atol=1e-12)
    assert tiny_traj.fine_steps == case.steps * case.factor and tiny_traj.fine_wall_s > 0
    sc, solver = tiny_traj.initial_state(dtype=F64)
    u = sc.state.u
    assert float(((u - solver.ubc[1]) * (1 - solver.ubc[0])).abs().max()) == 0.0   # fixed faces set


def test_cache_round_trip(tmp_path, tiny_traj):
    from lawful.kernels.checkpoint import save_checkpoint, load_checkpoint

    save_checkpoint(tmp_path / "t.pt", tiny_traj.to_checkpoint())
    back = ReferenceTrajectory.from_checkpoint(load_checkpoint(tmp_path / "t.pt"))
    assert back.case == tiny_traj.case and torch.equal(back.u, tiny_traj.u)
    case = ReferenceCase("kolmogorov", n=16, factor=1, steps=2, warmup=0)
    a = load_or_generate(case, tmp_path)
    b = load_or_generate(case, tmp_path)            # from the cache
    assert torch.equal(a.u, b.u) and len(list(tmp_path.glob("kolmogorov_*.pt"))) == 1


def test_reference_cache_is_keyed_on_solver_version_and_config(tmp_path, monkeypatch):
    """Issue 12: a cache written by another solver version (or config) is never reused: another
    version gets its own file, a file whose stored key differs is regenerated with a warning."""
    import json

    import lawful.fluids.fine_reference as fr
    from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint

    case = ReferenceCase("kolmogorov", n=16, factor=1, steps=2, warmup=0)
    a = load_or_generate(case, tmp_path)
    (first,) = tmp_path.glob("*.pt")
    assert json.loads(load_checkpoint(first)["reference_key"]) == fr.reference_key(case)
    # a stale cache: same file name, but the stored key says another solver version made it and
    # its data is not this solver's -- it must be regenerated, not returned
    data = load_checkpoint(first)
    key = json.loads(data["reference_key"])
    key["code_version"] = "0" * 16
    save_checkpoint(first, dict(data, u=data["u"] + 1.0, reference_key=json.dumps(key)))
    with pytest.warns(UserWarning, match="code_version"):
        b = load_or_generate(case, tmp_path)
    assert torch.equal(b.u, a.u)
    # a new solver version: another key, another file; the old one is left alone
    monkeypatch.setattr(fr, "solver_code_version", lambda: "f" * 16)
    c = load_or_generate(case, tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2 and torch.equal(c.u, a.u)
    # the full config is in the key: another dtype or case is another file
    assert fr.reference_key(case, torch.float64) != fr.reference_key(case)
    assert fr.reference_key(ReferenceCase("kolmogorov", n=16, factor=1, steps=3, warmup=0)) != fr.reference_key(case)
    with pytest.raises(InputError, match="is a file"):
        load_or_generate(case, first)


def test_reference_refuses_a_coarse_grid_without_the_cylinder_before_the_fine_run():
    """The fine grid (n=32) has the cylinder, the coarse one (n=8, D=0.125) does not: refused
    up front, not after minutes of fine steps."""
    import time

    case = ReferenceCase("karman", n=8, factor=4, steps=400, warmup=400, diameter=0.125)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"n=8 .*n >= 16"):
        generate_reference(case)
    assert time.perf_counter() - t0 < 5.0


def _trainer(traj, variant, ckpt=None, iterations=4, resume=True, al_update_every=1):
    torch.manual_seed(0)
    corr = make_corrector(variant, dtype=F64, hidden=4, layers=2, use_reynolds=True, init_gain=0.1)
    cfg = TrainConfig(variant=variant, unroll=4, iterations=iterations, lr=1e-3, checkpoint_every=1,
                      al_update_every=al_update_every, validate_every=0, al_tolerance=1e-6)
    return CorrectorTrainer(corr, [traj], cfg, checkpoint=ckpt, resume=resume)


def test_interrupted_training_resumes_exactly(tmp_path, tiny_traj):
    full = _trainer(tiny_traj, "al")
    full.train(progress=False)
    ckpt = tmp_path / "c.ckpt"
    part = _trainer(tiny_traj, "al", ckpt=ckpt)
    part.train(iterations=2, progress=False)            # "killed" after 2 iterations
    assert ckpt.exists()
    resumed = _trainer(tiny_traj, "al", ckpt=ckpt)
    assert resumed.iteration == 2 and resumed.al.iterations == 2
    resumed.train(progress=False)
    assert resumed.iteration == 4
    for (k, a), (_, b) in zip(full.corrector.state_dict().items(), resumed.corrector.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), k
    assert [r["k0"] for r in full.history] == [r["k0"] for r in resumed.history]
    with pytest.raises(InputError, match="variant"):
        _trainer(tiny_traj, "soft", ckpt=ckpt)


def test_the_augmented_lagrangian_updates_on_the_mean_violation_and_resumes_mid_way(tmp_path, tiny_traj):
    """The AL holds the per-step RMS divergence below al_tolerance (an inequality: multipliers
    >= 0) and updates its multipliers from the violation averaged over the windows since the last
    update (corrector audit M1: one random window against the previous one grew mu from 10 to
    8.4e7); a run killed between two updates resumes exactly."""
    full = _trainer(tiny_traj, "al", iterations=6, al_update_every=3)
    seen, windows = [], []
    real_update, real_violation = full.al.update, full.al_violation
    full.al.update = lambda v: (seen.append(v.clone()), real_update(v))[1]

    def violation(div):
        out = real_violation(div)
        if not out.requires_grad:                  # the hook's copy, once per iteration
            windows.append(out.clone())
        return out

    full.al_violation = violation
    full.train(progress=False)
    assert full.al.iterations == 2 and len(seen) == 2 and len(windows) == 6
    assert torch.allclose(seen[0], torch.stack(windows[:3]).mean(0)) and not torch.allclose(seen[0], windows[2])
    assert torch.allclose(seen[1], torch.stack(windows[3:]).mean(0))
    assert full.al.inequality and bool((full.al.multipliers >= 0).all())
    ckpt = tmp_path / "al.ckpt"
    part = _trainer(tiny_traj, "al", ckpt=ckpt, iterations=6, al_update_every=3)
    part.train(iterations=2, progress=False)            # killed with two windows summed
    resumed = _trainer(tiny_traj, "al", ckpt=ckpt, iterations=6, al_update_every=3)
    assert resumed.al_since_update[1] == 2
    resumed.train(progress=False)
    assert torch.equal(resumed.al.multipliers, full.al.multipliers) and resumed.al.penalty == full.al.penalty
    for (k, a), (_, b) in zip(full.corrector.state_dict().items(), resumed.corrector.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), k


def test_an_augmented_lagrangian_checkpoint_of_the_equality_form_is_refused(tmp_path, tiny_traj):
    """A checkpoint from before the inequality form (no al_tolerance in its settings) resumed
    into it without a word (review of 358bdb8)."""
    from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint

    ckpt = tmp_path / "old.ckpt"
    _trainer(tiny_traj, "al", ckpt=ckpt, iterations=2).train(progress=False)
    st = load_checkpoint(ckpt)
    del st["config"]["al_tolerance"]
    save_checkpoint(ckpt, st)
    with pytest.raises(InputError, match="augmented-Lagrangian variant before 358bdb8"):
        _trainer(tiny_traj, "al", ckpt=ckpt, iterations=4)


def test_a_checkpoint_of_other_settings_or_data_is_refused_not_resumed(tmp_path, tiny_traj):
    """Resuming must mean the same optimisation: a checkpoint made with another learning rate or
    unroll, or on other reference trajectories, is refused by name; a longer run (more iterations)
    resumes."""
    import dataclasses

    ckpt = tmp_path / "c.ckpt"
    _trainer(tiny_traj, "hard", ckpt=ckpt, iterations=2).train(progress=False)
    longer = _trainer(tiny_traj, "hard", ckpt=ckpt, iterations=3)
    assert longer.iteration == 2
    for change, text in ((dict(lr=2e-3), "lr"), (dict(unroll=3), "unroll"), (dict(seed=1), "seed")):
        torch.manual_seed(0)
        corr = make_corrector("hard", dtype=F64, hidden=4, layers=2, use_reynolds=True, init_gain=0.1)
        cfg = dataclasses.replace(longer.config, **change)
        with pytest.raises(InputError, match=text):
            CorrectorTrainer(corr, [tiny_traj], cfg, checkpoint=ckpt)
    other = dataclasses.replace(tiny_traj, u=tiny_traj.u * 1.01)
    with pytest.raises(InputError, match="other reference trajectories"):
        _trainer(other, "hard", ckpt=ckpt, iterations=2)
    # another network or dtype: float32 weights went on in a float64 run; other channels: a raw error
    for net, text in ((dict(dtype=torch.float32), "dtype 'float64' -> 'float32'"), (dict(hidden=8), "hidden 4 -> 8")):
        torch.manual_seed(0)
        kw = dict(dtype=F64, hidden=4, layers=2, use_reynolds=True, init_gain=0.1) | net
        with pytest.raises(InputError, match=re.escape(text)):
            CorrectorTrainer(make_corrector("hard", **kw), [tiny_traj], longer.config, checkpoint=ckpt)


@pytest.mark.parametrize("variant", ["hard", "plain", "soft", "al", "projected"])
def test_each_variant_lowers_its_window_loss(tiny_traj, variant):
    tr = _trainer(tiny_traj, variant)
    case = tr.cases[0]
    loss0, fit0, div0 = tr.window_loss(case, 3)
    assert div0.shape == (4,)
    if variant == "hard":
        assert float(div0.detach().max()) <= 1e-12
    elif variant in ("plain", "soft", "al"):
        assert float(div0.detach().min()) > 1e-6
    for _ in range(8):
        tr.optimizer.zero_grad()
        loss, _, _ = tr.window_loss(case, 3)
        loss.backward()
        tr.optimizer.step()
    loss1, fit1, _ = tr.window_loss(case, 3)
    assert float(loss1.detach()) < float(loss0.detach())


def test_rollout_errors_in_the_taichi_loop(tiny_traj):
    """The rollout error is the relative L2 free-face error against the reference, computed here
    independently; a zero-gain corrector (weights zeroed) reproduces the uncorrected run exactly;
    a random one changes it by more than rounding while keeping the divergence in tolerance."""
    torch.manual_seed(0)
    corr = make_corrector("hard", dtype=torch.float32, hidden=4, layers=2, use_reynolds=True)
    r = rollout_errors(tiny_traj, corr, steps=5)
    r0 = rollout_errors(tiny_traj, None, steps=5)
    assert len(r["error"]) == 5 and r0["steps"] == 5
    # it ran at the reference's Re 80 (below: the errors differ from the plain run) and gave the
    # corrector back with its own Reynolds number (None: made without one)
    assert max(r["div_max_rel"]) <= 1e-6 and corr.reynolds is None
    # independent check of the uncorrected errors: the plain coarse solver from reference state 0,
    # against each reference state as the coarse solver starts from it (fixed faces reset, projected)
    sc, solver = tiny_traj.initial_state(dtype=torch.float32)
    free_u, free_v = solver.ubc[0].double(), solver.vbc[0].double()
    expected = []
    for k in range(1, 6):
        solver.step(sc.state)
        ref_state = tiny_traj.initial_state(dtype=F64, index=k)[0].state
        ru, rv = ref_state.u, ref_state.v
        du = (sc.state.u.double() - ru) * free_u
        dv = (sc.state.v.double() - rv) * free_v
        ref = (ru * free_u).pow(2).sum() + (rv * free_v).pow(2).sum()
        expected.append(float(((du.pow(2).sum() + dv.pow(2).sum()) / ref).sqrt()))
    assert r0["error"] == pytest.approx(expected, rel=1e-12, abs=0)
    assert 1e-3 < min(r0["error"]) and max(r0["error"]) < 0.5    # a real coarse-vs-fine gap, not a blow-up
    # zero gain: exactly the uncorrected run
    zero = make_corrector("hard", dtype=torch.float32, hidden=4, layers=2, use_reynolds=True)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    rz = rollout_errors(tiny_traj, zero, steps=5)
    assert rz["error"] == r0["error"] and rz["div_max_rel"] == r0["div_max_rel"]
    # a random corrector acts: its errors differ from the plain run's beyond float32 rounding
    assert max(abs(a - b) for a, b in zip(r["error"], r0["error"])) > 1e-5
    with pytest.raises(InputError, match="50 steps"):
        rollout_errors(tiny_traj, None, steps=50)


def test_bad_training_settings():
    with pytest.raises(InputError, match="variant"):
        TrainConfig(variant="magic")
    with pytest.raises(InputError, match="unroll"):
        TrainConfig(unroll=0)
    with pytest.raises(InputError, match="variant"):
        make_corrector("magic")
    with pytest.raises(InputError, match="trajectory"):
        CorrectorTrainer(make_corrector("hard"), [], TrainConfig())


def test_validation_rollouts_keep_the_best_weights(tiny_traj):
    torch.manual_seed(0)
    corr = make_corrector("hard", dtype=F64, hidden=4, layers=2, use_reynolds=True, init_gain=0.1)
    cfg = TrainConfig(variant="hard", unroll=4, iterations=4, lr=1e-2, validate_every=2, validation_steps=3)
    tr = CorrectorTrainer(corr, [tiny_traj], cfg)
    hist = tr.train(progress=False)
    vals = [r["validation_error"] for r in hist if "validation_error" in r]
    assert len(vals) == 2 and tr.best["error"] == min(vals)
    for k, t in corr.state_dict().items():
        assert torch.equal(t, tr.best["model"][k])
    assert tr.scheduler.get_last_lr()[0] == pytest.approx(1e-3)    # cosine-annealed to lr/10


def test_a_damaged_reference_cache_is_regenerated_not_used(tmp_path):
    """torch.load does not check the archive's CRCs, so a flipped bit in a cached fine reference
    came back as data (a velocity of -5e-79 for -0.060) instead of being regenerated."""
    case = ReferenceCase("kolmogorov", n=16, factor=1, steps=2, warmup=0)
    a = load_or_generate(case, tmp_path)
    (path,) = tmp_path.glob("*.pt")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data/0") + 400                  # inside the first stored tensor
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))
    b = load_or_generate(case, tmp_path)
    assert torch.equal(b.u, a.u) and torch.equal(b.v, a.v)


# --------------------------------------------------------------------------------------------
# the targets: the reference in the coarse solver's own form (fixed faces reset, projected)
# --------------------------------------------------------------------------------------------

_OBSTACLE_CASES = [ReferenceCase("karman", n=8, factor=2, steps=6, warmup=2, re=80.0),
                   ReferenceCase("karman", n=16, factor=4, steps=4, warmup=2, re=150.0)]
_REFS = {}


def _ref(case):
    if case not in _REFS:
        _REFS[case] = generate_reference(case, dtype=F64, progress=False)
    return _REFS[case]


def _free(solver, periodic):
    fu, fv = solver.ubc[0].clone(), solver.vbc[0].clone()
    if periodic[0]:
        fu[-1] = 0.0
    if periodic[1]:
        fv[:, -1] = 0.0
    return fu, fv


@pytest.mark.parametrize("case", _OBSTACLE_CASES, ids=lambda c: f"{c.label}_f{c.factor}")
def test_coarse_velocity_is_the_divergence_free_reference_closest_to_the_restricted_one(case):
    """Next to the cylinder the restricted fine field carries flow through faces the coarse mask
    holds solid; with those faces at 0 it is not divergence-free on the coarse grid (a relative
    divergence of order 0.1-1 in the cells beside the body). ``coarse_velocity`` is every state
    as ``initial_state`` starts from it: fixed faces prescribed, divergence-free to the projection's
    tolerance, and the orthogonal (L2-closest on the free faces) admissible field."""
    traj = _ref(case)
    raw_u, raw_v = traj.u.clone(), traj.v.clone()
    cu, cv = traj.coarse_velocity(F64)
    assert cu.shape == traj.u.shape and cv.shape == traj.v.shape and cu.dtype == F64
    assert torch.equal(traj.u, raw_u) and torch.equal(traj.v, raw_v)      # the records are left as they were
    sc, solver = traj.initial_state(dtype=F64)
    solid, per = sc.state.solid, sc.state.boundary.periodic_axes
    fu, fv = _free(solver, per)
    ubc, vbc = solver.ubc, solver.vbc
    g = torch.Generator().manual_seed(0)
    for k in range(traj.u.shape[0]):
        u, v, ru, rv = cu[k], cv[k], traj.u[k], traj.v[k]
        scale = float(u.abs().max())
        assert float(((u - ubc[1]) * (1 - ubc[0])).abs().max()) == 0.0
        assert float(((v - vbc[1]) * (1 - vbc[0])).abs().max()) == 0.0
        div = ((u[1:] - u[:-1]) + (v[:, 1:] - v[:, :-1]))[~solid]
        assert float(div.abs().max()) <= 1e-9 * scale
        # the restricted field with the coarse fixed faces reset: divergent beside the body
        uu, vv = ubc[0] * ru + (1 - ubc[0]) * ubc[1], vbc[0] * rv + (1 - vbc[0]) * vbc[1]
        raw = ((uu[1:] - uu[:-1]) + (vv[:, 1:] - vv[:, :-1]))[~solid]
        assert float(raw.abs().max()) > 0.05 * scale
        # orthogonal: any other admissible field w = c + curl(psi held on the bodies) is farther
        psi = torch.randn(u.shape[0], v.shape[1], generator=g, dtype=F64) * 0.01
        from lawful.fluids.corrector_geometry import corner_geometry, pin_stream_function
        geom = corner_geometry(sc.state.boundary, solid, F64)
        du, dv = curl_torch(pin_stream_function(psi, geom), sc.state.dx, per)
        cross = float(((du * (u - ru)) * fu).sum() + ((dv * (v - rv)) * fv).sum())
        norm = float((((u - ru) * fu).pow(2).sum() + ((v - rv) * fv).pow(2).sum()).sqrt()
                     * ((du * fu).pow(2).sum() + (dv * fv).pow(2).sum()).sqrt())
        assert abs(cross) <= 1e-8 * norm
    for k in (0, traj.u.shape[0] - 1):
        s_k, _ = traj.initial_state(dtype=F64, index=k)
        assert torch.allclose(s_k.state.u, cu[k], rtol=0, atol=1e-12)
        assert torch.allclose(s_k.state.v, cv[k], rtol=0, atol=1e-12)


class _Oracle(torch.nn.Module):
    """A 'corrector' whose correction puts the state on the given targets, one per call."""

    def __init__(self, targets):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros((), dtype=F64))
        self.config = {}
        self.targets = list(targets)

    @property
    def dtype(self):
        return F64

    def correction(self, u, v, geom, dx, scalars=None, reynolds=None):
        tu, tv = self.targets.pop(0)
        return tu - u + self.w, tv - v


@pytest.mark.parametrize("case", _OBSTACLE_CASES, ids=lambda c: f"{c.label}_f{c.factor}")
def test_a_corrector_that_reaches_the_admissible_reference_has_zero_loss_and_error(case):
    """The window loss and the rollout error measure the distance to the reference as a coarse
    state can be (``initial_state`` at each index): a correction that puts every step on it scores
    0. Against the raw restricted states the best any coarse state could score was the 4 % the
    restriction puts through the coarse obstacle's faces (window fit 1e-3, errors 0.03-0.05)."""
    traj = _ref(case)
    steps, k0 = 3, 1
    admissible = [traj.initial_state(dtype=F64, index=k)[0].state for k in range(k0, k0 + steps + 1)]
    oracle = _Oracle([(s.u, s.v) for s in admissible[1:]])
    tr = CorrectorTrainer(oracle, [traj], TrainConfig(variant="plain", unroll=steps, iterations=1, validate_every=1000))
    u0, v0, _ = tr._start(tr.cases[0], k0)
    assert torch.allclose(u0, admissible[0].u, rtol=0, atol=1e-12)      # a window starts at its target
    _, fit, _ = tr.window_loss(tr.cases[0], k0)
    assert float(fit.detach()) <= 1e-24
    # the same in the Taichi loop
    seen = []

    def oracle_loop(state):
        s = admissible[state.step + 1]
        seen.append(state.step)
        return s.u - state.u, s.v - state.v

    r = rollout_errors(traj, oracle_loop, steps=steps, start=k0, dtype=F64)
    assert seen == list(range(steps)) and max(r["error"]) <= 1e-11
    # and the uncorrected solver's error is the same distance the window loss uses
    r0 = rollout_errors(traj, None, steps=steps, start=k0, dtype=F64)
    sc, solver = traj.initial_state(dtype=F64, index=k0)
    fu, fv = _free(solver, sc.state.boundary.periodic_axes)
    for j in range(steps):
        solver.step(sc.state)
        a = admissible[j + 1]
        num = ((sc.state.u - a.u) * fu).pow(2).sum() + ((sc.state.v - a.v) * fv).pow(2).sum()
        den = (a.u * fu).pow(2).sum() + (a.v * fv).pow(2).sum()
        assert r0["error"][j] == pytest.approx(float((num / den).sqrt()), rel=1e-9)


@pytest.mark.parametrize("n, factor", [(16, 2), (16, 4), (32, 4)])
def test_the_fine_reference_holds_the_coarse_cylinder(n, factor):
    """The Kármán scene puts its cylinder a quarter of its own cell above the axis, and the fine
    reference was built at its own resolution: at 4x its cylinder sat 3/16 of a coarse cell lower
    than the coarse one (its symmetry-breaking offset 4x weaker), a reference of another flow
    (audit). Every resolution of a case now holds the coarse centre; the fine mask restricted to
    the coarse grid covers the coarse mask's cells at least half (their centres lie in the disc)."""
    from lawful.fluids.fine_reference import downsample_cells

    case = ReferenceCase("karman", n=n, factor=factor, re=150.0)
    coarse, fine = coarse_scene(case), coarse_scene(case, n=n * factor)
    (cx, cy), (fx, fy) = coarse.obstacles[0].centre, fine.obstacles[0].centre
    assert (fx, fy) == (cx, cy) == (0.5, 0.5 + 0.25 / n)
    assert fine.params["centre_y"] == coarse.params["centre_y"]
    share = downsample_cells(fine.state.solid.double(), factor)           # fine solid share of each coarse cell
    assert bool((share[coarse.state.solid] >= 0.5 - 1e-12).all())


@pytest.mark.parametrize("centre_y", [0.0, 0.05, 0.97, 1.2, float("nan"), True, "0.5"])
def test_karman_refuses_a_cylinder_outside_the_channel(centre_y):
    from lawful.fluids import scenes

    with pytest.raises(InputError, match="centre_y"):
        scenes.karman(n=16, centre_y=centre_y)
