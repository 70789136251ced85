"""The ZBL repulsion prior of NeuralPotential: the published screened nuclear repulsion (checked
against an independent implementation of the formula and its derivative), a C² switch, exact
autograd forces and stress, invariances, TorchScript export and model-file round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from lawful.forcefields import NeuralPotential, export_torchscript, load_model
from lawful.forcefields.gradcheck import gradient_check
from lawful.forcefields.potential import REPULSION_SWITCH, ZBLRepulsion
from lawful.kernels.errors import InputError

ARCH = dict(cutoff=4.5, n_basis=5, n_radial=3, lmax=2, hidden=(16,), seed=1)
A0 = 0.529177210903     # Bohr radius, Å (CODATA 2018, as tabulated; ASE derives it, 6e-12 apart)
K_E = 1.602176634e-19 / (4 * np.pi * 8.8541878128e-12) * 1e10   # e^2/(4 pi eps0), eV Å (CODATA 2018)
COV = {"H": 0.31, "O": 0.66, "Cu": 1.32}   # covalent radii (Å) of ASE's table, Cordero et al. 2008


def zbl_reference(r, z1, z2):
    """V(r) (eV) and dV/dr (eV/Å): the ZBL universal potential written out from the formula."""
    c = np.array([0.18175, 0.50986, 0.28022, 0.02817])
    d = np.array([3.1998, 0.94229, 0.4029, 0.20162])
    a = 0.8854 * A0 / (z1 ** 0.23 + z2 ** 0.23)
    phi = np.sum(c * np.exp(-d * r / a))
    dphi = np.sum(-c * d / a * np.exp(-d * r / a))
    v = K_E * z1 * z2 / r * phi
    return v, K_E * z1 * z2 * (dphi / r - phi / r ** 2)


def _pair(model, r, numbers=(29, 29)):
    out = model.evaluate(np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]]), list(numbers))
    return float(out["energy"]), out["forces"].numpy()


@pytest.mark.parametrize("r", [0.25, 0.6, 1.0, 1.3])
def test_two_cu_atoms_pushed_together_feel_the_zbl_repulsion(r):
    """Below the inner switch radius (0.5 x 2 x 1.32 = 1.32 Å) the prior is exactly ZBL: the
    energy and force added to the same network equal the analytic values, and the pair is pushed
    apart with hundreds of eV/Å, far beyond what the learned part gives."""
    with_prior = NeuralPotential(["Cu"], repulsion="zbl", **ARCH)
    plain = NeuralPotential(["Cu"], **ARCH)
    e1, f1 = _pair(with_prior, r)
    e0, f0 = _pair(plain, r)
    v, dv = zbl_reference(r, 29.0, 29.0)
    assert e1 - e0 == pytest.approx(v, rel=1e-10)
    np.testing.assert_allclose(f1 - f0, [[dv, 0, 0], [-dv, 0, 0]], rtol=1e-10, atol=1e-9)
    assert f1[1, 0] > 0 and f1[0, 0] < 0                       # atom 1 (at +x) pushed to +x
    assert f1[1, 0] > 100.0 > 10 * abs(f0[1, 0])
    assert np.abs(f1[:, 1:]).max() < 1e-12


def test_two_species_use_their_own_charges_and_radii():
    model = NeuralPotential(["H", "O"], repulsion="zbl", **ARCH)
    plain = NeuralPotential(["H", "O"], **ARCH)
    r = 0.4   # below O-H inner radius 0.5 x (0.31 + 0.66) = 0.485 Å
    de = _pair(model, r, (8, 1))[0] - _pair(plain, r, (8, 1))[0]
    assert de == pytest.approx(zbl_reference(r, 8.0, 1.0)[0], rel=1e-10)
    rep = model.repulsion
    assert float(rep.r_in[0, 1]) == pytest.approx(0.5 * (COV["H"] + COV["O"]))
    assert float(rep.r_out[1, 1]) == pytest.approx(0.75 * 2 * COV["O"])


def test_switch_is_c2_and_zero_beyond_the_outer_radius():
    """Value, slope and curvature of the switched pair energy are continuous at r_in and r_out,
    and the prior vanishes identically beyond r_out."""
    rep = ZBLRepulsion([29], cutoff=4.5)
    r_in, r_out = float(rep.r_in[0, 0]), float(rep.r_out[0, 0])
    assert (r_in, r_out) == pytest.approx((REPULSION_SWITCH[0] * 2.64, REPULSION_SWITCH[1] * 2.64))
    s = torch.zeros(1, dtype=torch.long)

    def derivs(r):
        x = torch.tensor([r], dtype=torch.float64, requires_grad=True)
        e = rep.pair_energy(x, s, s)
        (g,) = torch.autograd.grad(e.sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), x)
        return np.array([float(e.detach()), float(g.detach()), float(h)])

    eps = 1e-7
    for edge in (r_in, r_out):
        lo, hi = derivs(edge - eps), derivs(edge + eps)
        scale = np.abs(derivs(edge - 0.05)) + 1.0
        assert np.all(np.abs(hi - lo) < 1e-5 * scale), (edge, lo, hi)
    np.testing.assert_array_equal(derivs(r_out + 1e-3), [0.0, 0.0, 0.0])
    v, dv = zbl_reference(r_in - 1e-3, 29.0, 29.0)
    np.testing.assert_allclose(derivs(r_in - 1e-3)[:2], [v, dv], rtol=1e-10)


def _close_copper():
    """A rattled periodic Cu cell with one pair inside the full-ZBL range and one in the switch."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=3)
    atoms.positions[1] = atoms.positions[0] + np.array([1.1, 0.25, -0.1])     # ~1.13 Å: full ZBL
    atoms.positions[9] = atoms.positions[8] + np.array([0.3, 1.55, 0.4])      # ~1.63 Å: in the switch
    atoms.cell = atoms.cell.array @ (np.eye(3) + 0.03 * np.tri(3, k=-1))     # triclinic
    return atoms


def test_forces_and_stress_with_the_prior_match_finite_differences():
    atoms = _close_copper()
    model = NeuralPotential(["Cu"], repulsion="zbl", **ARCH)
    res = gradient_check(model, atoms.positions, atoms.numbers, atoms.cell.array, True, h=1e-5)
    assert np.abs(res["forces_fd"]).max() > 50.0            # the prior dominates: a real check of it
    assert res["force_error"] < 1e-7
    assert res["stress_error"] < 1e-7
    mol = gradient_check(model, atoms.positions[:12], atoms.numbers[:12], None, False, h=1e-5)
    assert mol["force_error"] < 1e-7


def test_invariances_with_the_prior(random_rotation):
    atoms = _close_copper()
    model = NeuralPotential(["Cu"], repulsion="zbl", **ARCH)
    pos, num, cell = atoms.positions, atoms.numbers, atoms.cell.array
    ref = model.evaluate(pos, num, cell, True, stress=True)
    e0 = float(ref["energy"])
    rng = np.random.default_rng(11)
    q = random_rotation(rng)
    rot = model.evaluate(pos @ q.T, num, cell @ q.T, True, stress=True)
    assert float(rot["energy"]) == pytest.approx(e0, rel=1e-12)
    np.testing.assert_allclose(rot["forces"].numpy(), ref["forces"].numpy() @ q.T, atol=1e-9)
    np.testing.assert_allclose(rot["stress"].numpy(), q @ ref["stress"].numpy() @ q.T, atol=1e-11)
    assert float(model.evaluate(pos + rng.normal(size=3), num, cell, True)["energy"]) == pytest.approx(e0, rel=1e-12)
    perm = rng.permutation(len(pos))
    per = model.evaluate(pos[perm], num[perm], cell, True)
    assert float(per["energy"]) == pytest.approx(e0, rel=1e-12)
    np.testing.assert_allclose(per["forces"].numpy(), ref["forces"].numpy()[perm], atol=1e-9)
    assert float(ref["forces"].sum(0).abs().max()) < 1e-9    # no net force (translation invariance)


def test_torchscript_export_carries_the_prior():
    atoms = _close_copper()
    model = NeuralPotential(["Cu"], repulsion="zbl", **ARCH)
    ref = model.evaluate(atoms.positions, atoms.numbers, atoms.cell.array, True)
    scripted = export_torchscript(model, pbc=True)
    e, f = scripted(torch.tensor(atoms.positions), torch.tensor(atoms.numbers), torch.tensor(atoms.cell.array))
    plain = NeuralPotential(["Cu"], **ARCH)
    e_plain = float(plain.evaluate(atoms.positions, atoms.numbers, atoms.cell.array, True)["energy"])
    assert float(e) == pytest.approx(float(ref["energy"]), rel=1e-12)
    assert abs(float(e) - e_plain) > 10.0                     # the prior is in the scripted energy
    np.testing.assert_allclose(f.numpy(), ref["forces"].numpy(), atol=1e-9)


def test_model_file_round_trips_the_prior_and_old_configs_load_without_it(tmp_path):
    model = NeuralPotential(["Cu"], repulsion="zbl", repulsion_switch=(0.45, 0.7), **ARCH)
    assert model.config["repulsion"] == "zbl" and model.config["repulsion_switch"] == [0.45, 0.7]
    model.save(tmp_path / "zbl.lawful")
    back = load_model(tmp_path / "zbl.lawful")
    assert back.config == model.config
    atoms = _close_copper()
    e = model.evaluate(atoms.positions, atoms.numbers, atoms.cell.array, True)["energy"]
    assert float(back.evaluate(atoms.positions, atoms.numbers, atoms.cell.array, True)["energy"]) == float(e)
    plain = NeuralPotential(["Cu"], **ARCH)
    assert "repulsion" not in plain.config                    # files of models without it: as before
    assert set(plain.state_dict()) == set(model.state_dict())  # the prior adds no saved tensors
    plain.save(tmp_path / "plain.lawful")
    assert load_model(tmp_path / "plain.lawful").repulsion is None


@pytest.mark.parametrize("kwargs, needle", [
    (dict(repulsion="lj"), "'lj'"),
    (dict(repulsion="zbl", repulsion_switch=(0.8, 0.5)), "(0.8, 0.5)"),
    (dict(repulsion="zbl", repulsion_switch=(0.0, 0.5)), "(0.0, 0.5)"),
    (dict(repulsion="zbl", repulsion_switch=0.5), "0.5"),
    (dict(repulsion="zbl", repulsion_switch=(0.5, 2.0), cutoff=4.5), "5.28 Å"),
])
def test_bad_repulsion_settings_are_input_errors(kwargs, needle):
    args = dict(ARCH, **kwargs)
    with pytest.raises(InputError) as err:
        NeuralPotential(["Cu"], **args)
    assert needle in str(err.value)


def test_head_on_collision_in_ase_md_turns_at_the_zbl_distance():
    """Two Cu atoms fired at each other with 100 eV (centre-of-mass frame) in ASE's VelocityVerlet,
    with the learned part switched off (energy scale 0): the prior alone turns them round where
    V_ZBL(r) = 100 eV (bisection of the independent formula), total energy conserved. Without
    the prior nothing stops them: they pass within 0.1 Å of each other."""
    from ase import Atoms, units
    from ase.md.verlet import VelocityVerlet

    from lawful.integrations.ase import LawfulCalculator

    def closest_approach(repulsion):
        model = NeuralPotential(["Cu"], repulsion=repulsion, **ARCH)
        with torch.no_grad():
            model.energy_scale.zero_()
        atoms = Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [3.0, 0.02, 0.0]])
        mass = atoms.get_masses()[0]
        speed = np.sqrt(2 * 50.0 / mass)                     # 50 eV per atom, Å per ASE time unit
        atoms.set_velocities([[speed, 0, 0], [-speed, 0, 0]])
        atoms.calc = LawfulCalculator(model)
        e0 = atoms.get_total_energy()
        dyn = VelocityVerlet(atoms, timestep=0.02 * units.fs)
        closest, drift = np.inf, 0.0
        for _ in range(900):
            dyn.run(1)
            closest = min(closest, atoms.get_distance(0, 1))
            drift = max(drift, abs(atoms.get_total_energy() - e0))
        return closest, drift

    lo, hi = 0.3, 1.3
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if zbl_reference(mid, 29.0, 29.0)[0] > 100.0 else (lo, mid)
    r_turn = 0.5 * (lo + hi)
    closest, drift = closest_approach("zbl")
    assert closest == pytest.approx(r_turn, abs=1e-3)        # measured 1.0759 vs 1.0758 Å (0.02 Å offset)
    assert drift < 5e-3                                      # eV, of 100 eV (measured 8e-4)
    assert closest_approach(None)[0] < 0.1
