"""Training on user files (audit_rt F5-F11): stress given as an extxyz ``virial``, label keys lawful
does not read, validation frames that are training frames, ASE trajectories, a declared species
without data, and non-finite labels. Each refusal happens before the first epoch and names the
frame, the set and the fix; each accepted input is checked for the values it produces."""

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from lawful.forcefields import NeuralPotential
from lawful.forcefields.training import load_frames, prepare, train
from lawful.kernels.errors import InputError, UnsupportedSpeciesError

ARCH = dict(cutoff=3.5, n_basis=4, n_radial=3, lmax=1, hidden=(8,), seed=0)
QUICK = dict(epochs=1, batch_size=4, progress=False)


def _cu(k: int, symbols=None):
    """A rattled, strained 4-atom Cu cell (or ``symbols`` on the same sites) with EMT labels."""
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    if symbols is not None:
        a.set_chemical_symbols(symbols)
    rng = np.random.default_rng(k)
    a.set_cell(a.cell[:] @ (np.eye(3) + 0.02 * rng.standard_normal((3, 3))), scale_atoms=True)
    a.rattle(0.05, seed=k)
    a.calc = EMT()
    e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
    a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
    return a


def _fd_virial(a, h=1e-5):
    """-dE/d(strain) by central differences of the EMT energy (eV): the virial, computed without
    ASE's stress."""
    w = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            es = []
            for sgn in (1, -1):
                b = a.copy()
                eps = np.zeros((3, 3))
                eps[i, j] += 0.5 * sgn * h
                eps[j, i] += 0.5 * sgn * h
                b.set_cell(a.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
                b.calc = EMT()
                es.append(b.get_potential_energy())
            w[i, j] = -(es[0] - es[1]) / (2 * h)
    return w


def _virial_frame(a, virial):
    """``a`` with energy and forces labels and ``virial`` in info instead of a stress label."""
    b = a.copy()
    b.calc = SinglePointCalculator(b, energy=a.calc.results["energy"], forces=a.calc.results["forces"])
    b.info["virial"] = virial
    return b


def test_virial_sign_against_ase_stress(tmp_path):
    """A virial computed by finite differences (-dE/dε), written to extxyz as GAP/ACE files have it,
    comes back as ASE's own EMT stress: stress = -virial / V (sign and units checked)."""
    from ase.io import write

    frames = [_cu(k) for k in range(2)]
    written = [_virial_frame(a, _fd_virial(a)) for a in frames]
    write(tmp_path / "v.extxyz", written, format="extxyz")
    back = load_frames(tmp_path / "v.extxyz")
    assert "stress" not in back[0].calc.results and "virial" in back[0].info
    items = prepare(NeuralPotential(["Cu"], **ARCH), back)
    for a, (_, t) in zip(frames, items):
        ase_stress = a.calc.results["stress"]
        full = np.array([[ase_stress[0], ase_stress[5], ase_stress[4]], [ase_stress[5], ase_stress[1], ase_stress[3]],
                         [ase_stress[4], ase_stress[3], ase_stress[2]]])
        assert np.abs(full).max() > 1e-3                               # a real, strained stress
        np.testing.assert_allclose(t["stress"].numpy(), full, atol=1e-7)


@pytest.mark.parametrize("shape", ["3x3", "9", "voigt6"])
def test_virial_layouts(shape):
    a = _cu(3)
    s = a.get_stress(voigt=False)
    w = -s * a.get_volume()
    given = {"3x3": w, "9": w.reshape(9), "voigt6": w[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]}[shape]
    (_, t), = prepare(NeuralPotential(["Cu"], **ARCH), [_virial_frame(a, given)])
    np.testing.assert_allclose(t["stress"].numpy(), s, atol=1e-12)


def test_virial_training_equals_stress_training():
    """The same frames with stress or with virial train to the same validation stress error (the
    stress term is on in both, and fed the same numbers)."""
    frames = [_cu(k) for k in range(8)]
    as_virial = [_virial_frame(a, -a.get_stress(voigt=False) * a.get_volume()) for a in frames]
    runs = [train(NeuralPotential(["Cu"], **ARCH), d, stress_weight=1.0, **QUICK) for d in (frames, as_virial)]
    assert runs[0]["val_stress_mae_eV_per_A3"] is not None
    assert runs[1]["val_stress_mae_eV_per_A3"] == pytest.approx(runs[0]["val_stress_mae_eV_per_A3"], rel=1e-9)
    assert runs[1]["n_train_with_stress"] == runs[0]["n_train_with_stress"] == 7


def _no_stress(a):
    b = a.copy()
    b.calc = SinglePointCalculator(b, energy=a.calc.results["energy"], forces=a.calc.results["forces"])
    return b


def _cluster(a):
    b = _no_stress(a)
    b.pbc = False
    return b


@pytest.mark.parametrize("make", [_no_stress, _cluster], ids=["periodic without stress", "clusters"])
def test_stress_weight_without_stress_labels_is_refused(make):
    frames = [make(_cu(k)) for k in range(6)]
    with pytest.raises(InputError, match=r"stress_weight=1.0 but none of the 5 training frames has a stress label"):
        train(NeuralPotential(["Cu"], **ARCH), frames, stress_weight=1.0, **QUICK)
    # without a stress weight the same data trains, and the summary says no frame had stress
    s = train(NeuralPotential(["Cu"], **ARCH), frames, **QUICK)
    assert s["n_train_with_stress"] == 0 and s["val_stress_mae_eV_per_A3"] is None


def _relabel(kind):
    def make(a):
        e, f = a.calc.results["energy"], a.calc.results["forces"]
        b = a.copy()
        if kind == "REF keys":
            b.info["REF_energy"], b.arrays["REF_forces"] = e, f
        elif kind == "REF forces":
            b.calc = SinglePointCalculator(b, energy=e)
            b.arrays["REF_forces"] = f
        elif kind == "free_energy":
            b.calc = SinglePointCalculator(b, free_energy=e, forces=f)
        return b
    return make


@pytest.mark.parametrize("kind,needles", [
    ("REF keys", ["frame 0 of the training data", "info['REF_energy']", "arrays['REF_forces']", "SinglePointCalculator"]),
    ("REF forces", ["results['energy']", "arrays['REF_forces']", "Rename them"]),
    ("none", ["has no labels: label it first"]),
])
def test_labels_under_other_keys_are_named(kind, needles):
    frames = [_relabel(kind)(_cu(k)) for k in range(3)]
    with pytest.raises(InputError) as err:
        train(NeuralPotential(["Cu"], **ARCH), frames, **QUICK)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


# energy, free_energy offsets (eV/atom; None: label absent), label fitted, warns
ENERGY_LABELS = [
    (0.0, None, "energy", False),
    (None, 0.0, "free_energy", False),      # refused before: the forces are its derivative (ASE)
    (0.0, 0.0, "energy", False),            # EMT and most calculators: the same number twice
    (0.0, 5e-7, "energy", False),           # below SAME_ENERGY_EV_PER_ATOM: one label
    (-0.02, 0.0, "free_energy", True),      # smeared DFT (VASP: energy is sigma->0, TOTEN the free energy)
]


@pytest.mark.parametrize("energy, free, fitted, warns", ENERGY_LABELS)
def test_the_force_consistent_energy_is_fitted(energy, free, fitted, warns):
    """A frame with energy and free_energy labels that differ (electronic smearing) was trained on
    energy without a word, while its forces are the derivative of free_energy (units audit U2)."""
    import warnings

    from lawful.forcefields.training import prepare

    frames = []
    for k in range(6):
        a = _cu(k)
        e, f = a.calc.results["energy"], a.calc.results["forces"]
        labels = {"forces": f}
        if energy is not None:
            labels["energy"] = e + energy * len(a) * (1 + 0.1 * k)     # a gap varying from frame to frame
        if free is not None:
            labels["free_energy"] = e + free * len(a)
        a.calc = SinglePointCalculator(a, **labels)
        frames.append(a)
    model = NeuralPotential(["Cu"], **ARCH)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        s = train(model, frames, **QUICK)
    said = [str(w.message) for w in got if "'free_energy'" in str(w.message)]
    assert len(said) == (2 if warns else 0)     # the training and the validation frames
    if warns:
        gaps = [float(m) for m in __import__("re").findall(r"by up to ([0-9.]+) meV/atom", " ".join(said))]
        assert "lawful fits free_energy" in said[0] and all(20 <= g <= 30.001 for g in gaps) and len(gaps) == 2
    assert s["energy_labels"][fitted] == s["n_train"]
    targets = [t["energy"] for _, t in prepare(model, frames)]
    assert [float(t) for t in targets] == [float(a.calc.results[fitted]) for a in frames]


def _nan(label):
    def make(a):
        r = dict(a.calc.results)
        r[label] = np.array(r[label], dtype=float)
        r[label].reshape(-1)[0] = np.nan
        a.calc = SinglePointCalculator(a, **r)
        return a
    return make


@pytest.mark.parametrize("where", ["training", "validation"])
@pytest.mark.parametrize("label", ["energy", "forces", "stress"])
def test_nonfinite_label_is_refused_before_training(where, label):
    train_frames = [_cu(k) for k in range(6)]
    val_frames = [_cu(10 + k) for k in range(3)]
    target = train_frames if where == "training" else val_frames
    target[2] = _nan(label)(target[2])
    with pytest.raises(InputError, match=rf"frame 2 of the {where} data has a non-finite {label} label \(nan\)"):
        train(NeuralPotential(["Cu"], **ARCH), train_frames, validation=val_frames, **QUICK)


def test_nan_stress_of_a_cluster_is_not_a_label():
    """A cluster's stress is never read (non-periodic), so a NaN there is not refused."""
    c = _cluster(_cu(1))
    c.calc.results["stress"] = np.full(6, np.nan)
    (_, t), = prepare(NeuralPotential(["Cu"], **ARCH), [c])
    assert "stress" not in t


def test_validation_file_that_is_the_training_file_is_refused(tmp_path):
    from ase.io import write

    write(tmp_path / "d.extxyz", [_cu(k) for k in range(6)], format="extxyz")
    with pytest.raises(InputError, match="is the training data file"):
        train(NeuralPotential(["Cu"], **ARCH), tmp_path / "d.extxyz", validation=str(tmp_path / "d.extxyz"), **QUICK)


def test_validation_frames_that_are_training_frames():
    frames = [_cu(k) for k in range(8)]
    with pytest.raises(InputError, match="all 4 validation frames are exact copies of training frames"):
        train(NeuralPotential(["Cu"], **ARCH), frames, validation=frames[4:], **QUICK)
    with pytest.warns(UserWarning, match="2 of the 4 validation frames are exact copies of training frames"):
        s = train(NeuralPotential(["Cu"], **ARCH), frames[:6], validation=frames[4:], **QUICK)
    assert s["val_in_train"] == 2


def test_copies_in_the_data_stay_on_one_side_of_the_split():
    """Every frame present twice (concatenated files): no validation structure is in the training
    split; data without copies is split exactly as before (no warning)."""
    from lawful.forcefields.training import _split, _structure_key

    frames = [_cu(k) for k in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr, va = _split(frames, 0.25, 0)
    perm = np.random.default_rng(0).permutation(12)
    assert [id(a) for a in va] == [id(frames[k]) for k in sorted(perm[:3])]
    with pytest.warns(UserWarning, match="12 of the 24 frames are exact copies"):
        tr, va = _split(frames + [a.copy() for a in frames], 0.25, 0)
    assert not {_structure_key(a) for a in va} & {_structure_key(a) for a in tr}
    assert len(va) % 2 == 0 and len(tr) + len(va) == 24 and va


@pytest.mark.parametrize("n, fraction, n_val", [(2, 0.9, 1), (4, 0.9, 3), (4, 0.95, 3), (4, 0.1, 1), (12, 0.25, 3)])
def test_the_split_leaves_a_frame_on_each_side(n, fraction, n_val):
    """round(val_fraction * n) frames validate, at least one and at most n - 1 (all n left no
    training frame: training failed with 'no structures given')."""
    from lawful.forcefields.training import _split

    tr, va = _split([_cu(k) for k in range(n)], fraction, 0)
    assert (len(tr), len(va)) == (n - n_val, n_val)


def test_species_without_training_atoms_is_refused():
    frames = [_cu(k) for k in range(6)]
    with pytest.raises(InputError, match=r"species \['Au'\] of the model have no atom in the 5 training frames"):
        train(NeuralPotential(["Au", "Cu"], **ARCH), frames, **QUICK)
    s = train(NeuralPotential(["Au", "Cu"], **ARCH), [_cu(k, ["Cu", "Au", "Cu", "Cu"]) for k in range(6)], **QUICK)
    assert s["train_atoms_per_species"] == {"Au": 5, "Cu": 15}


@pytest.mark.parametrize("where", ["training", "validation"])
def test_unknown_species_names_the_set_and_the_model_fix(where):
    frames = [_cu(k) for k in range(6)]
    val = [_cu(10), _cu(11, ["Cu", "Au", "Cu", "Cu"])]
    if where == "training":
        frames[3], val = val[1], val[:1]
    with pytest.raises(UnsupportedSpeciesError) as err:
        train(NeuralPotential(["Cu"], **ARCH), frames, validation=val, **QUICK)
    k = 3 if where == "training" else 1
    assert f"frame {k} of the {where} data holds ['Au']" in str(err.value)
    assert "species=['Au', 'Cu']" in str(err.value) and "--species Au Cu" in str(err.value)


def test_trajectory_and_detected_formats(tmp_path):
    """An ASE trajectory reads with its labels (it was decoded as extxyz: UnicodeDecodeError); an
    extxyz file of another suffix is recognised by content; other files are a clear error."""
    from ase.io import write

    frames = [_cu(k) for k in range(3)]
    write(tmp_path / "f.traj", frames)
    write(tmp_path / "f.data", frames, format="extxyz")
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 4)
    for name in ("f.traj", "f.data"):
        back = load_frames(tmp_path / name)
        assert [b.calc.results["energy"] for b in back] == [a.calc.results["energy"] for a in frames]
        np.testing.assert_array_equal(back[2].calc.results["stress"], frames[2].calc.results["stress"])
    with pytest.raises(InputError, match=r"junk.bin.*is not a format lawful reads.*\.traj"):
        load_frames(tmp_path / "junk.bin")
    (tmp_path / "cut.traj").write_bytes((tmp_path / "f.traj").read_bytes()[:100])
    with pytest.raises(InputError, match=r"cut.traj' could not be read as traj"):
        load_frames(tmp_path / "cut.traj")
    with pytest.raises(InputError, match="validation data file .*missing.extxyz' does not exist"):
        load_frames(tmp_path / "missing.extxyz", "validation")


@pytest.mark.parametrize("cutoff, refused", [(0.45, True), (2.0, True), (3.0, False)])
def test_a_cutoff_below_every_pair_distance_is_refused(cutoff, refused):
    """`lawful train --cutoff 0.45` (a cutoff typed in nm) trained a model with no interaction at
    all (zero forces everywhere, no domain record), exit 0 (first-hour audit)."""
    from lawful.forcefields import NeuralPotential, train
    from lawful.forcefields.reference import emt_metal_dataset

    frames = emt_metal_dataset("Cu", 1, temperatures=(300,), n_md=2, n_rattled=2, n_strained=2, seed=0)
    model = NeuralPotential(species=["Cu"], cutoff=cutoff, hidden=(4,), n_radial=2, n_basis=3, lmax=1)
    if refused:
        with pytest.raises(InputError, match=r"no two atoms of the training data are within the model's cutoff "
                                             r"of .* \(the closest pair in the data is 2\.\d+ Å apart\)"):
            train(model, frames[:-1], validation=frames[-1:], epochs=1, progress=False)
    else:
        train(model, frames[:-1], validation=frames[-1:], epochs=1, progress=False)
        assert model.pair_min_distance["Cu-Cu"] > 2.0


@pytest.mark.parametrize("how", ["an engine's model", "requires_grad_(False)"])
def test_a_model_with_every_weight_frozen_is_refused_before_training(how):
    """Adam over no weights changed nothing and raised only an optimiser's 'empty parameter list';
    a model taken from a calculator is frozen (the engines freeze what they load), so say so."""
    if how == "an engine's model":
        from lawful.integrations.ase import LawfulCalculator

        model = LawfulCalculator("cu-emt").model
    else:
        model = NeuralPotential(["Cu"], **ARCH).requires_grad_(False)
    with pytest.raises(InputError, match=r"every weight of this NeuralPotential is frozen .*load_model\(path\)"):
        train(model, [_cu(k) for k in range(4)], **QUICK)
    model.requires_grad_(True)      # the fix the message names
    if how == "requires_grad_(False)":
        train(model, [_cu(k) for k in range(4)], **QUICK)
