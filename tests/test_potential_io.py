"""Model files: save/load round trips for both model kinds, metadata, and refusal of bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lawful.forcefields import DirectForceModel, NeuralPotential, load_model
from lawful.kernels.errors import ModelFileError


def _structure():
    rng = np.random.default_rng(0)
    cell = 5.2 * np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3))
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return frac @ cell + rng.normal(0, 0.08, (4, 3)), np.array([29, 28, 29, 28]), cell


def _perturbed(model):
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        model.feature_std.fill_(20.0)
        model.reference_energies.copy_(torch.tensor([-3.1, -4.4], dtype=model.dtype))
    return model


@pytest.mark.parametrize("cls", [NeuralPotential, DirectForceModel])
def test_round_trip_reproduces_the_model_exactly(cls, tmp_path):
    model = _perturbed(cls(["Cu", "Ni"], cutoff=4.2, n_basis=5, n_radial=4, lmax=2, hidden=(12,), seed=4))
    model.training_summary = {"val_force_mae_eV_per_A": 0.01, "epochs_run": 3}
    path = tmp_path / "m.lawful"
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is cls
    assert loaded.species == ["Cu", "Ni"] and loaded.cutoff == 4.2 and loaded.config == model.config
    assert loaded.training_summary == {"val_force_mae_eV_per_A": 0.01, "epochs_run": 3}
    pos, num, cell = _structure()
    a = model.evaluate(pos, num, cell, True, stress=True)
    b = loaded.evaluate(pos, num, cell, True, stress=True)
    for k in ("energy", "forces", "stress"):
        assert torch.equal(a[k], b[k]), k
    f32 = load_model(path, dtype="float32")
    assert f32.dtype == torch.float32
    assert abs(float(f32.evaluate(pos, num, cell, True)["energy"]) - float(a["energy"])) < 1e-4


def test_file_carries_units_version_and_species(tmp_path):
    from lawful.kernels.modelfile import load_model_file

    model = NeuralPotential(["Cu"], cutoff=4.5, n_radial=3, lmax=1, hidden=(8,))
    model.save(tmp_path / "cu.lawful")
    mf = load_model_file(tmp_path / "cu.lawful")
    assert mf.kind == "NeuralPotential"
    assert mf.config["species"] == ["Cu"] and mf.config["cutoff"] == 4.5
    assert mf.metadata["units"]["energy"] == "eV" and mf.metadata["units"]["length"] == "Angstrom"
    assert mf.metadata["dtype"] == "float64" and mf.lawful_version


def test_bad_files_raise_model_file_errors(tmp_path):
    model = NeuralPotential(["Cu"], cutoff=4.5, n_radial=3, lmax=1, hidden=(8,))
    good = tmp_path / "cu.lawful"
    model.save(good)
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "missing.lawful")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.lawful"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        load_model(trunc)
    pickled = tmp_path / "pickle.lawful"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(ModelFileError):
        load_model(pickled)
    # a lawful file of another kind
    from lawful.kernels.modelfile import save_model_file

    other = tmp_path / "other.lawful"
    save_model_file(other, kind="DivergenceFreeCorrector", config={}, tensors={"w": torch.zeros(2)}, metadata={})
    with pytest.raises(ModelFileError, match="not a force field"):
        load_model(other)
    # a config that does not fit the weights
    from lawful.kernels.modelfile import load_model_file

    mf = load_model_file(good)
    bad_cfg = dict(mf.config, n_radial=5)
    wrong = tmp_path / "wrong.lawful"
    save_model_file(wrong, kind="NeuralPotential", config=bad_cfg, tensors=mf.tensors, metadata=mf.metadata)
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(wrong)
    json.dumps(mf.metadata)   # the metadata is plain JSON


@pytest.mark.parametrize("name", ["cu-emt", "cu-emt-direct"])
def test_shipped_models_load_by_name(name):
    from ase.build import bulk

    model = load_model(name)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    out = model.evaluate(atoms.positions, atoms.numbers, atoms.cell[:], True)
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    assert np.abs(out["forces"].numpy() - atoms.get_forces()).mean() < 0.05
    assert model.training_summary["val_force_mae_eV_per_A"] < 0.05


@pytest.mark.parametrize("local, given, expect", [
    ("file", "organic-xtb", "ambiguous"),            # a model.save("organic-xtb") in the cwd
    ("file", "./organic-xtb", "DirectForceModel"),   # the file, said explicitly
    ("dir", "organic-xtb", "NeuralPotential"),       # a folder cannot be a model: the shipped one
    (None, "organic-xtb", "NeuralPotential"),
    ("file", "path", "DirectForceModel"),            # a pathlib.Path is always a path
])
def test_a_bare_shipped_name_never_silently_means_a_local_file(local, given, expect, tmp_path,
                                                               monkeypatch):
    """A file called organic-xtb in the working directory (the shipped direct model saved under
    that name) was loaded in place of the shipped NeuralPotential, under its label; a folder of
    that name failed the load."""
    from pathlib import Path

    from lawful.forcefields.shipped import shipped_model_path

    monkeypatch.chdir(tmp_path)
    if local == "file":
        load_model("organic-xtb-direct").save("organic-xtb")
    elif local == "dir":
        (tmp_path / "organic-xtb").mkdir()
    arg = Path("organic-xtb") if given == "path" else given
    if expect == "ambiguous":
        with pytest.raises(ModelFileError, match=r"both a shipped model and a file.*'\./organic-xtb'"):
            load_model(arg)
    else:
        assert type(load_model(arg)).__name__ == expect
    # what the demo runs under the label organic-xtb is the package's file, whatever the cwd holds
    from lawful.integrations.demo_molecules import MODELS, _shipped

    for name in MODELS.values():
        assert Path(_shipped(name)) == shipped_model_path(name) and Path(_shipped(name)).is_absolute()
    assert type(load_model(_shipped("organic-xtb"))).__name__ == "NeuralPotential"
