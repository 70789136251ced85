"""How a fluid run's records are kept, written, read back and summarised (audit of 2026-12-04):
whole-run extrema with a NaN step, CSV columns that start or stop mid-run, values that are not
Python floats, the thinned read keeping a one-step spike, and the timing panel of a kept window."""

import csv
import math

import numpy as np
import pytest
import torch

from lawful.fluids import MetricsWriter, RunRecords, read_metrics_csv
from lawful.fluids import metrics as fm
from lawful.kernels.errors import InputError


def test_whole_run_extrema_are_nan_when_a_step_was_nan():
    """records.max("div_max_rel") of a run whose divergence went NaN at a step was the finite
    value of the others (2e-8 here): the worst divergence of the run read as healthy."""
    r = RunRecords(keep="last")
    for div, ke in ((1e-8, 1.0), (float("nan"), 0.5), (2e-8, 0.25)):
        r.append({"div_max_rel": div, "kinetic_energy": ke})
    assert math.isnan(r.max("div_max_rel")) and math.isnan(r.min("div_max_rel"))
    assert r.max("kinetic_energy") == 1.0 and r.min("kinetic_energy") == 0.25    # other fields as before
    only_nan = RunRecords()
    only_nan.append({"x": float("nan"), "y": math.inf})
    assert math.isnan(only_nan.max("x"))                     # a field NaN at every step is known
    assert only_nan.max("y") == math.inf and only_nan.min("y") == math.inf
    with pytest.raises(InputError, match="'z'.*known: \\['x', 'y'\\]"):
        only_nan.max("z")
    numpy_values = RunRecords()                              # a numpy scalar was no "numeric field"
    numpy_values.append({"residual": np.float32(0.5), "iters": np.int64(3), "ok": True})
    numpy_values.append({"residual": np.float64(0.25), "iters": np.int64(9), "ok": False})
    assert numpy_values.max("residual") == 0.5 and numpy_values.min("residual") == 0.25
    assert numpy_values.max("iters") == 9
    with pytest.raises(InputError, match="'ok'"):
        numpy_values.max("ok")


def test_csv_keeps_a_column_that_starts_later_and_reads_a_missing_cell_as_nan(tmp_path):
    """A key first seen at a later step was dropped from the CSV without a word; a step without one
    of the columns wrote an empty cell that read_metrics_csv refused (ValueError)."""
    path = tmp_path / "m.csv"
    with MetricsWriter(path) as w:
        w.write({"step": 1, "kinetic_energy": 0.1, "div_max_rel": 3e-7})
        w.write({"step": 2, "kinetic_energy": 0.2, "div_max_rel": 1e-9, "drag": 1.0 / 3.0})
        assert read_metrics_csv(path)[-1]["drag"] == 1.0 / 3.0           # readable while the run goes on
        w.write({"step": 3, "kinetic_energy": 0.3, "drag": -2.5e-17, "cd": 7.0})
        w.write({"step": 4, "kinetic_energy": 0.4, "div_max_rel": 5e-8, "drag": 0.0, "cd": 1e300})
    with open(path, newline="") as fh:
        assert next(csv.reader(fh)) == ["step", "kinetic_energy", "div_max_rel", "drag", "cd"]
    rows = read_metrics_csv(path)
    assert [r["step"] for r in rows] == [1.0, 2.0, 3.0, 4.0]
    assert [r["kinetic_energy"] for r in rows] == [0.1, 0.2, 0.3, 0.4]
    assert math.isnan(rows[0]["drag"]) and rows[1]["drag"] == 1.0 / 3.0 and rows[2]["drag"] == -2.5e-17
    assert math.isnan(rows[2]["div_max_rel"]) and rows[3]["div_max_rel"] == 5e-8
    assert math.isnan(rows[1]["cd"]) and rows[2]["cd"] == 7.0 and rows[3]["cd"] == 1e300
    assert not list(tmp_path.glob(".m.csv.*"))                         # no temporary file left


def test_csv_values_round_trip_exactly_whatever_their_type(tmp_path):
    """A 0-d tensor was written as its str, 'tensor(0.1235, dtype=torch.float64)' (4 digits, and
    the reader refused the file); numpy float32 as its shortest str (0.1, not the float32 value)."""
    path = tmp_path / "m.csv"
    values = {"step": 7, "t": torch.tensor(0.123456789012345, dtype=torch.float64),
              "f32": np.float32(0.1), "f64": np.float64(1.0 / 3.0), "n": np.int64(12), "flag": True,
              "nan": float("nan"), "inf": -math.inf, "tiny": 2.2250738585072014e-308, "third": 1.0 / 3.0}
    with MetricsWriter(path) as w:
        w.write(values)
    (row,) = read_metrics_csv(path)
    assert row["t"] == 0.123456789012345 and row["f32"] == float(np.float32(0.1)) == 0.10000000149011612
    assert row["f64"] == 1.0 / 3.0 and row["n"] == 12.0 and row["flag"] == 1.0 and row["step"] == 7.0
    assert math.isnan(row["nan"]) and row["inf"] == -math.inf and row["tiny"] == 2.2250738585072014e-308
    assert row["third"] == 1.0 / 3.0


def _long_csv(path, n=20_000):
    with open(path, "w", newline="") as fh:
        fh.write("step,t,div_max_rel,kinetic_energy,cfl\n")
        for i in range(1, n + 1):
            div = 1e-3 if i == 5001 else 1e-8
            ke = 0.25 if i == 12_347 else 1.0 - 1e-6 * i
            cfl = "nan" if i == 7777 else 0.5
            fh.write(f"{i},{repr(0.01 * i)},{div},{ke},{cfl}\n")


def test_thinned_read_keeps_every_columns_extremes(tmp_path):
    """A one-step divergence spike (1e-3 at step 5001 of 20000, 1e-8 elsewhere) was not among the
    every-k-th rows drawn: the figure of the run showed a flat 1e-8."""
    path = tmp_path / "long.csv"
    _long_csv(path)
    full = read_metrics_csv(path)
    rows, total = fm.read_metrics_thinned(path, max_points=500)
    assert total == 20_000 and len(rows) <= 500
    steps = [int(r["step"]) for r in rows]
    assert steps[:2] == [1, 2] and steps[-1] == 20_000 and steps == sorted(set(steps))
    for key in ("div_max_rel", "kinetic_energy"):
        assert max(r[key] for r in rows) == max(r[key] for r in full)
        assert min(r[key] for r in rows) == min(r[key] for r in full)
    assert max(r["div_max_rel"] for r in rows) == 1e-3 and min(r["kinetic_energy"] for r in rows) == 0.25
    assert 7777 in steps and math.isnan(rows[steps.index(7777)]["cfl"])      # the first NaN too
    byrow = {int(r["step"]): r for r in full}
    assert all(r == byrow[int(r["step"])] for r in rows if not math.isnan(r["cfl"]))   # values exact
    with pytest.raises(InputError, match="max_points >= "):
        fm.read_metrics_thinned(path, max_points=5)


def test_timing_panel_of_a_window_or_a_restart_names_its_own_steps():
    """The timing panel called the first record drawn "step 1, with compilation" and left it out
    even when it was step 101 (a restarted scene) or a RunRecords window whose first step had long
    been dropped (the title did not say only the last steps were drawn)."""
    recs = [{"step": s, "t": 0.1 * s, "wall_s": w} for s, w in ((101, 2.0), (102, 0.003), (103, 0.004))]
    (title, _, lines, _), = [p for p in fm.metrics_panels(recs) if p[0] == "time per step"]
    label, t, y, _ = lines[0]
    assert "step 101" in label and "steps 102+" in label and list(y) == [3.0, 4.0]
    (_, _, lines, _), = [p for p in fm.metrics_panels(recs, from_start=False) if p[0] == "time per step"]
    assert list(lines[0][2]) == [2000.0, 3.0, 4.0] and list(lines[0][1]) == [0.1 * s for s in (101, 102, 103)]


def test_plot_of_a_records_window_says_so(tmp_path, monkeypatch):
    r = RunRecords(keep=3)
    for s in range(1, 11):
        r.append({"step": s, "t": 0.5 * s, "kinetic_energy": 1.0 / s, "wall_s": 0.01})
    seen = {}
    real = fm.metrics_panels

    def spy(records, ke_exact=None, from_start=True):
        seen["steps"], seen["from_start"] = [x["step"] for x in records], from_start
        return real(records, ke_exact, from_start)

    monkeypatch.setattr(fm, "metrics_panels", spy)
    titles = []
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "suptitle", lambda self, s, *a, **k: titles.append(s))
    fm.plot_metrics(r, tmp_path / "w.png", title="tg")
    assert seen == {"steps": [8, 9, 10], "from_start": False}
    assert titles == ["tg (the last 3 of 10 steps drawn)"]
    whole = RunRecords(keep="all")
    for s in range(1, 4):
        whole.append({"step": s, "t": 0.5 * s, "kinetic_energy": 1.0 / s, "wall_s": 0.01})
    fm.plot_metrics(whole, tmp_path / "a.png", title="tg")
    assert seen == {"steps": [1, 2, 3], "from_start": True} and titles[-1] == "tg"


def test_thinned_read_of_a_csv_with_a_later_column(tmp_path):
    """The same through the csv module's path: a column that starts later (empty cells before)."""
    path = tmp_path / "later.csv"
    with MetricsWriter(path) as w:
        for i in range(1, 3001):
            rec = {"step": i, "t": 0.5 * i, "kinetic_energy": 1.0 / i}
            if i > 1000:
                rec["drag"] = 9.5 if i == 2222 else -1.0 if i == 1717 else 0.25
            w.write(rec)
    rows, total = fm.read_metrics_thinned(path, max_points=50)
    assert total == 3000 and len(rows) <= 50
    steps = [int(r["step"]) for r in rows]
    assert steps[:2] == [1, 2] and steps[-1] == 3000 and 2222 in steps and 1717 in steps
    assert max(r["drag"] for r in rows if not math.isnan(r["drag"])) == 9.5
    assert min(r["drag"] for r in rows if not math.isnan(r["drag"])) == -1.0
    assert all(math.isnan(r["drag"]) for r in rows if r["step"] <= 1000)


def test_run_records_and_csv_agree_exactly_and_a_second_run_replaces_the_csv(tmp_path):
    """The records kept, the whole-run extrema and the CSV are the same numbers (float64 exact);
    a second run of the same scene to the same path replaces the file, its steps continuing."""
    from lawful.fluids import run, scenes

    sc = scenes.taylor_green(n=8, dtype=torch.float64)
    path = tmp_path / "m.csv"
    recs = run(sc, 5, csv=path, keep=2)
    rows = read_metrics_csv(path)
    assert [r["step"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0] and recs.total == 5 and len(recs) == 2
    assert [dict(r) for r in recs] == rows[-2:] and recs[-1]["step"] == 5
    for key in rows[0]:
        assert recs.max(key) == max(r[key] for r in rows) and recs.min(key) == min(r[key] for r in rows), key
    assert rows[-1]["t"] == recs[-1]["t"] == sc.state.t
    again = run(sc, 3, csv=path, keep="all")
    rows2 = read_metrics_csv(path)
    assert [r["step"] for r in rows2] == [6.0, 7.0, 8.0] and [dict(r) for r in again] == rows2
