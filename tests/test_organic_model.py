"""The shipped organic model (``organic-xtb``: H/C/N/O, two interaction layers, ZBL prior) and the
interaction layer itself (``NeuralPotential(interactions=2)``), float64.

Only contracts that hold for any weights are tested (the shipped file is replaced when training
finishes): loading by name in ASE and openmm-ml, ASE = OpenMM to 1e-9, forces = -dE/dR by finite
differences, rotation/translation/permutation invariance, C² behaviour at the cutoff, TorchScript
= eager, model files old and new."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lawful.forcefields import NeuralPotential, export_torchscript, gradient_check, load_model
from lawful.forcefields.molecules import alanine_dipeptide
from lawful.forcefields.potential import strained_geometry
from lawful.integrations.ase import LawfulCalculator
from lawful.kernels.errors import InputError

SHIPPED = "organic-xtb"
CUTOFF = 4.0                                      # the random interaction model's


def _dipeptide(seed=0, amplitude=0.05):
    """Alanine dipeptide (22 atoms, Å) rattled so that no two atoms are related by symmetry."""
    a = alanine_dipeptide()
    a.positions += np.random.default_rng(seed).normal(scale=amplitude, size=a.positions.shape)
    return a


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED)


def _calibrated(model, structures):
    """Feature statistics on ``structures``, one pass per layer (each interaction block reads the
    normalised features of the layer before it), and a non-trivial energy scale, so the random
    network works in its non-linear regime as a trained one does."""
    batches = [model.make_batch([(a.positions, a.numbers, None, False)]) for a in structures]
    with torch.no_grad():
        for _ in range(model.feature_stages):
            feats = []
            for b in batches:
                _, vec = strained_geometry(b, b.positions, None)
                feats.append(model.features(b.positions, b.species, b.edge_i, b.edge_j, vec))
            f = torch.cat(feats)
            model.feature_mean.copy_(f.mean(0))
            model.feature_std.copy_(f.std(0).clamp_min(1e-3))
        model.energy_scale.fill_(0.5)
        model.reference_energies.copy_(torch.tensor([-0.5, -1.5, -2.0, -2.5], dtype=model.dtype))
    return model


@pytest.fixture(scope="module")
def interaction_model():
    """A random-weight NeuralPotential with two interaction layers and the ZBL prior (H, C, N, O)."""
    m = NeuralPotential(["H", "C", "N", "O"], cutoff=CUTOFF, n_basis=6, n_radial=5, lmax=3, hidden=(16, 16),
                        interactions=2, interaction_hidden=8, repulsion="zbl", seed=5)
    assert m.feature_stages == 2 and len(m.blocks) == 1
    return _calibrated(m, [_dipeptide(s) for s in range(3)])


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


# --- the shipped model by name --------------------------------------------------------------------

def test_shipped_model_is_a_two_interaction_potential(shipped):
    assert type(shipped).__name__ == "NeuralPotential" and shipped.dtype == torch.float64
    assert shipped.species == ["H", "C", "N", "O"]
    assert shipped.config["interactions"] == 2 and shipped.feature_stages == 2
    assert shipped.repulsion is not None


def test_shipped_model_loads_by_name_in_ase(shipped):
    atoms = _dipeptide()
    atoms.calc = LawfulCalculator(SHIPPED)
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    ref = shipped.evaluate(atoms.positions, atoms.numbers)
    assert np.isfinite(e) and f.shape == (22, 3) and np.all(np.isfinite(f))
    assert e == pytest.approx(float(ref["energy"]), rel=1e-12)
    assert _rel(f, ref["forces"].numpy()) <= 1e-12


def _backends():
    from lawful.integrations.openmm import available_backends

    return ["python"] + (["torch"] if "torch" in available_backends() else [])


@pytest.mark.parametrize("backend", _backends())
def test_shipped_model_in_openmm_ml_matches_ase(backend):
    pytest.importorskip("openmmml")
    from openmmml import MLPotential
    from test_openmm_force import _openmm_energy_forces

    from lawful.integrations.openmm import topology_from_atoms

    atoms = _dipeptide(seed=1)
    top, positions = topology_from_atoms(atoms)
    system = MLPotential("lawful", model=SHIPPED).createSystem(top, removeCMMotion=False, backend=backend,
                                                               precision="double")
    assert system.getNumParticles() == 22 and not system.usesPeriodicBoundaryConditions()
    e_omm, f_omm = _openmm_energy_forces(system, positions)
    atoms.calc = LawfulCalculator(SHIPPED)
    e_ase, f_ase = atoms.get_potential_energy(), atoms.get_forces()
    assert abs(e_omm - e_ase) <= 1e-9 * abs(e_ase)
    assert _rel(f_omm, f_ase) <= 1e-9


def test_shipped_model_forces_match_finite_differences(shipped):
    a = _dipeptide(seed=2)
    res = gradient_check(shipped, a.positions, a.numbers, h=1e-5)
    assert np.abs(res["forces_fd"]).max() > 1e-2                 # a non-trivial check
    assert res["force_error"] <= 1e-6


# --- the interaction layer (random weights) --------------------------------------------------------

def test_interaction_model_forces_match_finite_differences(interaction_model):
    a = _dipeptide(seed=4)
    res = gradient_check(interaction_model, a.positions, a.numbers, h=1e-5)
    assert np.abs(res["forces_fd"]).max() > 1e-2
    assert res["force_error"] <= 1e-6
    # the check covers the interaction block: without it the same weights give another energy
    plain = NeuralPotential(["H", "C", "N", "O"], cutoff=CUTOFF, n_basis=6, n_radial=5, lmax=3, hidden=(16, 16),
                            repulsion="zbl", seed=5)
    assert plain.feature_stages == 1 and "interactions" not in plain.config
    e_int = float(interaction_model.evaluate(a.positions, a.numbers)["energy"])
    assert e_int != pytest.approx(float(plain.evaluate(a.positions, a.numbers)["energy"]), rel=1e-6)


def test_interaction_block_reaches_beyond_one_cutoff(interaction_model):
    """Body order above three / receptive field 2 r_c: moving an atom that is beyond the cutoff of
    atom 0 but inside that of a neighbour of atom 0 changes atom 0's energy."""
    num = np.array([6, 6, 8])

    def atom0_energy(x):
        pos = np.array([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [x, 0.5, 0.0]])
        return float(interaction_model.evaluate(pos, num)["energies"][0])

    assert atom0_energy(5.5) != atom0_energy(5.6)                 # both > r_c = 4 from atom 0
    plain = NeuralPotential(["H", "C", "N", "O"], cutoff=CUTOFF, n_basis=6, n_radial=5, lmax=3, hidden=(16, 16))
    e = [float(plain.evaluate(np.array([[0.0, 0, 0], [2.5, 0, 0], [x, 0.5, 0]]), num)["energies"][0])
         for x in (5.5, 5.6)]
    assert e[0] == e[1]                                           # control: three-body only sees r_c


@pytest.mark.parametrize("which", ["interaction", "shipped"])
def test_rotation_translation_and_permutation_invariance(interaction_model, shipped, which, random_rotation):
    model = interaction_model if which == "interaction" else shipped
    a = _dipeptide(seed=6)
    pos, num = a.positions, a.numbers
    rng = np.random.default_rng(11)
    ref = model.evaluate(pos, num)
    e0, f0 = float(ref["energy"]), ref["forces"].numpy()
    tol = 1e-12 * abs(e0) + 1e-10
    ftol = 1e-10 * max(1.0, np.abs(f0).max())
    q = random_rotation(rng)
    rot = model.evaluate(pos @ q.T, num)
    assert abs(float(rot["energy"]) - e0) < tol
    assert np.allclose(rot["forces"].numpy(), f0 @ q.T, atol=ftol, rtol=0)
    moved = model.evaluate(pos + rng.normal(size=3) * 4.0, num)
    assert abs(float(moved["energy"]) - e0) < tol
    assert np.allclose(moved["forces"].numpy(), f0, atol=ftol, rtol=0)
    perm = rng.permutation(len(pos))                              # relabel atoms (elements go with them)
    per = model.evaluate(pos[perm], num[perm])
    assert abs(float(per["energy"]) - e0) < tol
    assert np.allclose(per["forces"].numpy(), f0[perm], atol=ftol, rtol=0)
    hydrogens = np.nonzero(num == 1)[0]                           # swap two H positions, elements kept
    swap = np.arange(len(pos))
    swap[hydrogens[0]], swap[hydrogens[-1]] = hydrogens[-1], hydrogens[0]
    sw = model.evaluate(pos[swap], num)
    assert abs(float(sw["energy"]) - e0) < tol
    assert np.allclose(sw["forces"].numpy(), f0[swap], atol=ftol, rtol=0)


def _trimer(r):
    # C=O 1.4 Å along x; an H at distance r from the C (> r_c from the O for r near r_c), at an
    # angle of 115 degrees so the angular terms see it
    return np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [r * np.cos(2.0), r * np.sin(2.0), 0.0]])


def test_interaction_model_is_c2_at_the_cutoff(interaction_model):
    model, num, h = interaction_model, np.array([6, 8, 1]), 1e-5
    assert np.linalg.norm(_trimer(CUTOFF + 0.2)[2] - _trimer(CUTOFF)[1]) > CUTOFF + 0.2

    def state(r):
        o = model.evaluate(_trimer(r), num)
        return float(o["energy"]), o["forces"].numpy()

    def force_slope(r):                                           # dF/dr of every force component
        return (state(r + h)[1] - state(r - h)[1]) / (2 * h)

    e_far, f_far = state(CUTOFF + 0.5)
    assert np.abs(force_slope(CUTOFF + 0.5)).max() == 0.0

    def delta(r):
        e, f = state(r)
        return abs(e - e_far), np.abs(f - f_far).max(), np.abs(force_slope(r)).max()

    # beyond the cutoff the H does not interact at all, through either layer
    de, df, _ = delta(CUTOFF + 1e-9)
    assert de == 0.0 and df == 0.0
    # inside: zeros of order 3 (energy), 2 (forces) and 1 (force derivative): C² at r_c
    de1, df1, ds1 = delta(CUTOFF - 0.002)
    de2, df2, ds2 = delta(CUTOFF - 0.001)
    assert de1 > 0 and df1 > 0 and ds1 > 0
    assert 7.0 < de1 / de2 < 9.0
    assert 3.5 < df1 / df2 < 4.5
    assert 1.7 < ds1 / ds2 < 2.3
    # a dense scan across r_c: no jump in energy, forces or force derivative
    rs = np.linspace(CUTOFF - 0.2, CUTOFF + 0.05, 126)
    step = rs[1] - rs[0]
    es, fs = zip(*[state(r) for r in rs])
    fs = np.array(fs)
    slopes = np.array([force_slope(r) for r in rs[::5]])
    assert np.abs(np.diff(es)).max() < 2 * step * np.abs(fs).max()
    assert np.abs(np.diff(fs, axis=0)).max() < 2 * step * np.abs(slopes).max()
    assert np.abs(np.diff(slopes, axis=0)).max() < 0.2 * np.abs(slopes).max()


def test_torchscript_export_equals_eager(interaction_model):
    a = _dipeptide(seed=8)
    scripted = export_torchscript(interaction_model, pbc=False)
    e, f = scripted(torch.as_tensor(a.positions), torch.as_tensor(a.numbers, dtype=torch.int64),
                    torch.zeros(3, 3, dtype=torch.float64))
    ref = interaction_model.evaluate(a.positions, a.numbers)
    assert float(e) == pytest.approx(float(ref["energy"]), rel=1e-12, abs=1e-12)
    assert _rel(f.numpy(), ref["forces"].numpy()) <= 1e-12


# --- model files ----------------------------------------------------------------------------------

def test_save_load_round_trip_keeps_interactions(interaction_model, tmp_path):
    path = tmp_path / "int.lawful"
    interaction_model.save(path)
    back = load_model(path)
    assert back.config == interaction_model.config
    assert back.config["interactions"] == 2 and back.config["interaction_hidden"] == 8
    assert back.feature_stages == 2
    a = _dipeptide(seed=9)
    x, y = back.evaluate(a.positions, a.numbers), interaction_model.evaluate(a.positions, a.numbers)
    assert float(x["energy"]) == float(y["energy"])
    assert torch.equal(x["forces"], y["forces"])


def test_a_model_file_from_before_interactions_loads_unchanged(tmp_path):
    from lawful.forcefields.shipped import resolve_model_path
    from lawful.kernels.modelfile import load_model_file

    stored = load_model_file(resolve_model_path("cu-emt")).config
    assert "interactions" not in stored                          # written before the option existed
    m = load_model("cu-emt")
    assert m.config == stored and m.feature_stages == 1 and len(m.blocks) == 0
    m.save(tmp_path / "again.lawful")                             # re-saving keeps the old config
    assert load_model_file(tmp_path / "again.lawful").config == stored


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_interactions_raise(bad):
    with pytest.raises(InputError, match=f"interactions={bad!r} must be a whole number >= 1"):
        NeuralPotential(["H", "C"], cutoff=4.0, interactions=bad)
