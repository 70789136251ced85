"""Watching a fluid run: the animation (frame count, one colour scale), the live window, the
metrics figure, and the ``lawful fluid`` options that drive them, end to end at n=16."""

import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from lawful.fluids import run, scenes
from lawful.fluids.metrics import read_metrics_csv, state_metrics
from lawful.integrations import fluid_viz
from lawful.integrations.cli import main
from lawful.kernels.errors import BackendError, InputError


@pytest.fixture(scope="module")
def karman_animation(tmp_path_factory):
    """A Kármán run of 20 steps at n=16 recorded every 4 steps (6 frames, step 0 included)."""
    sc = scenes.karman(re=150, n=16)
    rec = fluid_viz.FrameRecorder(sc, every=4)
    rec(sc.state)
    run(sc, 20, callback=rec)
    anim = rec.save(tmp_path_factory.mktemp("anim") / "vorticity.gif", fps=5, mp4=False)
    return sc, rec, anim


def _gif_frames(path):
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(im)]


def test_gif_has_one_frame_per_kept_step(karman_animation):
    _, rec, anim = karman_animation
    assert rec.steps == [0, 4, 8, 12, 16, 20] and anim.steps == rec.steps
    assert anim.n_frames == 6 and len(_gif_frames(anim.gif)) == 6
    assert anim.mp4 is None


def test_gif_colour_scale_is_fixed_across_frames(karman_animation):
    """Every frame is drawn with the range fixed from all frames, and the colour-bar strip of the
    GIF is the same picture in every frame while the flow itself changes."""
    _, rec, anim = karman_animation
    assert anim.clim == fluid_viz.colour_limits("vorticity", rec.frames)
    assert anim.clim[1] == -anim.clim[0] > 0
    assert anim.frame_clims == [anim.clim] * 6
    frames = _gif_frames(anim.gif)
    h, w, _ = frames[0].shape
    bar = (slice(int(0.15 * h), h), slice(int(0.88 * w), w))  # colour bar, its ticks and label
    field = (slice(int(0.25 * h), int(0.75 * h)), slice(int(0.15 * w), int(0.75 * w)))
    for f in frames[1:]:
        assert np.abs(f[bar] - frames[0][bar]).mean() < 0.2
    assert np.abs(frames[-1][field] - frames[0][field]).mean() > 2.0  # the flow moved


def test_colour_limits_rule():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 30)).astype(np.float32)
    b = 3 * a
    b[0, 0] = np.nan  # solid cells are ignored
    lo, hi = fluid_viz.colour_limits("vorticity", [a, b])
    pooled = np.abs(np.concatenate([a.ravel(), b.ravel()]))
    assert hi == pytest.approx(np.nanpercentile(pooled, 99.5)) and lo == -hi
    lo, hi = fluid_viz.colour_limits("density", [np.abs(a)])
    assert lo == 0.0 and hi == pytest.approx(np.percentile(np.abs(a), 99.5))
    assert fluid_viz.colour_limits("speed", [np.zeros((4, 4))]) == (0.0, 1.0)  # never an empty range
    lo, hi = fluid_viz.colour_limits("pressure", [a + 10])
    assert lo == pytest.approx(np.percentile(a + 10, 0.5)) and hi == pytest.approx(np.percentile(a + 10, 99.5))


@pytest.mark.parametrize("steps", [1, 7, 99, 100, 101, 1000, 12345])
@pytest.mark.parametrize("max_frames", [2, 11, 100])
def test_frame_interval_bounds_the_frame_count(steps, max_frames):
    every = fluid_viz.frame_interval(steps, max_frames)
    n = 1 + math.ceil(steps / every)  # step 0, every k-th step and the last
    assert n <= max_frames
    if every > 1:  # the shortest interval that spans the run within the bound
        assert math.ceil(steps / (every - 1)) > max_frames - 1


def test_recorder_keeps_the_last_step_when_the_interval_does_not_divide_the_run():
    sc = scenes.taylor_green(n=8)
    rec = fluid_viz.FrameRecorder(sc, every=3, last_step=7)
    rec(sc.state)
    run(sc, 7, callback=rec)
    assert rec.steps == [0, 3, 6, 7] and len(rec.frames) == 1 + math.ceil(7 / 3)
    assert rec.times[-1] == pytest.approx(sc.state.t)


def test_frame_interval_rejects_fewer_than_two_frames():
    with pytest.raises(InputError, match="max_frames=1"):
        fluid_viz.frame_interval(10, 1)


def test_taylor_green_vorticity_is_oriented_and_placed_on_the_corners():
    """omega = 2 A sin x sin y for Taylor-Green; the [x, y] array must match it at the corners
    x = i dx, y = j dx (the centred difference of the staggered samples shrinks it by
    sin(dx/2)/(dx/2))."""
    sc = scenes.taylor_green(n=32, dtype=torch.float64)
    w, extent = fluid_viz.field_values(sc.state, "vorticity")
    dx = sc.state.dx
    i = np.arange(32)
    exact = 2 * np.sin(i * dx)[:, None] * np.sin(i * dx)[None, :] * (math.sin(dx / 2) / (dx / 2))
    np.testing.assert_allclose(w, exact, atol=1e-5)
    assert extent == (-0.5, 31.5, -0.5, 31.5)


def test_speed_and_density_mask_the_obstacle():
    sc = scenes.karman(re=100, n=16)
    speed, extent = fluid_viz.field_values(sc.state, "speed")
    solid = sc.state.solid.numpy()
    assert solid.any() and np.isnan(speed[solid]).all() and np.isfinite(speed[~solid]).all()
    assert extent == (0.0, 64.0, 0.0, 16.0)
    assert np.nanmax(speed) == pytest.approx(1.0)  # the inflow speed
    assert fluid_viz.default_field(sc) == "vorticity"
    assert fluid_viz.default_field(scenes.smoke_plume(n=24)) == "density"


@pytest.mark.parametrize("size", [(1.0, 1.0), (2.0, 1.0), (4.0, 1.0), (6.0, 1.0), (8.0, 1.0), (16.0, 1.0),
                                  (1.0, 2.0), (1.0, 4.0), (1.0, 8.0)])
def test_cells_are_drawn_square_whatever_the_domain_shape(size):
    """A circle must look round: one cell is as many pixels wide as tall in the figure of any
    domain (a 6:1 channel's cells were drawn 1.5x taller than wide, an 8:1 channel's 2x: its
    cylinder an upright ellipse)."""
    st = scenes.flow_scene(size, n=16, dt=0.01).state
    vals, extent = fluid_viz.field_values(st, "speed")
    fig = fluid_viz._FieldFigure("speed", st, vals, extent, (0.0, 1.0))
    box = fig.ax.get_window_extent()
    fig.close()
    assert (st.nx, st.ny) == (round(16 * size[0] / size[1]), 16)
    assert box.width / st.nx == pytest.approx(box.height / st.ny, rel=1e-9)


def test_snapshots_share_a_colour_bar_only_when_given_one_range(tmp_path):
    """Two snapshots of flows twice as strong: with one ``clim`` their colour-bar strips are the
    same picture; with each frame's own range they are not (the control)."""
    from PIL import Image

    weak = scenes.taylor_green(n=16).state
    strong = weak.clone()
    strong.u.mul_(2.0)
    strong.v.mul_(2.0)

    def bar(path):
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        h, w, _ = img.shape
        return img[int(0.15 * h):, int(0.80 * w):]

    paths = {}
    for label, clim in (("fixed", (-3.0, 3.0)), ("own", None)):
        for name, st in (("weak", weak), ("strong", strong)):
            paths[label, name] = fluid_viz.save_field_png(st, tmp_path / f"{label}_{name}.png", title="t", clim=clim)
    assert np.array_equal(bar(paths["fixed", "weak"]), bar(paths["fixed", "strong"]))
    assert not np.array_equal(bar(paths["own", "weak"]), bar(paths["own", "strong"]))


def test_density_on_a_scene_without_a_scalar_is_an_input_error():
    with pytest.raises(InputError, match="'density'.*'taylor_green'"):
        fluid_viz.check_field(scenes.taylor_green(n=8), "density")
    with pytest.raises(InputError, match="'vort'"):
        fluid_viz.check_field(scenes.taylor_green(n=8), "vort")


def test_mp4_without_ffmpeg_is_a_clear_error(karman_animation, monkeypatch, tmp_path):
    _, rec, _ = karman_animation
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BackendError, match="ffmpeg"):
        rec.save(tmp_path / "v.gif", mp4=True)
    assert not list(tmp_path.iterdir())  # refused before writing anything
    assert rec.save(tmp_path / "w.gif").mp4 is None  # default: GIF only when ffmpeg is absent


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mp4_beside_the_gif_when_ffmpeg_is_present(karman_animation, tmp_path):
    _, rec, _ = karman_animation
    anim = rec.save(tmp_path / "v.gif", fps=5)
    assert anim.mp4 == tmp_path / "v.mp4" and anim.mp4.stat().st_size > 1000
    if shutil.which("ffprobe"):
        r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,codec_name", "-of", "csv=p=0", str(anim.mp4)],
                           capture_output=True, text=True, check=True)
        assert r.stdout.strip() == f"h264,{anim.n_frames}"


# -- the metrics figure --------------------------------------------------------------------------

def test_taylor_green_exact_kinetic_energy_decays_as_exp_minus_4_nu_t():
    sc = scenes.taylor_green(n=16, dtype=torch.float64, viscosity=0.05)
    ke = fluid_viz.analytic_kinetic_energy(sc)
    ke0 = state_metrics(sc.state)["kinetic_energy"]  # the discrete KE of the initial state
    for t in (0.0, 0.7, 3.0):
        assert ke(t) == pytest.approx(ke0 * math.exp(-4 * 0.05 * t), rel=1e-12)
    assert fluid_viz.analytic_kinetic_energy(scenes.smoke_plume(n=24)) is None


def test_metrics_panels_only_for_recorded_quantities(tmp_path):
    tg = scenes.taylor_green(n=16, dtype=torch.float64)
    ke = fluid_viz.analytic_kinetic_energy(tg)
    run(tg, 5, csv=tmp_path / "tg.csv")
    rows = read_metrics_csv(tmp_path / "tg.csv")
    panels = fluid_viz.metrics_panels(rows, ke)
    titles = [p[0] for p in panels]
    assert titles == ["divergence", "kinetic energy", "enstrophy", "pressure solve", "time per step"]
    assert all(p[1] for p in panels)  # every y axis has a label with its unit
    (sim, exact), = [p[2] for p in panels if p[0] == "kinetic energy"]
    assert exact[1][0] == 0.0 and exact[2][0] == pytest.approx(ke(0.0))
    timing = panels[-1][2][0]
    np.testing.assert_array_equal(timing[1], [r["t"] for r in rows[1:]])  # step 1 (compile) left out
    np.testing.assert_allclose(timing[2], [1e3 * r["wall_s"] for r in rows[1:]])
    # a warm-up step 44x the others (first-hour audit 4.8: 88 ms beside 2 ms) puts the panel on a log axis
    slow = [dict(r) for r in rows]
    for r in slow:
        r["wall_s"] = 0.002
    slow[1]["wall_s"] = 0.088
    timing = fluid_viz.metrics_panels(slow, ke)[-1]
    assert timing[3] is True and timing[1] == "wall time (ms, log)"
    slow[1]["wall_s"] = 0.002
    assert fluid_viz.metrics_panels(slow, ke)[-1][3] is False
    smoke = scenes.smoke_plume(n=24)
    run(smoke, 2, csv=tmp_path / "s.csv")
    titles = [p[0] for p in fluid_viz.metrics_panels(read_metrics_csv(tmp_path / "s.csv"))]
    assert "scalar mass" in titles and "kinetic energy" in titles
    # the force on a body, which metrics.csv records, has its panel (report audit 6: it had none)
    karman = scenes.karman(re=100.0, n=16)
    run(karman, 2, csv=tmp_path / "k.csv")
    rows = read_metrics_csv(tmp_path / "k.csv")
    (force,) = [p for p in fluid_viz.metrics_panels(rows) if p[0] == "force on the obstacles"]
    assert [line[0] for line in force[2]] == ["cd", "cl"] and "dimensionless" in force[1]
    np.testing.assert_array_equal(force[2][0][2], [r["cd"] for r in rows])
    png = fluid_viz.plot_metrics(tmp_path / "tg.csv", tmp_path / "m.png", scene=tg)
    assert png.stat().st_size > 10_000


# -- the command line ----------------------------------------------------------------------------

def test_cli_animate_field_frames_end_to_end(tmp_path):
    out = tmp_path / "k"
    assert main(["fluid", "--scene", "karman", "--n", "16", "--steps", "20", "--animate", "--max-frames", "11",
                 "--frame-every", "10", "--field", "speed", "--arch", "cpu", "--fps", "5", "--out", str(out)]) == 0
    assert len(_gif_frames(out / "speed.gif")) == 11  # step 0 and every 2nd step
    assert (out / "speed.mp4").is_file() == (shutil.which("ffmpeg") is not None)
    assert sorted(p.name for p in (out / "frames").glob("*.png")) == ["speed_000010.png", "speed_000020.png"]
    assert len(read_metrics_csv(out / "metrics.csv")) == 20
    assert (out / "metrics.png").stat().st_size > 10_000


def test_cli_smoke_plume_animates_the_density_by_default(tmp_path):
    out = tmp_path / "s"
    assert main(["fluid", "--scene", "smoke_plume", "--n", "24", "--steps", "6", "--animate", "--frame-every", "0",
                 "--out", str(out)]) == 0
    assert len(_gif_frames(out / "density.gif")) == 7
    assert not (out / "frames").exists()


def test_cli_density_on_a_scene_without_density_exits_2_before_running(tmp_path, capsys):
    out = tmp_path / "tg"
    assert main(["fluid", "--scene", "taylor_green", "--n", "16", "--steps", "3", "--field", "density",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'density'" in err and "taylor_green" in err
    assert not (out / "metrics.csv").exists()


def test_cli_gui_without_a_display_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "g"
    assert main(["fluid", "--gui", "--n", "16", "--steps", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--gui needs a display" in err and "DISPLAY" in err
    assert not (out / "metrics.csv").exists()


def _metrics_without_timing(path):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics_csv(path)]


def test_cli_seed_makes_the_random_corrector_reproducible(tmp_path):
    rng_before = torch.get_rng_state()
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / name
        assert main(["fluid", "--scene", "taylor_green", "--n", "16", "--steps", "4", "--corrector", "random",
                     "--seed", str(seed), "--frame-every", "0", "--dtype", "float64", "--out", str(out)]) == 0
        runs[name] = _metrics_without_timing(out / "metrics.csv")
    assert runs["a"] == runs["b"]
    assert runs["a"][-1]["kinetic_energy"] != runs["c"][-1]["kinetic_energy"]
    assert torch.equal(torch.get_rng_state(), rng_before)  # the process's generator is left alone


def test_cli_seed_sets_the_kolmogorov_perturbation(tmp_path):
    ke = []
    for seed in (0, 0, 5):
        out = tmp_path / f"k{seed}-{len(ke)}"
        assert main(["fluid", "--scene", "kolmogorov", "--n", "16", "--steps", "1", "--seed", str(seed),
                     "--frame-every", "0", "--dtype", "float64", "--out", str(out)]) == 0
        ke.append(read_metrics_csv(out / "metrics.csv")[0]["enstrophy"])
    assert ke[0] == ke[1] != ke[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cli_cuda_device_without_a_gpu_exits_2(tmp_path, capsys):
    assert main(["fluid", "--device", "cuda", "--n", "16", "--steps", "2", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "'cuda'" in err and len(err.strip().splitlines()) == 1


# -- the live window, for real under a virtual X server --------------------------------------------

_GUI_SCRIPT = """
import sys
from lawful.integrations.cli import main
from lawful.integrations import fluid_viz
from lawful.fluids import run, scenes

assert main(["fluid", "--gui", "--scene", "karman", "--n", "16", "--steps", "5", "--frame-every", "0",
             "--arch", "cpu", "--out", sys.argv[1] + "/out"]) == 0
sc = scenes.karman(re=150, n=16)
view = fluid_viz.LiveView(sc)
run(sc, 30, callback=view)
view(sc.state, screenshot=sys.argv[1] + "/shot.png")
view.gui.running = False  # what the window's close button does
try:
    view(sc.state)
    raise SystemExit("a closed window must stop the run")
except fluid_viz.WindowClosed:
    pass
view.close()
print("window", view.scale, view.clim)
"""


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run (Xvfb) is not installed")
def test_live_window_under_xvfb(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(["xvfb-run", "-a", sys.executable, "-c", _GUI_SCRIPT, str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    from PIL import Image

    line = r.stdout.strip().splitlines()[-1]
    assert (tmp_path / "out" / "metrics.csv").is_file()
    img = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    scale = min(1024 // 64, 768 // 16)
    assert img.shape == (16 * scale, 64 * scale, 3), line
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # a field, not a blank window
    assert (np.abs(img.astype(int) - round(0.29 * 255)).max(axis=2) <= 1).any()  # the obstacle's grey


def test_cli_closing_the_window_stops_the_run_and_keeps_its_outputs(tmp_path, monkeypatch, capsys):
    """A window closed at step 3 (a stand-in for ti.GUI that needs no display) ends the run there;
    the metrics, their figure and the animation of the steps done are written, exit status 0."""

    class ClosedAtStep3:
        def __init__(self, scene, field):
            self.field = field

        def __call__(self, state, record=None):
            if state.step == 3:
                raise fluid_viz.WindowClosed("window closed at step 3")

        def close(self):
            pass

    monkeypatch.setattr(fluid_viz, "require_display", lambda: None)
    monkeypatch.setattr(fluid_viz, "LiveView", ClosedAtStep3)
    out = tmp_path / "w"
    assert main(["fluid", "--gui", "--animate", "--scene", "taylor_green", "--n", "16", "--steps", "10",
                 "--max-frames", "11", "--frame-every", "0", "--out", str(out)]) == 0
    assert "window closed at step 3" in capsys.readouterr().out
    assert len(read_metrics_csv(out / "metrics.csv")) == 3
    assert (out / "metrics.png").is_file()
    assert len(_gif_frames(out / "vorticity.gif")) == 4  # steps 0..3


def test_cli_interrupt_keeps_the_animation_so_far(tmp_path, monkeypatch):
    """Ctrl-C at step 4 (raised from the snapshot writer): exit 130, and the GIF of steps 0-3 and
    metrics.png are written before the command exits."""
    def interrupt(state, path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fluid_viz, "save_field_png", interrupt)
    out = tmp_path / "i"
    assert main(["fluid", "--animate", "--scene", "taylor_green", "--n", "16", "--steps", "10", "--max-frames", "11",
                 "--frame-every", "4", "--out", str(out)]) == 130
    assert len(_gif_frames(out / "vorticity.gif")) == 4
    assert len(read_metrics_csv(out / "metrics.csv")) == 4 and (out / "metrics.png").is_file()


def test_metrics_of_a_long_run_are_read_in_bounded_memory(tmp_path):
    """A 10^5-row CSV is drawn from at most max_points rows: the first two (the compile step and
    the first timed one), every k-th, and the last; the count of all rows comes back too."""
    path = tmp_path / "long.csv"
    with open(path, "w") as fh:
        fh.write("step,t,kinetic_energy,wall_s\n")
        for i in range(1, 100_001):
            fh.write(f"{i},{0.01 * i},{math.exp(-0.001 * i)},0.001\n")
    rows, total = fluid_viz.read_metrics_thinned(path, max_points=500)
    assert total == 100_000 and len(rows) <= 500
    steps = [int(r["step"]) for r in rows]
    assert steps[:2] == [1, 2] and steps[-1] == 100_000 and steps == sorted(set(steps))
    png = fluid_viz.plot_metrics(path, tmp_path / "long.png")
    assert png.stat().st_size > 5_000


def test_public_names_have_docstrings():
    from lawful.integrations import fluid_frames

    for mod in (fluid_viz, fluid_frames):
        assert mod.__doc__
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj):
                assert obj.__doc__ and obj.__doc__.strip(), f"{mod.__name__}.{name} has no docstring"
    # the command line lists the fields itself (its --help imports nothing heavy): the same names
    from lawful.integrations.cli import build_parser

    fluid = build_parser()._subparsers._group_actions[0].choices["fluid"]
    (field,) = [a for a in fluid._actions if "--field" in a.option_strings]
    assert tuple(field.choices) == fluid_viz.FIELDS


def test_cli_pressure_frames_show_the_time_centred_pressure(tmp_path, monkeypatch):
    """state.p is the step's time-centred pressure (stored_pressure), which changes smoothly from
    step to step, and the command line's pressure frames show it. Control: storing the projection's
    own end pressure p' = 2 P - p instead (the rule until 2026-12) makes state.p flip by more than
    its size (a neutral mode the start from p = 0 excites)."""
    from lawful.fluids import scenes, solver as solver_module

    def swing(rule):
        with monkeypatch.context() as m:
            m.setattr(solver_module, "stored_pressure", rule)
            sc = scenes.lid_driven_cavity(re=100, n=32)
            solver = sc.make_solver()
            fields = []
            for _ in range(30):
                solver.step(sc.state)
                fields.append(sc.state.p.double().clone())
        return max(float((fields[k] - fields[k - 1]).norm() / fields[k].norm()) for k in range(20, 30)), fields[-1]

    assert swing(lambda before, solved, predictor: solved)[0] > 0.5
    smooth, final = swing(solver_module.stored_pressure)
    assert smooth < 0.05, smooth
    seen = []
    record = fluid_viz.FrameRecorder.__call__

    def spy(self, state, rec=None):
        record(self, state, rec)
        seen.append(self.frames[-1])

    monkeypatch.setattr(fluid_viz.FrameRecorder, "__call__", spy)
    assert main(["fluid", "--scene", "lid_driven_cavity", "--n", "32", "--steps", "30", "--animate", "--max-frames",
                 "31", "--frame-every", "0", "--field", "pressure", "--arch", "cpu", "--out", str(tmp_path / "c")]) == 0
    shown = [np.nan_to_num(f.astype(np.float64)) for f in seen[20:]]
    change = max(np.linalg.norm(b - a) / np.linalg.norm(b) for a, b in zip(shown[:-1], shown[1:]))
    assert change < 0.15, change
    final = np.nan_to_num(final.numpy())  # the same run, the same field as the last frame
    assert np.allclose(np.nan_to_num(seen[-1].astype(np.float64)), final, rtol=1e-4, atol=1e-6 * np.abs(final).max())


@pytest.mark.parametrize("scale", [4, 8])
def test_live_view_draws_a_corner_value_on_its_corner(scale):
    """The live window drew corner (vorticity) values as the block of cell k, centred half a cell
    up and right of corner k and of the obstacle outline (audit). One v face set to 1 makes
    vorticity +1/dx and -1/dx at the corners (i, j) and (i + 1, j) on either side of it: the
    image's colour deviation must be centred on x = i + 1/2, y = j cells (pixels x scale)."""
    import matplotlib

    from lawful.fluids import scenes

    sc = scenes.taylor_green(n=16)                  # periodic: corners 0..n-1
    st = sc.state
    st.u.zero_()
    st.v.zero_()
    i, j = 6, 9
    st.v[i, j] = 1.0
    view = object.__new__(fluid_viz.LiveView)        # no window: image() needs none
    view.name, view.nx, view.ny, view.scale, view.clim = "vorticity", st.nx, st.ny, scale, None
    view._cmap = matplotlib.colormaps[fluid_viz._STYLE["vorticity"][0]]
    view._solid = np.zeros((st.nx * scale, st.ny * scale), dtype=bool)
    rgb = view.image(st)
    mid = view._cmap(0.5)[:3]
    weight = np.abs(rgb - np.asarray(mid, dtype=np.float32)).sum(axis=2)
    px, py = np.meshgrid(np.arange(rgb.shape[0]) + 0.5, np.arange(rgb.shape[1]) + 0.5, indexing="ij")
    centre = ((weight * px).sum() / weight.sum() / scale, (weight * py).sum() / weight.sum() / scale)
    assert centre == pytest.approx((i + 0.5, j), abs=0.05)      # the colour map is not quite symmetric
