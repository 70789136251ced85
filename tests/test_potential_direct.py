"""DirectForceModel (the non-conservative control): same interface, equivariant pair-force head,
Newton's third law, a consistent pair virial, and - by design - no potential behind its forces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lawful.forcefields import DirectForceModel, NeuralPotential
from lawful.kernels.errors import NumericalError, UnsupportedSpeciesError


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(5)
    cell = 6.0 * (np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3)))
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = np.concatenate([base * 0.5 + o for o in ([0, 0, 0], [0.5, 0, 0])])
    pos = frac @ cell + rng.normal(0, 0.1, (8, 3))
    num = np.array([29, 28] * 4)
    m = DirectForceModel(["Cu", "Ni"], cutoff=4.0, n_basis=6, n_radial=4, lmax=2, hidden=(16,), embed=8,
                         force_hidden=(16,), seed=1)
    with torch.no_grad():
        m.force_scale.fill_(0.5)
        m.feature_std.fill_(30.0)
    return m, pos, num, cell


def test_outputs_match_the_potential_interface(setup):
    m, pos, num, cell = setup
    out = m.evaluate(pos, num, cell, True, stress=True)
    assert set(out) == {"energy", "forces", "energies", "stress"}
    assert out["energy"].shape == () and out["forces"].shape == (8, 3) and out["stress"].shape == (3, 3)
    assert out["forces"].abs().max() > 1e-4
    assert not out["forces"].requires_grad


def test_forces_rotate_sum_to_zero_and_stress_is_a_symmetric_tensor(setup, random_rotation):
    m, pos, num, cell = setup
    ref = m.evaluate(pos, num, cell, True, stress=True)
    q = random_rotation(np.random.default_rng(1))
    rot = m.evaluate(pos @ q.T, num, cell @ q.T, True, stress=True)
    assert abs(float(rot["energy"] - ref["energy"])) < 1e-10
    assert np.allclose(rot["forces"].numpy(), ref["forces"].numpy() @ q.T, atol=1e-10, rtol=0)
    assert np.allclose(rot["stress"].numpy(), q @ ref["stress"].numpy() @ q.T, atol=1e-12, rtol=0)
    assert float(ref["forces"].sum(0).abs().max()) < 1e-12          # Newton's third law per pair
    s = ref["stress"].numpy()
    assert np.allclose(s, s.T, atol=1e-14)
    perm = np.random.default_rng(2).permutation(8)
    per = m.evaluate(pos[perm], num[perm], cell, True)
    assert np.allclose(per["forces"].numpy(), ref["forces"].numpy()[perm], atol=1e-12, rtol=0)


def test_stress_equals_the_force_virial_of_an_isolated_cluster(setup):
    # A cluster in a box far larger than the cutoff: V * stress must equal -sum_i r_i ⊗ F_i.
    m, pos, num, cell = setup
    box = 40.0 * np.eye(3)
    p = pos - pos.mean(0) + 20.0
    out = m.evaluate(p, num, box, True, stress=True)
    f = out["forces"].numpy()
    w_atoms = -(p.T @ f) / 40.0 ** 3
    assert np.abs(out["stress"].numpy()).max() > 1e-7
    assert np.allclose(out["stress"].numpy(), w_atoms, atol=1e-12 * np.abs(w_atoms).max() + 1e-16)


def _force_jacobian(model, pos, num, cell, pairs, h=1e-5):
    n = pos.size
    jac = np.zeros((n, n))
    for k in range(n):
        p = pos.copy().reshape(-1)
        p[k] += h
        fp = model.evaluate(p.reshape(-1, 3), num, cell, True, pairs=pairs)["forces"].numpy().reshape(-1)
        p[k] -= 2 * h
        fm = model.evaluate(p.reshape(-1, 3), num, cell, True, pairs=pairs)["forces"].numpy().reshape(-1)
        jac[:, k] = (fp - fm) / (2 * h)
    return jac


def test_direct_forces_are_not_a_gradient(setup):
    # Forces that are a gradient have a symmetric Jacobian (dF_a/dx_b = dF_b/dx_a, the Hessian);
    # the control's is not - that is what makes it drift in MD - while the potential's is.
    from lawful.kernels.neighbors import neighbor_list

    m, pos, num, cell = setup
    nl = neighbor_list(torch.tensor(pos), 4.5, cell=torch.tensor(cell), pbc=True)
    pairs = (nl.i, nl.j, nl.shifts)
    pot = NeuralPotential(["Cu", "Ni"], cutoff=4.0, n_basis=6, n_radial=4, lmax=2, hidden=(16,), seed=1)
    with torch.no_grad():
        pot.feature_std.fill_(30.0)
        pot.energy_scale.fill_(0.5)
    for model, conservative in ((pot, True), (m, False)):
        jac = _force_jacobian(model, pos, num, cell, pairs)
        asym = np.abs(jac - jac.T).max() / np.abs(jac).max()
        if conservative:
            assert asym < 1e-7
        else:
            assert asym > 1e-3


def test_bad_inputs(setup):
    m, pos, num, cell = setup
    with pytest.raises(UnsupportedSpeciesError):
        m.evaluate(pos, np.full(8, 79), cell, True)
    dup = pos.copy()
    dup[0] = dup[1]
    with pytest.raises(NumericalError):
        m.evaluate(dup, num, cell, True)
