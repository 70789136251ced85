"""NeuralPotential: exact derivatives, invariances, smoothness at the cutoff, bad inputs, batches,
dtypes and the TorchScript export (float64 unless stated)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from lawful.forcefields import NeuralPotential, export_torchscript
from lawful.forcefields.batch import Batch
from lawful.forcefields.gradcheck import gradient_check
from lawful.kernels.errors import (InputError, LawfulError, NumericalError, ShapeError,
                                   UnsupportedSpeciesError)

CUTOFF = 4.0


def _random_cell(rng, length):
    """A random, clearly triclinic cell with rows of roughly ``length`` Å."""
    return length * (np.eye(3) + rng.uniform(-0.15, 0.15, (3, 3)))


def _random_positions(rng, cell, n, min_dist=1.6):
    """Positions in the cell with a minimum image-aware separation (rejection sampling)."""
    pos = []
    inv = np.linalg.inv(cell)
    while len(pos) < n:
        p = rng.uniform(0, 1, 3) @ cell
        ok = True
        for q in pos:
            d = p - q
            d = d - np.round(d @ inv) @ cell
            if np.linalg.norm(d) < min_dist:
                ok = False
                break
        if ok:
            pos.append(p)
    return np.array(pos)


def _calibrated(model, structures):
    """Put the model's feature normalisation on the scale of ``structures`` (so the untrained
    MLP works in its non-linear regime, as a trained one does) and give it a non-zero energy scale."""
    feats = []
    for s in structures:
        b = model.make_batch([s])
        vec = b.positions[b.edge_j] - b.positions[b.edge_i] + b.shifts @ b.cell[0]
        feats.append(model.features(b.positions, b.species, b.edge_i, b.edge_j, vec))
    f = torch.cat(feats)
    with torch.no_grad():
        model.feature_mean.copy_(f.mean(0))
        model.feature_std.copy_(f.std(0).clamp_min(1e-3))
        model.energy_scale.fill_(0.7)
        model.reference_energies.copy_(torch.tensor([-3.5, -4.2], dtype=model.dtype))
    return model


@pytest.fixture(scope="module")
def systems():
    rng = np.random.default_rng(42)
    small = _random_cell(rng, 3.3)                       # much smaller than 2 x cutoff
    big = _random_cell(rng, 6.5)
    out = {
        "small_cell": (_random_positions(rng, small, 2, 1.8), np.array([29, 28]), small, True),
        "periodic": (_random_positions(rng, big, 9, 1.9), rng.choice([28, 29], 9), big, True),
        "molecule": (_random_positions(rng, 4.0 * np.eye(3), 7, 1.5), np.array([29, 29, 28, 29, 28, 28, 29]),
                     None, False),
        # a slab: periodic in x and y only (the z row is not a lattice vector)
        "slab": (_random_positions(rng, np.diag([3.4, 3.6, 1.0]) @ (np.eye(3) + 0.1 * np.tri(3, k=-1)), 4, 1.0)
                 * np.array([1.0, 1.0, 3.0]), np.array([29, 28, 29, 28]),
                 np.diag([3.4, 3.6, 1.0]) @ (np.eye(3) + 0.1 * np.tri(3, k=-1)), [True, True, False]),
    }
    return out


@pytest.fixture(scope="module", params=[None, "zbl"], ids=["plain", "zbl"])
def model(systems, request):
    """The learned energy alone, and with the ZBL repulsion prior (its switch region, 1.24 to
    1.98 Å for Ni/Cu, holds the molecule's closest pairs: 11 eV of prior there; the periodic
    systems with the prior in action are in test_repulsion.py)."""
    m = NeuralPotential(["Ni", "Cu"], cutoff=CUTOFF, n_basis=6, n_radial=5, lmax=3, hidden=(16, 16), seed=3,
                        repulsion=request.param)
    return _calibrated(m, [v for k, v in systems.items() if k != "slab"])


def _energy(model, pos, num, cell, pbc):
    return float(model.evaluate(pos, num, cell, pbc)["energy"])


@pytest.mark.parametrize("name", ["small_cell", "periodic", "molecule", "slab"])
def test_forces_and_stress_match_finite_differences(model, systems, name):
    pos, num, cell, pbc = systems[name]
    res = gradient_check(model, pos, num, cell, pbc, h=1e-5)
    assert np.abs(res["forces_fd"]).max() > 1e-3                # a non-trivial check
    assert res["force_error"] <= 1e-6
    if pbc is True:
        assert np.abs(res["stress_fd"]).max() > 1e-5
        assert res["stress_error"] <= 1e-6
        assert np.allclose(res["stress"], res["stress"].T, atol=1e-12 * np.abs(res["stress"]).max())
    else:
        assert "stress_error" not in res


def test_gradient_check_catches_wrong_forces(model, systems):
    class Broken:
        cutoff = model.cutoff

        def evaluate(self, *args, **kwargs):
            out = model.evaluate(*args, **kwargs)
            out["forces"] = out["forces"] * 1.001
            return out

    pos, num, cell, pbc = systems["small_cell"]
    assert gradient_check(Broken(), pos, num, cell, pbc)["force_error"] > 5e-4


@pytest.mark.parametrize("name", ["periodic", "molecule", "small_cell"])
def test_invariances_and_force_rotation(model, systems, name, random_rotation):
    pos, num, cell, pbc = systems[name]
    rng = np.random.default_rng(7)
    ref = model.evaluate(pos, num, cell, pbc, stress=pbc)
    e0 = float(ref["energy"])
    tol = 1e-10 * max(1.0, abs(e0))
    # rotation (rows are vectors: r -> r Q^T), forces rotate the same way, stress as a tensor
    q = random_rotation(rng)
    rot = model.evaluate(pos @ q.T, num, None if cell is None else cell @ q.T, pbc, stress=pbc)
    assert abs(float(rot["energy"]) - e0) < tol
    assert np.allclose(rot["forces"].numpy(), ref["forces"].numpy() @ q.T, atol=1e-10, rtol=0)
    if pbc:
        assert np.allclose(rot["stress"].numpy(), q @ ref["stress"].numpy() @ q.T, atol=1e-12, rtol=0)
    # translation
    t = rng.normal(size=3) * 3.0
    assert abs(_energy(model, pos + t, num, cell, pbc) - e0) < tol
    # permutation of atoms (like atoms keep their element: permute both arrays together)
    perm = rng.permutation(len(pos))
    per = model.evaluate(pos[perm], num[perm], cell, pbc)
    assert abs(float(per["energy"]) - e0) < tol
    assert np.allclose(per["forces"].numpy(), ref["forces"].numpy()[perm], atol=1e-10, rtol=0)
    if pbc:
        # re-wrapping: move atoms by whole lattice vectors (and wrap back into the cell)
        shifts = rng.integers(-3, 4, size=(len(pos), 3))
        assert abs(_energy(model, pos + shifts @ cell, num, cell, pbc) - e0) < tol
        frac = pos @ np.linalg.inv(cell)
        wrapped = (frac - np.floor(frac)) @ cell
        assert abs(_energy(model, wrapped, num, cell, pbc) - e0) < tol


def test_swapping_two_like_atoms_changes_nothing(model, systems):
    pos, num, cell, pbc = systems["periodic"]
    like = np.nonzero(num == num[0])[0]
    perm = np.arange(len(pos))
    perm[like[0]], perm[like[1]] = like[1], like[0]
    e = model.evaluate(pos[perm], num, cell, pbc)["energy"]   # only positions swapped: same elements
    assert abs(float(e) - _energy(model, pos, num, cell, pbc)) < 1e-10


def _trimer(r):
    # atoms 0 and 1 bonded; atom 2 at distance r from atom 0 (and > r_c from atom 1) at an angle
    # of 115 degrees: the angular terms see it too.
    return np.array([[0.0, 0.0, 0.0], [2.3, 0.0, 0.0], [r * np.cos(2.0), r * np.sin(2.0), 0.0]])


def test_energy_and_forces_smooth_through_the_cutoff(model):
    num = np.array([29, 28, 29])
    far = model.evaluate(_trimer(CUTOFF + 0.5), num)
    e_far, f_far = float(far["energy"]), far["forces"].numpy()

    def delta(r):
        o = model.evaluate(_trimer(r), num)
        return float(o["energy"]) - e_far, np.abs(o["forces"].numpy() - f_far).max()

    # beyond the cutoff the third atom does not interact at all
    de, df = delta(CUTOFF + 1e-9)
    assert de == 0.0 and df == 0.0
    # inside: a zero of order 3 for the energy and of order 2 for the forces (C² at r_c)
    de1, df1 = delta(CUTOFF - 0.004)
    de2, df2 = delta(CUTOFF - 0.002)
    assert abs(de1) > 0 and df1 > 0
    assert 7.0 < de1 / de2 < 9.0
    assert 3.5 < df1 / df2 < 4.5
    # a dense scan across r_c: no jumps in energy or forces anywhere
    rs = np.linspace(CUTOFF - 0.3, CUTOFF + 0.1, 201)
    es, fs = zip(*[(float(o["energy"]), o["forces"].numpy()) for o in (model.evaluate(_trimer(r), num) for r in rs)])
    de_steps = np.abs(np.diff(es))
    df_steps = np.abs(np.diff(np.array(fs), axis=0)).max(axis=(1, 2))
    step = rs[1] - rs[0]
    assert de_steps.max() < 2 * step * np.abs(np.array(fs)).max()
    assert df_steps.max() < 20 * step * max(1e-6, np.abs(np.array(fs) - f_far).max())


def test_batch_equals_single_structures(model, systems):
    items = [systems["small_cell"], systems["periodic"]]
    batch = model.make_batch(items)
    assert isinstance(batch, Batch) and batch.n_structures == 2
    out = model.evaluate_batch(batch, stress=True)
    start = 0
    for k, s in enumerate(items):
        one = model.evaluate(*s, stress=True)
        n = len(s[0])
        assert abs(float(out["energy"][k] - one["energy"])) < 1e-12
        assert torch.allclose(out["forces"][start:start + n], one["forces"], atol=1e-12, rtol=0)
        assert torch.allclose(out["stress"][k], one["stress"], atol=1e-14, rtol=0)
        start += n
    assert torch.allclose(out["energies"].sum(), out["energy"].sum())


def test_training_mode_keeps_the_graph_for_force_losses(model, systems):
    batch = model.make_batch([systems["periodic"]])
    out = model.evaluate_batch(batch, stress=True, training=True)
    assert out["forces"].requires_grad and out["stress"].requires_grad
    w = model.readout.nets[0][0].weight
    g = torch.autograd.grad((out["forces"] ** 2).sum(), w)[0]
    assert torch.isfinite(g).all() and g.abs().max() > 0
    quiet = model.evaluate(*systems["periodic"])
    assert not quiet["forces"].requires_grad


def test_float32_agrees_with_float64(model, systems):
    m32 = NeuralPotential(["Ni", "Cu"], cutoff=CUTOFF, n_basis=6, n_radial=5, lmax=3, hidden=(16, 16),
                          dtype=torch.float32)
    m32.load_state_dict(model.state_dict())
    assert m32.dtype == torch.float32
    pos, num, cell, pbc = systems["periodic"]
    o64 = model.evaluate(pos, num, cell, pbc, stress=True)
    o32 = m32.evaluate(pos, num, cell, pbc, stress=True)
    assert o32["forces"].dtype == torch.float32
    assert abs(float(o32["energy"]) - float(o64["energy"])) < 1e-4 * max(1.0, abs(float(o64["energy"])))
    assert torch.allclose(o32["forces"].double(), o64["forces"], atol=1e-4 * float(o64["forces"].abs().max()))


@pytest.mark.parametrize("name", ["periodic", "molecule", "small_cell"])
def test_torchscript_export_equals_eager(model, systems, name):
    pos, num, cell, pbc = systems[name]
    scripted = export_torchscript(model, pbc=pbc)
    ref = model.evaluate(pos, num, cell, pbc)
    c = torch.zeros(3, 3, dtype=torch.float64) if cell is None else torch.tensor(cell)
    e, f = scripted(torch.tensor(pos), torch.tensor(num), c)
    assert abs(float(e) - float(ref["energy"])) <= 1e-12 * max(1.0, abs(float(ref["energy"])))
    assert torch.allclose(f, ref["forces"], atol=1e-12, rtol=0)


def test_torchscript_file_round_trip(model, systems, tmp_path):
    pos, num, cell, pbc = systems["periodic"]
    export_torchscript(model, pbc=True, path=tmp_path / "m.pt")
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    e, f = loaded(torch.tensor(pos), torch.tensor(num), torch.tensor(cell))
    assert abs(float(e) - _energy(model, pos, num, cell, pbc)) < 1e-12 * abs(float(e))


def test_bad_inputs_raise_clear_errors(model, systems):
    pos, num, cell, pbc = systems["periodic"]
    bad = pos.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NumericalError, match=r"atom\(s\) \[3\]"):
        model.evaluate(bad, num, cell, pbc)
    bad[3, 1] = np.inf
    with pytest.raises(NumericalError):
        model.evaluate(bad, num, cell, pbc)
    dup = pos.copy()
    dup[2] = dup[5]
    with pytest.raises(NumericalError, match="coincident"):
        model.evaluate(dup, num, cell, pbc)
    image = pos.copy()
    image[2] = image[5] + cell[0]                          # the same point through a periodic image
    with pytest.raises(NumericalError, match="coincident"):
        model.evaluate(image, num, cell, pbc)
    with pytest.raises(UnsupportedSpeciesError, match="O"):
        model.evaluate(pos, np.where(np.arange(len(num)) == 0, 8, num), cell, pbc)
    with pytest.raises(ShapeError):
        model.evaluate(pos[:, :2], num, cell, pbc)
    with pytest.raises(ShapeError):
        model.evaluate(pos, num[:-1], cell, pbc)
    with pytest.raises(InputError, match="needs a cell"):
        model.evaluate(pos, num, None, True)
    with pytest.raises(InputError, match="stress"):
        model.evaluate(*systems["molecule"], stress=True)
    with pytest.raises(InputError, match="singular"):
        model.evaluate(pos, num, np.zeros((3, 3)), True)
    with pytest.raises(LawfulError):
        NeuralPotential(["Xx"], cutoff=4.0)
    with pytest.raises(InputError):
        NeuralPotential(["Cu"], cutoff=-1.0)


def test_torchscript_refuses_bad_inputs(model, systems):
    pos, num, cell, pbc = systems["periodic"]
    scripted = export_torchscript(model, pbc=True)
    with pytest.raises(Exception, match="UnsupportedSpecies"):
        scripted(torch.tensor(pos), torch.full((len(pos),), 8), torch.tensor(cell))
    dup = pos.copy()
    dup[1] = dup[0]
    with pytest.raises(Exception, match="coincident"):
        scripted(torch.tensor(dup), torch.tensor(num), torch.tensor(cell))


def test_verlet_skin_pairs_give_the_same_result(model, systems):
    from lawful.kernels.neighbors import neighbor_list

    pos, num, cell, pbc = systems["periodic"]
    nl = neighbor_list(torch.tensor(pos), CUTOFF + 0.8, cell=torch.tensor(cell), pbc=True)
    skin = model.evaluate(pos, num, cell, pbc, stress=True, pairs=(nl.i, nl.j, nl.shifts))
    ref = model.evaluate(pos, num, cell, pbc, stress=True)
    assert abs(float(skin["energy"] - ref["energy"])) < 1e-12
    assert torch.allclose(skin["forces"], ref["forces"], atol=1e-12, rtol=0)
    assert torch.allclose(skin["stress"], ref["stress"], atol=1e-14, rtol=0)


def test_a_kept_pair_plan_is_used_only_for_the_same_pairs(systems):
    """The integer bookkeeping of a pair list is kept between evaluations of the same pairs: what
    each structure gives is what a fresh model gives, whatever was evaluated before and whatever
    the caller did to its pair tensors afterwards (they are compared by value against copies)."""
    from lawful.kernels.neighbors import neighbor_list

    def fresh():
        return NeuralPotential(["Ni", "Cu"], cutoff=CUTOFF, n_basis=6, n_radial=5, lmax=3, hidden=(16, 16),
                               seed=3, repulsion="zbl", interactions=2)

    kept = fresh()
    for name in ("molecule", "periodic", "molecule", "molecule", "small_cell", "periodic"):
        pos, num, cell, pbc = systems[name]
        nl = neighbor_list(torch.tensor(pos), CUTOFF, cell=None if cell is None else torch.tensor(cell), pbc=pbc)
        i, j = nl.i.clone(), nl.j.clone()
        got = kept.evaluate(pos, num, cell, pbc, pairs=(i, j, nl.shifts))
        ref = fresh().evaluate(pos, num, cell, pbc)
        assert float(got["energy"]) == float(ref["energy"]) and torch.equal(got["forces"], ref["forces"])
        i.copy_(i.flip(0))    # the caller reuses its buffers: the next structure must not see a stale plan
        j.copy_(j.flip(0))
    # the same pairs in another order are other pairs: a new plan, and the same physics; passed
    # in the same tensor objects, reordered in place (a plan keeping references, not copies, would
    # see its own pairs there and stay: 13 eV off in review w15's mutant)
    pos, num, cell, pbc = systems["molecule"]
    nl = neighbor_list(torch.tensor(pos), CUTOFF)
    i, j, sh = nl.i.clone(), nl.j.clone(), nl.shifts.clone()
    a = kept.evaluate(pos, num, cell, pbc, pairs=(i, j, sh))
    for t in (i, j, sh):
        t.copy_(t.flip(0))
    b = kept.evaluate(pos, num, cell, pbc, pairs=(i, j, sh))
    ref = fresh().evaluate(pos, num, cell, pbc, pairs=(i.clone(), j.clone(), sh.clone()))
    assert float(b["energy"]) == float(ref["energy"]) and torch.equal(b["forces"], ref["forces"])
    assert abs(float(a["energy"] - b["energy"])) < 1e-12
    assert torch.allclose(a["forces"], b["forces"], atol=1e-12, rtol=0)


@pytest.mark.parametrize("load_in, call_in", [("inference", "normal"), ("normal", "inference"),
                                              ("inference", "inference"), ("normal", "normal")])
def test_torch_inference_mode_gives_the_same_numbers_and_leaves_nothing_behind(load_in, call_in):
    """Forces are autograd's: a model loaded, or a calculator built and called, inside a caller's
    torch.inference_mode() gives the numbers it gives outside, and later calls outside still work.
    Before 2026-12 the call inside raised (autograd off), kept its pair plan as inference tensors,
    and every later normal call of that structure raised too (review w15)."""
    from ase.build import molecule

    from lawful.forcefields import evaluate_batch, load_model
    from lawful.integrations.ase import LawfulCalculator

    def mode(which):
        return torch.inference_mode() if which == "inference" else contextlib.nullcontext()

    mol = molecule("CH3CH2OH")
    pos, z = torch.tensor(mol.positions), torch.tensor(mol.numbers)
    ref = load_model("organic-xtb").evaluate(pos, z)
    with mode(load_in):
        m = load_model("organic-xtb")
        calc = LawfulCalculator(m)
    for which in (call_in, "normal", call_in):
        with mode(which):
            got = m.evaluate(pos, z)
            a = mol.copy()
            a.calc = calc
            e = a.get_potential_energy()
            f = a.get_forces()
        assert float(got["energy"]) == float(ref["energy"]) and torch.equal(got["forces"], ref["forces"])
        assert e == pytest.approx(float(ref["energy"]), abs=1e-9)
        assert np.abs(f - ref["forces"].numpy()).max() < 1e-9
        with mode(which):                # the batch function (its own path to the model, review w15b)
            batched = evaluate_batch(m, [mol, mol])
        assert all(torch.allclose(r["forces"], ref["forces"], atol=1e-10, rtol=0) for r in batched)
    with mode(load_in):                  # a TorchScript export made there is usable outside
        scripted = export_torchscript(m, pbc=False)
    out = scripted(pos, z, torch.zeros(3, 3, dtype=pos.dtype))
    assert torch.allclose(out[1], ref["forces"], atol=1e-10, rtol=0)


def test_metadata_and_public_surface():
    m = NeuralPotential([29], cutoff=4.5)
    assert m.species == ["Cu"] and m.cutoff == 4.5 and m.dtype == torch.float64
    assert m.device == torch.device("cpu")
    assert m.config["species"] == ["Cu"] and m.config["lmax"] == 3
    import lawful.forcefields as ff

    for name in ff.__all__:
        assert getattr(ff, name).__doc__, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_agrees_with_cpu(model, systems):
    pos, num, cell, pbc = systems["periodic"]
    import copy

    gpu = copy.deepcopy(model).to("cuda")
    assert gpu.device.type == "cuda"
    a = model.evaluate(pos, num, cell, pbc, stress=True)
    b = gpu.evaluate(pos, num, cell, pbc, stress=True)
    assert b["forces"].device.type == "cuda"
    assert abs(float(a["energy"]) - float(b["energy"].cpu())) < 1e-10
    assert torch.allclose(a["forces"], b["forces"].cpu(), atol=1e-10, rtol=0)
    assert torch.allclose(a["stress"], b["stress"].cpu(), atol=1e-12, rtol=0)


def _nve_energies(model, dt_fs, time_fs, temperature=600.0, seed=0):
    """Velocity-Verlet NVE of 32 Cu atoms with the model; total energy per atom (eV) each step."""
    from ase import units
    from ase.build import bulk

    from lawful.kernels.neighbors import VerletList

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    m = atoms.get_masses()[:, None]
    v = np.random.default_rng(seed).normal(size=(len(atoms), 3)) * np.sqrt(units.kB * temperature / m)
    v -= v.mean(0)
    x, cell = atoms.positions.copy(), np.asarray(atoms.cell[:])
    verlet = VerletList(model.cutoff, skin=1.0)

    def force(x):
        nl = verlet.get(torch.tensor(x), torch.tensor(cell), True)
        o = model.evaluate(x, atoms.numbers, cell, True, pairs=(nl.i, nl.j, nl.shifts))
        return float(o["energy"]), o["forces"].numpy()

    dt = dt_fs * units.fs
    e, f = force(x)
    out = []
    for _ in range(int(round(time_fs / dt_fs))):
        v += 0.5 * dt * f / m
        x = x + dt * v
        e, f = force(x)
        v += 0.5 * dt * f / m
        out.append(e + 0.5 * float((m * v * v).sum()))
    return np.array(out) / len(atoms)


def test_nve_energy_error_converges_as_dt_squared_only_for_the_conservative_model():
    """Energy from structure: with the trained potential, velocity Verlet's energy error shrinks
    4x when dt halves and shows no drift; with the direct-force control it does not converge."""

    from lawful.forcefields import load_model

    pot = load_model("cu-emt")
    e4, e2 = _nve_energies(pot, 4.0, 200.0), _nve_energies(pot, 2.0, 200.0)
    assert 3.0 < np.ptp(e4) / np.ptp(e2) < 5.5
    q = len(e2) // 4
    assert abs(e2[-q:].mean() - e2[:q].mean()) < 0.1 * np.ptp(e2)
    direct = load_model("cu-emt-direct")
    d4, d2 = _nve_energies(direct, 4.0, 200.0), _nve_energies(direct, 2.0, 200.0)
    assert np.ptp(d4) / np.ptp(d2) < 2.0
    assert np.ptp(d2) > 5 * np.ptp(e2)


def test_a_corrupt_model_never_returns_nan_forces(systems):
    m = NeuralPotential(["Ni", "Cu"], cutoff=CUTOFF, n_radial=3, lmax=1, hidden=(8,))
    with torch.no_grad():
        m.readout.nets[0][0].weight[0, 0] = float("nan")
    with pytest.raises(NumericalError, match="non-finite"):
        m.evaluate(*systems["periodic"])
