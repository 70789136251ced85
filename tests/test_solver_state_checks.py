"""A Solver refuses a state it was not built for before any kernel runs (audit_rt F3, F4): passive
scalars of another count or name (the flux buffers, sources and buoyancy were set up for the
solver's names), and the scalar-advection kernel refuses buffers of another shape. Each refused
step leaves the state exactly as it was."""

import pytest
import torch

from lawful.fluids import FluidState, Solver, scenes
from lawful.kernels.errors import ShapeError
from lawful.kernels.mac_advection import advect_scalars

F64 = torch.float64


def _plume():
    """A buoyant smoke blob (buoyancy on scalar 'smoke') and its Solver."""
    sc = scenes.smoke_plume(n=20, source=False, dtype=F64)
    return sc, Solver(sc.state, sc.config)


def _state(sc, names):
    """A state on the plume's grid holding scalars ``names``, each a copy of the smoke blob."""
    st = FluidState.zeros(20, 20, sc.state.dx, sc.state.boundary, scalar_names=names, dtype=F64)
    for k in range(len(names)):
        st.scalars[k].copy_(sc.state.scalars[0])
    st.u.copy_(torch.linspace(-0.1, 0.1, st.u.numel(), dtype=F64).reshape(st.u.shape))
    return st


CASES = [
    # id, the state's scalar names, what the message must name
    ("one more scalar", ("smoke", "dye"), ["'smoke', 'dye'", "['smoke']"]),
    ("extra scalar first", ("dye", "smoke"), ["'dye', 'smoke'", "buoyancy scalar 'smoke'"]),
    ("renamed scalar gets no buoyancy", ("dye",), ["['dye']", "['smoke']", "buoyancy scalar 'smoke'"]),
    ("no scalar", (), ["[]", "['smoke']"]),
]


@pytest.mark.parametrize("names,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_state_with_other_scalars_is_refused_unchanged(names, needles):
    sc, solver = _plume()
    st = _state(sc, names)
    before = st.clone()
    with pytest.raises(ShapeError) as err:
        solver.step(st)
    for needle in needles:
        assert needle in str(err.value)
    assert "build a Solver for this state" in str(err.value)
    for name in ("u", "v", "p", "scalars"):
        assert torch.equal(getattr(st, name), getattr(before, name)), name
    assert (st.t, st.step) == (before.t, before.step)


def test_matching_state_still_steps_and_buoyancy_acts():
    """Positive control: the same construction with the solver's own scalar name runs, and the
    blob's buoyancy lifts the fluid (so the refusals above are not a broken set-up)."""
    sc, solver = _plume()
    st = _state(sc, ("smoke",))
    st.u.zero_()
    solver.step(st)
    assert st.step == 1 and float(st.v.max()) > 1e-3


@pytest.mark.parametrize("which,shape", [
    ("fx", (1, 9, 8)), ("fy", (1, 8, 9)), ("comp", (1, 8, 8)),        # buffers for one scalar, two given
    ("u", (8, 8)), ("v", (8, 8)),
])
def test_advect_scalars_refuses_buffers_of_another_shape(which, shape):
    ns, nx, ny = 2, 8, 8
    args = dict(s=torch.ones(ns, nx, ny, dtype=F64), fx=torch.zeros(ns, nx + 1, ny, dtype=F64),
                fy=torch.zeros(ns, nx, ny + 1, dtype=F64), u=torch.full((nx + 1, ny), 0.1, dtype=F64),
                v=torch.zeros(nx, ny + 1, dtype=F64), comp=torch.zeros(ns, nx, ny, dtype=F64))
    args[which] = torch.zeros(shape, dtype=F64)
    s0 = args["s"].clone()
    with pytest.raises(ShapeError, match=rf"{which} has shape \({', '.join(map(str, shape))}\)"):
        advect_scalars(args["s"], args["fx"], args["fy"], args["u"], args["v"], 0.1, 1.0, comp=args["comp"])
    assert torch.equal(args["s"], s0)


@pytest.mark.parametrize("change", [{"dt": 0.5}, {"pressure_rtol": 1e-6}, {"drag": 1.0}])
def test_config_cannot_be_replaced_after_the_solver_is_built(change):
    """``solver.config = replace(...)`` was taken half: dt and drag were read live, the pressure
    tolerance and a TorchStep's copy were not (a halved dt put the twin 5e-2 off the Taichi step,
    no error). It is refused, naming the fix, and the solver keeps its config and still steps."""
    from dataclasses import replace

    from lawful.fluids.torch_step import TorchStep
    from lawful.kernels.errors import InputError

    sc, solver = _plume()
    twin = TorchStep(solver)
    before = solver.config
    with pytest.raises(InputError, match=r"Build a new Solver\(state, new_config"):
        solver.config = replace(solver.config, **change)
    assert solver.config is before and twin.config is before
    u, v, s = sc.state.u.clone(), sc.state.v.clone(), sc.state.scalars.clone()
    tu, tv, ts, _ = twin(u, v, s)
    solver.step(sc.state)
    assert float((sc.state.u - tu).abs().max()) < 1e-9
    assert float((sc.state.scalars - ts).abs().max()) < 1e-9
