"""The safe model-file format: round trip, atomic writes, and a clear error for every bad file."""

from __future__ import annotations

import json
import os
import pickle
from importlib import metadata

import pytest
import torch

from lawful.kernels.errors import InputError, ModelFileError
from lawful.kernels.modelfile import (
    FORMAT_VERSION,
    ModelFile,
    atomic_write,
    load_model_file,
    read_header,
    save_model_file,
)


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(16, 8, dtype=torch.float64, generator=g),
        "layer.bias": torch.randn(16, generator=g),  # float32
        "species": torch.tensor([29, 13], dtype=torch.int64),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "half": torch.randn(3, generator=g).to(torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }


CONFIG = {"species": ["Cu", "Al"], "cutoff": 4.5, "hidden": [32, 32], "smooth": True}
META = {"units": {"energy": "eV", "length": "Angstrom"}, "train": {"force_mae": 0.021}}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "cu.lawful"
    save_model_file(path, kind="NeuralPotential", config=CONFIG, tensors=_tensors(), metadata=META)
    return path


class Marker:
    """Unpickling this creates the file at ``path``: stands in for arbitrary code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_round_trip(saved):
    mf = load_model_file(saved, expected_kind="NeuralPotential")
    assert isinstance(mf, ModelFile)
    assert mf.kind == "NeuralPotential" and mf.config == CONFIG and mf.metadata == META
    assert mf.format_version == FORMAT_VERSION
    assert mf.lawful_version == metadata.version("lawful")
    assert mf.path == str(saved)
    for name, t in _tensors().items():
        assert mf.tensors[name].dtype == t.dtype and torch.equal(mf.tensors[name], t), name
    assert read_header(saved)["config"] == CONFIG
    assert torch.equal(mf.tensor("species"), torch.tensor([29, 13]))


def test_header_is_plain_json_readable_without_lawful(saved):
    """Anyone can inspect the file with the safetensors library alone: no pickle inside."""
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as f:
        header = json.loads(f.metadata()["lawful"])
        assert set(f.keys()) == set(_tensors())
    assert header["kind"] == "NeuralPotential" and header["format_version"] == FORMAT_VERSION
    assert b"\x80\x04" not in saved.read_bytes()[:2]


def test_overwrite_is_atomic_and_leaves_no_temporaries(saved, monkeypatch):
    before = saved.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="simulated"):
        save_model_file(saved, kind="NeuralPotential", config={"other": 1}, tensors={})
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    # an exception raised while writing inside atomic_write: same guarantee
    with pytest.raises(RuntimeError):
        with atomic_write(saved) as fh:
            fh.write(b"half")
            raise RuntimeError("crash while writing")
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match=r"nope\.lawful.*no such file.*save"):
        load_model_file(tmp_path / "nope.lawful")
    with pytest.raises(ModelFileError, match="directory"):
        load_model_file(tmp_path)
    with pytest.raises(ModelFileError, match="does not exist"):
        save_model_file(tmp_path / "no" / "dir.lawful", "X", {}, {})


def test_every_truncation_is_refused(saved, tmp_path):
    data = saved.read_bytes()
    cut = tmp_path / "cut.lawful"
    n_header = int.from_bytes(data[:8], "little")
    for length in [0, 3, 8, 9, 8 + n_header // 2, 8 + n_header, 8 + n_header + 10, len(data) - 1]:
        cut.write_bytes(data[:length])
        with pytest.raises(ModelFileError, match=r"cut\.lawful.*(truncated|corrupt|empty)"):
            load_model_file(cut)


def test_a_flipped_bit_in_the_header_fails_its_checksum(saved):
    """The tensors' checksum left the configuration unchecked: one bit turned a cutoff of 4.5 into
    4.4 Å and the model loaded, its energies 0.022 eV/atom off."""
    data = bytearray(saved.read_bytes())
    at = data.index(b'\\"cutoff\\": 4.5') + len(b'\\"cutoff\\": 4.')
    data[at] ^= 0x01                                   # "5" -> "4"
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="header .*checksum"):
        load_model_file(saved)
    with pytest.raises(ModelFileError, match="header .*checksum"):
        read_header(saved)


def test_flipped_data_byte_fails_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model_file(saved)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_crafted_pickle_is_never_unpickled(tmp_path, writer):
    # control: this payload really does run code when unpickled
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(Marker(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.lawful"
    payload = {"weights": torch.zeros(2), "trap": Marker(marker)}
    if writer == "pickle":
        evil.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, evil)
    with pytest.raises(ModelFileError, match=r"evil\.lawful.*pickle.*never unpickles"):
        load_model_file(evil)
    with pytest.raises(ModelFileError):
        read_header(evil)
    assert not marker.exists()


def _write_raw(path, header_doc, tensors=None):
    from safetensors.torch import save_file

    save_file(tensors or {"w": torch.zeros(2)}, str(path),
              metadata=None if header_doc is None else {"lawful": json.dumps(header_doc)})


def test_future_format_version(tmp_path):
    path = tmp_path / "future.lawful"
    _write_raw(path, {"format": "lawful-model", "format_version": FORMAT_VERSION + 1,
                      "kind": "NeuralPotential", "config": {}, "metadata": {},
                      "lawful_version": "9.0.0"})
    with pytest.raises(ModelFileError, match=r"future\.lawful.*newer lawful \(9\.0\.0.*Upgrade"):
        load_model_file(path)


def test_not_a_lawful_file(tmp_path):
    plain = tmp_path / "plain.safetensors"
    _write_raw(plain, None)
    with pytest.raises(ModelFileError, match="not a lawful model file"):
        load_model_file(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a model at all\n")
    with pytest.raises(ModelFileError, match="not a safetensors/lawful model file"):
        load_model_file(text)
    other = tmp_path / "other.lawful"
    _write_raw(other, {"format": "something-else", "format_version": 1})
    with pytest.raises(ModelFileError, match="not a model-file header"):
        load_model_file(other)


def test_wrong_kind_and_missing_tensors(saved):
    with pytest.raises(ModelFileError, match=r"holds a 'NeuralPotential', not a 'Corrector'"):
        load_model_file(saved, expected_kind="Corrector")
    with pytest.raises(ModelFileError, match=r"no tensor\(s\) \['gamma'\]"):
        load_model_file(saved, required_tensors=["layer.weight", "gamma"])
    mf = load_model_file(saved)
    with pytest.raises(ModelFileError, match=r"no tensor 'gamma'"):
        mf.tensor("gamma")


def test_bad_arguments(tmp_path):
    path = tmp_path / "x.lawful"
    with pytest.raises(InputError, match="JSON"):
        save_model_file(path, "X", {"f": float("nan")}, {})
    with pytest.raises(InputError, match="JSON"):
        save_model_file(path, "X", {"obj": object()}, {})
    with pytest.raises(InputError, match="tensors must map"):
        save_model_file(path, "X", {}, {"w": [1.0, 2.0]})
    with pytest.raises(InputError, match="kind"):
        save_model_file(path, "", {}, {})
    assert not path.exists()
    # numpy and 0-d torch scalars in configs are converted
    import numpy as np

    save_model_file(path, "X", {"a": np.float64(1.5), "b": torch.tensor(3)}, {})
    assert load_model_file(path).config == {"a": 1.5, "b": 3}


def test_shared_and_noncontiguous_tensors(tmp_path):
    base = torch.arange(12.0, dtype=torch.float64).reshape(3, 4)
    tensors = {"a": base, "a_t": base.T, "row": base[1]}
    path = save_model_file(tmp_path / "s.lawful", "X", {}, tensors)
    mf = load_model_file(path)
    for k, v in tensors.items():
        assert torch.equal(mf.tensors[k], v)


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the final file gets 0666 minus the umask."""
    import os
    import stat

    import torch

    from lawful.kernels.modelfile import save_model_file

    old = os.umask(0o022)
    try:
        path = tmp_path / "m.lawful"
        save_model_file(path, kind="NeuralPotential", config={}, tensors={"w": torch.zeros(2)}, metadata={})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_saving_through_a_link_writes_its_target_and_keeps_the_mode(tmp_path):
    """Saving to a symlink replaced the link with a plain file (the target kept the old model) and
    a private 0600 file came back 0644."""
    import os
    import stat

    target = tmp_path / "store" / "m.lawful"
    target.parent.mkdir()
    save_model_file(target, kind="NeuralPotential", config={"v": 1}, tensors={"w": torch.zeros(2)}, metadata={})
    os.chmod(target, 0o600)
    link = tmp_path / "m.lawful"
    link.symlink_to(target)
    save_model_file(link, kind="NeuralPotential", config={"v": 2}, tensors={"w": torch.ones(2)}, metadata={})
    assert link.is_symlink() and load_model_file(target).config == {"v": 2}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("length", [0x0280, 0x0380, 0x0480, 0x0580])
def test_a_header_length_that_begins_like_a_pickle_still_loads(tmp_path, length):
    """A safetensors file begins with its header's length: 0x0380 is the bytes 80 03, a pickle's
    protocol-3 opening, and such a model file was refused as "a pickle" (the header checksum's 80
    bytes moved a corrector file onto one)."""
    import struct

    path = tmp_path / "m.lawful"
    for pad in range(0, 1600):
        save_model_file(path, kind="NeuralPotential", config={"pad": "x" * pad}, tensors={"w": torch.zeros(2)},
                        metadata={})
        if struct.unpack("<Q", path.read_bytes()[:8])[0] == length:
            break
    else:
        pytest.skip(f"no padding gives a header of {length} bytes")
    assert path.read_bytes()[:2] == bytes([0x80, length >> 8])
    assert load_model_file(path).config["pad"] == "x" * pad
