"""The neural correctors (lawful.fluids.correctors) inside the Taichi solver loop."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lawful.kernels import InputError, ModelFileError, ShapeError
from lawful.kernels.mac_grid import Boundary
from lawful.kernels.mac_operators import curl, curl_torch
from lawful.fluids import scenes
from lawful.fluids.correctors import (DivergenceFreeCorrector, UnconstrainedCorrector, corner_geometry,
                                      load_corrector)
from lawful.fluids.solver import run

F32, F64 = torch.float32, torch.float64


def _grids():
    box = torch.zeros(10, 9, dtype=torch.bool)
    box[4:6, 3:5] = True                      # an obstacle inside a closed box
    chan = torch.zeros(16, 8, dtype=torch.bool)
    chan[5:7, 3:5] = True                     # a cylinder-like block in a channel
    chan[11, 6] = True                        # and a second body
    return [(Boundary.periodic(), torch.zeros(12, 10, dtype=torch.bool)),
            (Boundary.box("no_slip"), box),
            (Boundary.channel(1.0), chan),
            (Boundary("periodic", "periodic", "free_slip", "free_slip"), torch.zeros(8, 6, dtype=torch.bool))]


@pytest.mark.parametrize("dtype,tol", [(F32, 1e-6), (F64, 1e-14)])
@pytest.mark.parametrize("k", range(4))
def test_curl_of_random_psi_is_divergence_free_and_carries_no_flux_through_solids(dtype, tol, k):
    """For ANY weights (random, large gain): zero discrete divergence to rounding, no flow through
    walls, obstacles or inflow faces; Taichi curl == torch curl; mean flow only where allowed."""
    boundary, solid = _grids()[k]
    nx, ny = solid.shape
    g = torch.Generator().manual_seed(k)
    for trial in range(3):
        torch.manual_seed(10 * k + trial)
        net = DivergenceFreeCorrector(hidden=8, layers=3, dtype=dtype, init_gain=3.0)
        u = torch.randn(nx + 1, ny, generator=g, dtype=F64).to(dtype)
        v = torch.randn(nx, ny + 1, generator=g, dtype=F64).to(dtype)
        geom = corner_geometry(boundary, solid, dtype)
        psi, mean = net.stream_function(u, v, geom, 0.7)
        psi = psi.detach()
        du = torch.zeros_like(u)
        dv = torch.zeros_like(v)
        curl(psi.contiguous(), du, dv, 0.7, geom.periodic)               # the solver's Taichi kernel
        tu, tv = curl_torch(psi, 0.7, geom.periodic)
        assert torch.allclose(du, tu, rtol=0, atol=4 * torch.finfo(dtype).eps * float(du.abs().max()))
        d = (du[1:] - du[:-1]) + (dv[:, 1:] - dv[:, :-1])
        assert float(d.abs().max()) <= tol * float(max(du.abs().max(), dv.abs().max()))
        assert float(du.abs().max()) > 1e-3                               # not trivially zero
        # no flux through fixed faces (walls, obstacles, inflow)
        assert float((du * (1 - geom.ubc[0])).abs().max()) == 0.0
        assert float((dv * (1 - geom.vbc[0])).abs().max()) == 0.0
        # psi is one constant per solid body
        for b in range(geom.n_bodies):
            vals = psi[geom.body == b]
            assert float(vals.max() - vals.min()) == 0.0
        allowed = geom.mean_axes
        assert float((mean.detach() * (1 - allowed)).abs().max()) == 0.0
    if k == 0:
        assert float(mean.detach().abs().min()) > 0.0       # periodic, no obstacle: mean flow learnt
    if k == 2:
        assert geom.n_bodies == 3                            # outer walls+inflow, block, second body


def _div_loop(scene, corrector, steps):
    """Run the Taichi solver with the corrector in the loop; return per-step (relative divergence of
    the corrected field, relative divergence of the correction alone, |correction| / |u|)."""
    solver = scene.make_solver()
    st = scene.state
    out = []
    for _ in range(steps):
        before = {}

        def wrapped(state):
            before["u"], before["v"] = state.u.clone(), state.v.clone()
            return corrector(state)

        solver.step(st, wrapped)
        u, v = st.u.double(), st.v.double()
        scale = max(float(u.abs().max()), float(v.abs().max()))
        d = ((u[1:] - u[:-1]) + (v[:, 1:] - v[:, :-1]))[~st.solid]
        cu, cv = u - before["u"].double(), v - before["v"].double()
        dc = ((cu[1:] - cu[:-1]) + (cv[:, 1:] - cv[:, :-1]))[~st.solid]
        out.append((float(d.abs().max()) / scale, float(dc.abs().max()) / scale,
                    max(float(cu.abs().max()), float(cv.abs().max())) / scale))
    return out


@pytest.mark.parametrize("dtype,tol,steps", [(F32, 1e-6, 10_000), (F64, 1e-12, 3000)])
def test_random_init_corrector_keeps_divergence_in_the_taichi_loop(dtype, tol, steps):
    """Random-init divergence-free corrector, every step of a long run: the corrected field's relative
    divergence stays below 1e-6 (f32) / 1e-12 (f64) and the correction itself adds only rounding.
    (benchmarks/bench_corrector.py runs the 10^4-step table for both dtypes, trained weights and
    the baselines.)"""
    sc = scenes.kolmogorov(n=8, dtype=dtype, viscosity=0.05, wavenumber=2)
    sc.config = replace(sc.config, pressure_rtol=1e-6 if dtype == F32 else 1e-13)
    torch.manual_seed(0)
    corr = DivergenceFreeCorrector(hidden=8, layers=3, dtype=dtype)
    res = _div_loop(sc, corr, steps)
    assert max(r[0] for r in res) <= tol
    assert max(r[1] for r in res) <= 8 * torch.finfo(dtype).eps
    assert min(r[2] for r in res) > 1e-4                       # the corrector really acts


def test_divergence_free_corrector_in_a_channel_with_obstacle():
    sc = scenes.karman(re=100, n=8, aspect=2, diameter=0.25, dtype=F64)
    sc.config = replace(sc.config, pressure_rtol=1e-13)
    torch.manual_seed(1)
    corr = DivergenceFreeCorrector(hidden=8, layers=3, dtype=F32, use_reynolds=True, reynolds=100.0,
                                   init_gain=0.2)              # f32 weights on an f64 state
    res = _div_loop(sc, corr, 50)
    assert max(r[0] for r in res) <= 1e-12
    solver = sc.make_solver()
    assert float((sc.state.u * (1 - solver.ubc[0]) - solver.ubc[1]).abs().max()) == 0.0


def test_unconstrained_corrector_breaks_divergence_and_projection_restores_it():
    sc = scenes.kolmogorov(n=8, dtype=F64, viscosity=0.05, wavenumber=2)
    torch.manual_seed(0)
    plain = UnconstrainedCorrector(hidden=8, layers=3, dtype=F64)
    res = _div_loop(sc, plain, 5)
    assert min(r[0] for r in res) > 1e-4
    sc = scenes.kolmogorov(n=8, dtype=F64, viscosity=0.05, wavenumber=2)
    proj = UnconstrainedCorrector(hidden=8, layers=3, dtype=F64, project=True, projection_rtol=1e-12)
    proj.load_state_dict(plain.state_dict())
    res = _div_loop(sc, proj, 5)
    assert max(r[0] for r in res) <= 1e-12
    assert proj.last_projection.iterations > 0


def test_run_records_in_loop_metrics_with_a_corrector(tmp_path):
    sc = scenes.taylor_green(n=8, dtype=F32)
    corr = DivergenceFreeCorrector(hidden=8, layers=2)
    recs = run(sc, 20, corrector=corr, csv=tmp_path / "m.csv")
    assert len(recs) == 20 and all(r["div_max_rel"] <= 1e-6 for r in recs)
    assert (tmp_path / "m.csv").read_text().count("\n") == 21


@pytest.mark.parametrize("cls,kw", [(DivergenceFreeCorrector, {"mean_flow": False}),
                                    (DivergenceFreeCorrector, {"use_reynolds": True, "reynolds": 150.0}),
                                    (UnconstrainedCorrector, {"project": True})])
def test_save_and_load_round_trip(tmp_path, cls, kw):
    torch.manual_seed(0)
    a = cls(hidden=6, layers=3, dtype=F64, **kw)
    a.save(tmp_path / "c.lawful", metadata={"note": "test"})
    b = load_corrector(tmp_path / "c.lawful")
    assert type(b) is cls and b.dtype == F64 and b.metadata["note"] == "test"
    for (ka, ta), (kb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(ta, tb)
    geom = corner_geometry(Boundary.periodic(), torch.zeros(6, 6, dtype=torch.bool), F64)
    u, v = torch.randn(7, 6, dtype=F64), torch.randn(6, 7, dtype=F64)
    for x, y in zip(a.correction(u, v, geom, 1.0), b.correction(u, v, geom, 1.0)):
        assert torch.equal(x, y)
    c = load_corrector(tmp_path / "c.lawful", dtype=F32)
    assert c.dtype == F32


def test_load_rejects_other_files(tmp_path):
    from lawful.kernels.modelfile import save_model_file

    save_model_file(tmp_path / "p.lawful", kind="NeuralPotential", config={}, tensors={"w": torch.zeros(2)})
    with pytest.raises(ModelFileError):
        load_corrector(tmp_path / "p.lawful")
    (tmp_path / "junk.lawful").write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        load_corrector(tmp_path / "junk.lawful")
    with pytest.raises(ModelFileError):
        load_corrector(tmp_path / "missing.lawful")


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputError, match="layers"):
        DivergenceFreeCorrector(layers=1)
    with pytest.raises(InputError, match="kernel_size"):
        DivergenceFreeCorrector(kernel_size=4)
    with pytest.raises(InputError, match="velocity_scale"):
        DivergenceFreeCorrector(velocity_scale=-1.0)
    with pytest.raises(InputError, match="dtype"):
        DivergenceFreeCorrector(dtype=torch.float16)
    net = DivergenceFreeCorrector(hidden=4, layers=2, use_reynolds=True)
    geom = corner_geometry(Boundary.periodic(), torch.zeros(6, 6, dtype=torch.bool))
    with pytest.raises(InputError, match="Reynolds"):
        net.correction(torch.zeros(7, 6), torch.zeros(6, 7), geom, 1.0)
    with pytest.raises(ShapeError, match="do not fit"):
        net.correction(torch.zeros(8, 6), torch.zeros(6, 7), geom, 1.0, reynolds=10.0)
    net2 = DivergenceFreeCorrector(hidden=4, layers=2, n_scalars=2)
    with pytest.raises(ShapeError, match="n_scalars"):
        net2.correction(torch.zeros(7, 6), torch.zeros(6, 7), geom, 1.0)
    with pytest.raises(InputError, match="fluid state"):
        net2(object())


def test_for_scene_and_bind():
    sc = scenes.karman(re=120.0, n=8, aspect=2, diameter=0.25, dtype=F64)
    corr = DivergenceFreeCorrector.for_scene(sc, hidden=4, layers=2)
    assert corr.dtype == F64 and corr.config["use_reynolds"] and corr.reynolds == 120.0
    run(sc, 3, corrector=corr)
    other = scenes.karman(re=90.0, n=8, aspect=2, diameter=0.25)
    assert corr.bind(other).reynolds == 90.0
    tg = DivergenceFreeCorrector.for_scene(scenes.taylor_green(n=8), hidden=4, layers=2)
    assert not tg.config["use_reynolds"] and tg.dtype == F32


TRAINED = Path(__file__).resolve().parents[1] / "benchmarks" / "models" / "corrector_karman_hard.lawful"


@pytest.mark.parametrize("dtype,tol", [(F32, 1e-6), (F64, 1e-12)])
def test_trained_corrector_keeps_divergence_in_the_taichi_loop(dtype, tol):
    """The committed trained Kármán corrector (benchmarks/bench_corrector.py), in a channel with a
    cylinder: every step's corrected field within the tolerance, no flow through the walls."""
    corr = load_corrector(TRAINED, dtype=dtype)
    sc = scenes.karman(re=150.0, n=8, aspect=2, diameter=0.25, dtype=dtype)
    sc.config = replace(sc.config, pressure_rtol=1e-6 if dtype == F32 else 1e-13)
    corr.bind(sc)
    res = _div_loop(sc, corr, 500)
    assert max(r[0] for r in res) <= tol
    assert max(r[1] for r in res) <= 8 * torch.finfo(dtype).eps
    assert min(r[2] for r in res) > 1e-5


def _geom_equal(a, b):
    return (a.n_bodies == b.n_bodies and a.periodic == b.periodic and torch.equal(a.pinned, b.pinned)
            and torch.equal(a.body, b.body) and torch.equal(a.fluid_corner, b.fluid_corner)
            and torch.equal(a.ubc[0], b.ubc[0]) and torch.equal(a.vbc[0], b.vbc[0])
            and torch.equal(a.mean_axes, b.mean_axes))


def _apply_and_check(corr, boundary, solid, seed):
    """Call ``corr`` in place on a random state over ``boundary``/``solid``; assert the geometry it
    used is that of ``solid`` and that its correction is divergence-free with no flux through
    ``solid``'s fixed faces."""
    from lawful.fluids.state import FluidState

    nx, ny = solid.shape
    g = torch.Generator().manual_seed(seed)
    st = FluidState.zeros(nx, ny, 0.5, boundary, solid=solid, dtype=F64)
    st.u.copy_(torch.randn(st.u.shape, generator=g, dtype=F64))
    st.v.copy_(torch.randn(st.v.shape, generator=g, dtype=F64))
    u0, v0 = st.u.clone(), st.v.clone()
    corr(st)
    fresh = corner_geometry(boundary, solid, corr.dtype)
    assert _geom_equal(corr._geometry(boundary, st.solid), fresh)
    du, dv = st.u - u0, st.v - v0
    d = ((du[1:] - du[:-1]) + (dv[:, 1:] - dv[:, :-1]))[~solid]
    scale = float(max(du.abs().max(), dv.abs().max()))
    assert scale > 1e-6                                                  # it acted
    assert float(d.abs().max()) <= 1e-13 * scale                        # divergence-free
    assert float((du * (1 - fresh.ubc[0])).abs().max()) == 0.0          # no flux through the NEW mask
    assert float((dv * (1 - fresh.vbc[0])).abs().max()) == 0.0


def test_corrector_geometry_follows_changing_obstacles():
    """Issue 12 (stale geometry): one corrector reused on obstacle masks that change -- a new mask
    that reuses a freed mask's id, an in-place edit (also through a NumPy view, which does not bump
    torch's version counter), a new scene -- always uses the geometry of the mask it is given."""
    torch.manual_seed(0)
    corr = DivergenceFreeCorrector(hidden=4, layers=2, dtype=F64, init_gain=2.0)
    channel = Boundary.channel(1.0)
    reused = 0
    last_id = None
    for trial in range(12):                                   # masks freed and re-allocated
        solid = torch.zeros(16, 8, dtype=torch.bool)
        solid[2 + trial % 10: 4 + trial % 10, 2 + trial % 4: 4 + trial % 4] = True
        reused += id(solid) == last_id
        _apply_and_check(corr, channel, solid, trial)
        last_id = id(solid)
        del solid
    solid = torch.zeros(16, 8, dtype=torch.bool)
    solid[5:7, 3:5] = True
    _apply_and_check(corr, channel, solid, 100)
    solid[10, 2] = True                                       # in-place edit (version bumped)
    _apply_and_check(corr, channel, solid, 101)
    solid.numpy()[12, 5] = True                               # in-place edit, version NOT bumped
    _apply_and_check(corr, channel, solid, 102)
    solid.numpy()[12, 5] = False                              # and back: the cached entry is reused
    builds = corr._geometry_cache.builds
    _apply_and_check(corr, channel, solid, 103)
    assert corr._geometry_cache.builds == builds and len(corr._geometry_cache) <= 4
    # a new scene: another boundary and size on the same corrector, in the solver loop
    sc = scenes.karman(re=100, n=8, aspect=2, diameter=0.25, dtype=F64)
    run(sc, 2, corrector=corr)
    assert _geom_equal(corr._geometry(sc.state.boundary, sc.state.solid),
                       corner_geometry(sc.state.boundary, sc.state.solid, F64))
    _apply_and_check(corr, Boundary.box("no_slip"), torch.zeros(9, 7, dtype=torch.bool), 104)
    # the trials above did exercise id reuse (CPython recycles the freed tensor object)
    assert reused >= 1, reused


def test_geometry_cache_is_owned_by_each_corrector():
    """Issue 17: no process-wide geometry cache; two correctors keep separate caches."""
    import lawful.fluids.corrector_geometry as cg

    a = DivergenceFreeCorrector(hidden=4, layers=2, dtype=F64)
    b = DivergenceFreeCorrector(hidden=4, layers=2, dtype=F64)
    solid = torch.zeros(8, 8, dtype=torch.bool)
    ga = a._geometry(Boundary.box(), solid)
    gb = b._geometry(Boundary.box(), solid)
    assert ga is not gb and a._geometry_cache is not b._geometry_cache
    assert a._geometry(Boundary.box(), solid) is ga                   # cached per owner
    assert not any(hasattr(obj, "cache_info") for obj in vars(cg).values())


def test_solver_slot_and_corrector_apply_a_stream_function_the_same_way():
    """One rule (corrector_geometry.apply_stream_function): the psi the corrector computes, handed to
    the solver's corrector slot, gives the field the corrector itself produces (to the rounding of
    re-averaging an already constant psi over each body)."""
    sc = scenes.karman(n=16, aspect=2, dtype=torch.float64)
    solver = sc.make_solver()
    solver.step(sc.state)
    corr = DivergenceFreeCorrector.for_scene(sc, init_gain=1.0)
    a, b = sc.state.clone(), sc.state.clone()
    geom = corr._geometry(a.boundary, a.solid)
    psi, mean = corr.stream_function(a.u, a.v, geom, a.dx, a.scalars, corr.reynolds)
    corr(a)
    solver.apply_correction(b, {"psi": psi.detach()})
    assert torch.allclose(a.u, b.u, rtol=0, atol=1e-13) and torch.allclose(a.v, b.v, rtol=0, atol=1e-13)
    assert float((a.u - sc.state.u).abs().max()) > 1e-8       # it did correct


@pytest.mark.parametrize("periodic", [(True, True), (True, False), (False, True), (False, False)])
def test_network_equals_padding_every_layer_circularly_or_with_zeros(periodic):
    """The corrector CNN adds its periodic halo once and lets each convolution use up its share;
    that must equal padding every layer (circular on periodic axes, zeros elsewhere)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    c = DivergenceFreeCorrector(hidden=6, layers=3, kernel_size=3, dtype=torch.float64)
    net = c.net
    x = torch.randn(2, 5, 9, 12, dtype=torch.float64)

    def pad(h):
        r = net.r
        h = torch.cat([h[..., -r:], h, h[..., :r]], -1) if periodic[1] else F.pad(h, (r, r, 0, 0))
        return torch.cat([h[..., -r:, :], h, h[..., :r, :]], -2) if periodic[0] else F.pad(h, (0, 0, r, r))

    h = x
    for conv in net.hidden_layers:
        h = F.silu(conv(pad(h)))
    want_out = net.out(pad(h))
    pool = torch.rand(9, 12, dtype=torch.float64)
    got_pooled, got_out = net(x, periodic, pool)
    assert got_out.shape == want_out.shape == (2, 1, 9, 12) and got_pooled.shape == (2, 6)
    assert torch.allclose(got_out, want_out, rtol=1e-12, atol=1e-14)
    # the last hidden features pooled with the weight map, per batch item
    assert torch.allclose(got_pooled, (h * pool).sum((2, 3)), rtol=1e-12, atol=1e-14)
    assert net(x, periodic)[0] is None


@pytest.mark.parametrize("boundary", [Boundary("periodic", "periodic", "no_slip", "no_slip"),
                                      Boundary("no_slip", "free_slip", "periodic", "periodic")],
                         ids=["periodic-x walls", "periodic-y walls"])
def test_hard_corrector_commutes_with_a_shift_along_a_periodic_axis(boundary):
    """A periodic channel has no preferred seam: shifting the input along the periodic axis shifts
    the correction (the walls' stream-function constants, hence the net flow the correction adds,
    do not depend on where the seam is). The duplicate seam corner used to count twice in each
    wall's mean: 8e-4 on an O(1) correction."""
    from lawful.fluids.corrector_geometry import corner_geometry

    torch.manual_seed(0)
    f64 = torch.float64
    nx, ny, s = 12, 8, 3
    axis = 0 if boundary.periodic_axes[0] else 1
    solid = torch.zeros(nx, ny, dtype=torch.bool)
    geom = corner_geometry(boundary, solid, f64)
    u = torch.randn(nx + 1, ny, dtype=f64)
    v = torch.randn(nx, ny + 1, dtype=f64)
    if axis == 0:
        u[-1] = u[0]
        v[:, 0] = v[:, -1] = 0.0
    else:
        v[:, -1] = v[:, 0]
        u[0] = u[-1] = 0.0

    def roll(q, periodic_dup):          # shift the canonical faces by s along the axis, rebuild the duplicate
        if not periodic_dup:
            return torch.roll(q, s, axis)
        core = q.narrow(axis, 0, q.shape[axis] - 1)
        r = torch.roll(core, s, axis)
        return torch.cat([r, r.narrow(axis, 0, 1)], axis)

    corr = DivergenceFreeCorrector(dtype=f64, init_gain=1.0)
    du, dv = corr.correction(u, v, geom, 1.0 / ny)
    du2, dv2 = corr.correction(roll(u, axis == 0), roll(v, axis == 1), geom, 1.0 / ny)
    assert torch.allclose(roll(du, axis == 0), du2, rtol=0, atol=1e-12)
    assert torch.allclose(roll(dv, axis == 1), dv2, rtol=0, atol=1e-12)


# the in-loop call's input buffer (kernels.corner_features) against the differentiable path, on
# every boundary kind: periodic, channel (inflow/outflow and walls), closed box, mixed; both dtypes
LOOP_SCENES = [("kolmogorov", {}), ("karman", dict(re=100)), ("lid_driven_cavity", dict(re=100)),
               ("taylor_green", {})]


@pytest.mark.parametrize("dtype,ulp", [(F32, 2.0 ** -23), (F64, 2.0 ** -52)])
@pytest.mark.parametrize("name,kw", LOOP_SCENES, ids=[s[0] for s in LOOP_SCENES])
def test_in_loop_call_equals_the_differentiable_path(name, kw, dtype, ulp):
    """corrector(state) builds its input in a kept buffer, rewriting the velocity channels with one
    Taichi launch per call; the input, and the corrected faces, equal features() + the network's
    halo and stream_function() + apply_stream_function to float rounding, call after call, and
    after the Reynolds number the network reads, or its scale, changes (the buffer's constant
    channel is rebuilt)."""
    from lawful.fluids.correctors import _wrap_halo
    from lawful.fluids.corrector_geometry import apply_stream_function

    sc = scenes.make(name, n=16, dtype=dtype, **kw)
    st = sc.state
    torch.manual_seed(0)
    corr = DivergenceFreeCorrector.for_scene(sc, init_gain=1.0)
    geom = corr._geometry(st.boundary, st.solid)
    g = torch.Generator().manual_seed(1)
    for call in range(5):
        if call == 3 and corr.config["use_reynolds"]:
            corr.reynolds = 150.0
        if call == 4 and corr.config["use_reynolds"]:
            corr.config["reynolds_scale"] *= 2.0      # the Reynolds channel's value changes again
        st.u.add_(0.1 * torch.randn(st.u.shape, generator=g, dtype=F64).to(dtype))
        st.v.add_(0.1 * torch.randn(st.v.shape, generator=g, dtype=F64).to(dtype))
        re = corr.reynolds
        x = corr._loop_input(st.u, st.v, geom, None)
        want = _wrap_halo(corr.features(st.u, st.v, geom, None, re), corr.net.halo, geom.periodic)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert float((x - want).abs().max()) <= 2 * ulp * max(1.0, float(want.abs().max()))
        u1, v1 = st.u.clone(), st.v.clone()
        with torch.no_grad():
            psi, mean = corr.stream_function(u1, v1, geom, st.dx, None, re)
            apply_stream_function(u1, v1, psi, geom, st.dx, mean, pinned=True)
        corr(st)
        scale = max(float(u1.abs().max()), float(v1.abs().max()))
        assert float((st.u - u1).abs().max()) <= 8 * ulp * scale
        assert float((st.v - v1).abs().max()) <= 8 * ulp * scale


@pytest.mark.parametrize("bad", ["out of another grid", "halo on a wall axis", "out in float64", "two channels",
                                 "halo wider than its axis", "v one row short"])
def test_corner_velocity_channels_refuses_mismatched_arrays(bad):
    from lawful.kernels.corner_features import corner_velocity_channels

    u, v = torch.zeros(9, 8), torch.zeros(8, 9)
    out, halo, per = torch.zeros(12, 12, 5), (2, 2), (True, True)
    if bad == "out of another grid":
        out = torch.zeros(13, 12, 5)
    elif bad == "halo on a wall axis":
        per = (True, False)
    elif bad == "out in float64":
        out = out.double()
    elif bad == "halo wider than its axis":           # 8 corners + 2 * 9 of halo, the shape consistent
        halo, out = (9, 2), torch.zeros(26, 12, 5)
    elif bad == "v one row short":                    # (nx, ny) instead of (nx, ny + 1): read past its end
        v = torch.zeros(8, 8)
    else:
        out = torch.zeros(12, 12, 2)
    with pytest.raises(ShapeError, match="corner_velocity_channels"):
        corner_velocity_channels(u, v, out, halo, per)
