"""Audit of the GFN2-xTB data pipeline: what a data set says of itself must be what it holds.

* A frame found in the label cache came back as the cached frame, with the ``info`` (segment,
  start, ...) of whichever frame was labelled first at those positions: two rattled segments at
  amplitude 0 became one, the split lost a segment and left validation and test empty while the
  card listed three segments.
* Sampling settings that cannot work (a negative or NaN friction, no rattle amplitudes) are
  refused by ``SamplingConfig.check`` before any work (they failed inside tblite or with a
  ZeroDivisionError after the minimisation).
* A samples file whose settings key extxyz reads back as a number (about 1 in 1300) could never
  be resumed: "sampled with other settings".
* ``labels.extxyz``, listed in the card, keeps the labels of earlier settings after a resample;
  the card now counts them.
* A run killed while it rewrote the split files left the old card beside a new ``train.extxyz``.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones

from lawful.forcefields import xtb_data
from lawful.kernels.errors import InputError

needs_tblite = pytest.mark.skipif(importlib.util.find_spec("tblite") is None, reason="tblite not installed")


def _water(segment: str, start: str = "start") -> Atoms:
    a = Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    a.info.update(segment=segment, start=start, source="rattled", index_in_segment=0)
    return a


def test_a_frame_found_in_the_cache_keeps_its_own_segment(tmp_path):
    cache = tmp_path / "labels.extxyz"
    lj = LennardJones(sigma=1.0, epsilon=0.01, rc=5.0)
    ref = _water("x")
    ref.calc = LennardJones(sigma=1.0, epsilon=0.01, rc=5.0)
    e_ref = ref.get_potential_energy()

    [first] = xtb_data.label_cached([_water("rattled0.05-0")], cache, calculator=lj)
    # a later run names the segment at the same positions otherwise (another start tag): its own name comes back
    [later] = xtb_data.label_cached([_water("rattled0.05-0-start", "start")], cache, calculator=lj)
    assert first.info["segment"] == "rattled0.05-0"
    assert later.info["segment"] == "rattled0.05-0-start"          # was "rattled0.05-0", the first run's
    assert later.info["key"] == first.info["key"]
    assert later.get_potential_energy() == pytest.approx(e_ref, abs=1e-12)

    # two frames at one position in one call (rattled at amplitude 0): each keeps its segment
    both = xtb_data.label_cached([_water("a"), _water("b")], tmp_path / "two.extxyz", calculator=lj)
    assert [f.info["segment"] for f in both] == ["a", "b"]          # was ["b", "b"]
    assert both[0] is not both[1]
    np.testing.assert_array_equal(both[0].get_forces(), both[1].get_forces())

    # read back from the file: still the frame's own info, the label's record of its making
    again = xtb_data.label_cached([_water("c")], xtb_data.LabelCache(tmp_path / "two.extxyz"), calculator=lj)
    assert again[0].info["segment"] == "c" and "labeller" in again[0].info
    assert again[0].get_potential_energy() == pytest.approx(e_ref, abs=1e-9)


@needs_tblite
def test_rattled_segments_at_amplitude_zero_are_split_as_planned(tmp_path):
    cfg = xtb_data.SamplingConfig(temperatures=(300.0,), segments_per_temperature=1, frames_per_segment=2, interval=2,
                                  equilibration=0, rattled_segments=2, rattle_amplitudes=(0.0,), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # three segments: no "empty split" warning is due
        card = xtb_data.make_dataset("water", tmp_path, cfg)
    plan = sorted(s["segment"] for s in card["sampling"]["segments"])
    assert plan == ["md300K-0", "rattled0-0", "rattled0-1"]
    assert sorted(n for s in xtb_data.SPLITS for n in card["split"][s]) == plan   # was: rattled0-0 missing
    for s in xtb_data.SPLITS:                        # one segment of 2 frames each (was 6 / 0 / 0)
        assert card["counts"][s] == {"frames": 2, "segments": 1}, (s, card["counts"])
    from ase.io import read

    for s in xtb_data.SPLITS:
        frames = read(tmp_path / f"{s}.extxyz", index=":")
        assert {a.info["segment"] for a in frames} == set(card["split"][s])


@pytest.mark.parametrize("kw, text", [
    ({"friction": -0.01}, "friction"), ({"friction": float("nan")}, "friction"),
    ({"rattle_amplitudes": ()}, "rattle_amplitudes"), ({"rattle_amplitudes": (0.05, -0.1)}, "rattle_amplitudes"),
    ({"rattle_amplitudes": (float("inf"),)}, "rattle_amplitudes")])
def test_sampling_settings_that_cannot_work_are_refused(kw, text):
    cfg = xtb_data.SamplingConfig(**kw)
    with pytest.raises(InputError, match=text):
        cfg.check()


def test_sampling_settings_that_can_work_pass():
    xtb_data.SamplingConfig(friction=0.0, rattle_amplitudes=(0.0, 0.1)).check()
    xtb_data.SamplingConfig(rattled_segments=0, rattle_amplitudes=()).check()


@pytest.mark.parametrize("seed", [150, 822])     # keys 6999e64720891840 (read back as inf) and 049e230325454699
def test_a_settings_key_that_looks_like_a_number_still_resumes(tmp_path, seed):
    from lawful.forcefields.molecules import build_molecule

    water = build_molecule("water")
    cfg = xtb_data.SamplingConfig(temperatures=(), rattled_segments=1, frames_per_segment=2, seed=seed)
    path = tmp_path / "samples.extxyz"
    first = xtb_data.sample_segments(water, cfg, path, calculator=LennardJones())      # rattled only: no MD
    before = path.read_bytes()
    again = xtb_data.sample_segments(water, cfg, path, calculator=LennardJones())      # was refused: "other settings"
    assert path.read_bytes() == before
    np.testing.assert_array_equal(np.array([a.positions for a in again]), np.array([a.positions for a in first]))
    from ase.io import read

    assert {str(a.info["settings"]) for a in read(path, index=":")} == {first[0].info["settings"]}


@needs_tblite
def test_the_card_counts_labels_of_earlier_settings_left_in_the_cache(tmp_path):
    import os

    cfg = xtb_data.SamplingConfig(temperatures=(), rattled_segments=3, frames_per_segment=2, seed=0)
    first = xtb_data.make_dataset("water", tmp_path, cfg)
    assert first["label_cache"] == {"labels": 6, "outside_this_data_set": 0}
    with pytest.raises(InputError, match="other settings"):
        xtb_data.make_dataset("water", tmp_path, xtb_data.SamplingConfig(temperatures=(), rattled_segments=3,
                                                                         frames_per_segment=2, seed=1))
    os.remove(tmp_path / "samples.extxyz")           # as the refusal says, to resample
    card = xtb_data.make_dataset("water", tmp_path, xtb_data.SamplingConfig(temperatures=(), rattled_segments=3,
                                                                            frames_per_segment=2, seed=1))
    assert card["counts"]["total_frames"] == 6
    # labels.extxyz, a file the card lists, holds 12 frames: the 6 of seed 0 are no part of this data set
    from ase.io import read

    assert len(read(tmp_path / "labels.extxyz", index=":")) == 12
    assert card["label_cache"] == {"labels": 12, "outside_this_data_set": 6}


@needs_tblite
def test_a_run_killed_while_rewriting_the_split_leaves_no_card_of_another_split(tmp_path, monkeypatch):
    import json

    from ase.io import read

    cfg = dict(temperatures=(), rattled_segments=5, frames_per_segment=2, seed=0)
    old = xtb_data.make_dataset("water", tmp_path, xtb_data.SamplingConfig(**cfg))
    real = xtb_data._rewrite_frames

    def killed_at_validation(path, frames):
        if path.name == "validation.extxyz":
            raise KeyboardInterrupt("injected")
        return real(path, frames)

    monkeypatch.setattr(xtb_data, "_rewrite_frames", killed_at_validation)
    new_cfg = xtb_data.SamplingConfig(**cfg, fractions=(0.2, 0.4, 0.4))      # the split changes, nothing else
    with pytest.raises(KeyboardInterrupt):
        xtb_data.make_dataset("water", tmp_path, new_cfg)
    train = {a.info["segment"] for a in read(tmp_path / "train.extxyz", index=":")}
    assert train != set(old["split"]["train"])                             # the new split's train file
    card = json.loads((tmp_path / "card.json").read_text())
    assert "split" not in card and "incomplete" in card                    # was the old card: 3 train segments
    assert card["label_versions"] == old["label_versions"]                 # what the next run reads of it
    monkeypatch.setattr(xtb_data, "_rewrite_frames", real)
    done = xtb_data.make_dataset("water", tmp_path, new_cfg)
    for s in xtb_data.SPLITS:
        assert {a.info["segment"] for a in read(tmp_path / f"{s}.extxyz", index=":")} == set(done["split"][s])
    assert [done["counts"][s]["segments"] for s in xtb_data.SPLITS] == [1, 2, 2]
