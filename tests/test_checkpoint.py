"""Checkpoints: atomic saves that survive crashes, safe loads, clear errors."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint
from lawful.kernels.errors import InputError, ModelFileError


def _training_state(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def _train(model, opt, sched, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_resume_reproduces_uninterrupted_training(tmp_path):
    """Save model + Adam + scheduler + RNG mid-run, restore into fresh objects: identical run."""
    model, opt, sched = _training_state()
    _train(model, opt, sched, 3, seed=1)
    path = save_checkpoint(tmp_path / "ckpt.pt", {
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "epoch": 3, "rng": torch.get_rng_state(),
        "history": [{"loss": 0.5, "tag": "a"}, (1, 2.0, None)], "python_rng": random.getstate(),
        "dtype": torch.float64,
    })
    _train(model, opt, sched, 3, seed=2)

    state = load_checkpoint(path)
    assert state["epoch"] == 3 and state["history"] == [{"loss": 0.5, "tag": "a"}, (1, 2.0, None)]
    assert state["dtype"] is torch.float64
    random.setstate(state["python_rng"])
    model2, opt2, sched2 = _training_state(seed=123)  # different init: must be overwritten
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    _train(model2, opt2, sched2, 3, seed=2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad,where", [
    ({"x": np.zeros(3)}, r"state\['x'\].*numpy.ndarray"),
    ({"a": {"b": [1, object()]}}, r"state\['a'\]\['b'\]\[1\].*object"),
    ({"f": lambda: 0}, r"state\['f'\].*function"),
])
def test_refuses_values_that_would_not_load_safely(tmp_path, bad, where):
    with pytest.raises(InputError, match=where):
        save_checkpoint(tmp_path / "c.pt", bad)
    assert not (tmp_path / "c.pt").exists()
    with pytest.raises(InputError, match="dict"):
        save_checkpoint(tmp_path / "c.pt", [1, 2])


def test_failing_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"epoch": 1, "w": torch.ones(1000)})
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a zip archive")
        raise OSError("no space left on device (simulated)")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


WRITER = textwrap.dedent("""
    import os, signal, sys, torch
    from lawful.kernels.checkpoint import save_checkpoint
    path, kill_after = sys.argv[1], int(sys.argv[2])
    for k in (1, 2, 3):  # three complete saves
        save_checkpoint(path, {"step": k, "w": torch.full((100_000,), float(k), dtype=torch.float64)})

    real_save = torch.save

    class DyingFile:
        # the checkpoint's file object: SIGKILLs this process once kill_after bytes are written
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            data = bytes(data)
            room = kill_after - self.written
            if len(data) >= room:
                self.fh.write(data[:room])
                self.fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            self.written += len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    torch.save = lambda obj, f, *a, **kw: real_save(obj, DyingFile(f), *a, **kw)
    save_checkpoint(path, {"step": 4, "w": torch.full((100_000,), 4.0, dtype=torch.float64)})
    print("the save finished: the kill point lies beyond the file", flush=True)
""")


@pytest.mark.parametrize("kill_after", [0, 30, 4096, 400_000, 800_500])
def test_killed_writer_never_leaves_a_corrupt_file(tmp_path, kill_after):
    """SIGKILL a process in the middle of its fourth save, after exactly ``kill_after`` bytes of
    the ~800 kB checkpoint are written (the zip header, the first data records, the middle, the
    last bytes): the file at the path is the third save, complete, and only the temporary file of
    the interrupted save is left beside it."""
    path = tmp_path / "live.pt"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.run([sys.executable, str(script), str(path), str(kill_after)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == kill_after
    state = load_checkpoint(path)
    assert state["step"] == 3
    assert torch.all(state["w"] == 3.0)


def test_bad_files(tmp_path):
    with pytest.raises(ModelFileError, match=r"missing\.pt.*no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match="directory"):
        load_checkpoint(tmp_path)
    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.arange(10000.0), "epoch": 4})
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    for length in (0, 10, len(data) // 2, len(data) - 1):
        cut.write_bytes(data[:length])
        with pytest.raises(ModelFileError, match=r"cut\.pt.*truncated or corrupt"):
            load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_checkpoint(junk)


def test_a_flipped_bit_in_a_stored_tensor_is_refused_not_loaded(tmp_path):
    """torch.load does not check the archive's CRCs: one flipped bit loaded as a weight of 1.2e-39
    instead of 0.42, and a resumed run went on from it."""
    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.linspace(0.1, 0.9, 4096, dtype=torch.float64)})
    data = good.read_bytes()
    start = data.index(b"data/0") + 200          # inside the tensor's stored bytes (stored, not deflated)
    hits = 0
    for offset in (start, start + 1000, start + 5000):
        bad = bytearray(data)
        bad[offset] ^= 0x40
        path = tmp_path / "flipped.pt"
        path.write_bytes(bytes(bad))
        try:
            state = load_checkpoint(path)
        except ModelFileError as exc:
            assert "flipped.pt" in str(exc) and "corrupt" in str(exc)
            hits += 1
        else:                                     # only acceptable if the flip missed the data
            assert torch.equal(state["w"], torch.linspace(0.1, 0.9, 4096, dtype=torch.float64))
    assert hits >= 2


class Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "trap": Marker(marker)}, evil)
    with pytest.raises(ModelFileError, match=r"evil\.pt.*weights_only=True"):
        load_checkpoint(evil)
    assert not marker.exists()
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(ModelFileError, match="not a dict"):
        load_checkpoint(lst)


class _Stop(Exception):
    """What the test's SIGTERM handler raises (the CLI raises its own KeyboardInterrupt)."""


@pytest.mark.parametrize("sig, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, _Stop)])
@pytest.mark.parametrize("at_byte", [0, 4096, 400_000])
def test_an_interrupt_during_a_save_is_delivered_after_the_file_is_complete(tmp_path, monkeypatch, sig, raised,
                                                                            at_byte):
    """Ctrl-C or SIGTERM arriving inside ``torch.save`` once made torch's zip writer fail on exit
    ("unexpected pos ... vs ...", seen in CI): a traceback instead of the interrupt, and the
    checkpoint lost. The signal is now held until the new file is in place, then delivered."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(100_000, dtype=torch.float64)})
    real_save = torch.save

    class SignallingFile:
        def __init__(self, fh):
            self.fh, self.written, self.sent = fh, 0, False

        def write(self, data):
            data = bytes(data)
            if not self.sent and self.written + len(data) >= at_byte:
                self.sent = True
                os.kill(os.getpid(), sig)  # its handler would run at the next bytecode
            self.written += len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def on_term(signum, frame):
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    # a process started as a background job of a non-interactive shell inherits SIGINT ignored
    # (Python then installs no handler): give it Python's own for the test
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(torch, "save", lambda obj, f, *a, **kw: real_save(obj, SignallingFile(f), *a, **kw))
        with pytest.raises(raised):
            save_checkpoint(path, {"step": 2, "w": torch.full((100_000,), 2.0, dtype=torch.float64)})
        assert signal.getsignal(signal.SIGTERM) is on_term  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    monkeypatch.setattr(torch, "save", real_save)
    state = load_checkpoint(path)
    assert state["step"] == 2 and torch.all(state["w"] == 2.0)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_save_from_another_thread_leaves_the_signal_handlers_alone(tmp_path):
    """Only the main thread may install handlers: a save in a worker thread just writes."""
    import threading

    before = signal.getsignal(signal.SIGINT)
    errors = []

    def worker():
        try:
            save_checkpoint(tmp_path / "t.pt", {"step": 7})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert not errors and load_checkpoint(tmp_path / "t.pt")["step"] == 7
    assert signal.getsignal(signal.SIGINT) is before


# -- resuming through the training core (lawful.kernels.training_core.Loop) ------------------------

def _toy_loop(tmp_path, dtype=torch.float64, log=None, units=5):
    from lawful.kernels.distributed import DistContext
    from lawful.kernels.training_core import Hooks, Loop, LoopConfig

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    class Fit(Hooks):
        def loss(self, idx):
            return ((model(x[idx].to(dtype)).squeeze(1) - y[idx].to(dtype)) ** 2).mean()

        def train_unit(self, loop, unit):
            return {"unit": unit, "loss": float(loop.optimise(torch.arange(12)))}

    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    return Loop(model, opt, None, Fit(), LoopConfig(units=units, checkpoint=tmp_path / "fit.ckpt", log=log),
                ctx=DistContext())


def test_a_ctrl_c_held_during_a_checkpoint_write_loses_no_log_row(tmp_path, monkeypatch):
    """A Ctrl-C that arrives while a checkpoint is written is held until the file is complete and
    delivered right after it, before the unit's log row: the resumed run appended to the log, which
    then lacked that unit (units 0, 1, 3, 4 for 0..4; audit). The resumed log is rewritten from the
    checkpoint's history, so it holds every unit once."""
    import json

    log = tmp_path / "log.jsonl"
    real_save, calls = torch.save, []

    def save(obj, fh, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:                       # Ctrl-C during the checkpoint of unit 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    part = _toy_loop(tmp_path, log=log)
    with pytest.raises(KeyboardInterrupt):
        part.run()
    assert part.done == 3
    monkeypatch.setattr(torch, "save", real_save)
    resumed = _toy_loop(tmp_path, log=log)
    assert resumed.resume() and resumed.done == 3
    resumed.run()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["unit"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows == resumed.history


def test_a_checkpoint_of_another_dtype_is_refused_not_cast(tmp_path):
    """load_state_dict casts: a float64 checkpoint resumed into a float32 model (train() checkpoints
    written before they recorded the dtype, or any hooks that record none) went on as a run of
    neither precision, without a word (audit). The core compares the weights' dtypes itself."""
    done = _toy_loop(tmp_path, units=2)
    done.run()
    other = _toy_loop(tmp_path, dtype=torch.float32)
    before = [p.detach().clone() for p in other.model.parameters()]
    with pytest.raises(ModelFileError, match="holds float64 weights .* the model is float32"):
        other.resume()
    assert other.done == 0 and all(torch.equal(a, b) for a, b in zip(before, other.model.parameters()))
    same = _toy_loop(tmp_path)
    assert same.resume() and same.done == 2
