"""Failure paths of watching a flow (issue 12): the ``lawful fluid`` viewing options and the
``lawful.integrations.fluid_viz`` API, as tables of mistakes.

Command-line cases: exit status 2, one line on stderr naming the bad value, no traceback, nothing
run (no metrics.csv) and an earlier result in the output folder intact. API cases: the error
class, the message naming the bad value, and a file already at the target path intact.
"""

from __future__ import annotations

import shlex

import pytest
import torch

from lawful.fluids import scenes
from lawful.integrations import fluid_viz
from lawful.integrations.cli import main
from lawful.kernels.errors import BackendError, InputError

KEEP = "results of an earlier run\n"

CLI_CASES = [
    ("--scene taylor_green --field density", "'density'"),
    ("--scene kolmogorov --field density", "'density'"),
    ("--field vort", "'vort'"),
    ("--field", "--field"),
    ("--animate --max-frames 1", "--max-frames: 1"),
    ("--animate --max-frames many", "'many'"),
    ("--fps 0", "--fps: 0"),
    ("--frame-every -1", "--frame-every: -1"),
    ("--arch gpu", "'gpu'"),
    ("--arch cuda", "'cuda'"),
    ("--gui", "DISPLAY"),
    ("--n 2", "--n: 2"),
    ("--scene karman --n 4", "n=4"),
    ("--steps -5", "--steps: -5"),
    ("--re 0", "--re: 0"),
    ("--re nan", "nan"),
    ("--corrector {t}/nope.lawful", "nope.lawful"),
    ("--device banana", "'banana'"),
]


@pytest.mark.parametrize("args, names", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_fluid_cli_mistakes_exit_2_in_one_line_before_running(args, names, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("the refusal of --arch cuda is checked on machines without a GPU")
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_text(KEEP)
    argv = ["fluid", "--n", "16", "--steps", "3", "--frame-every", "0", "--out", str(out)]
    argv += shlex.split(args.format(t=tmp_path))
    assert main(argv) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lawful fluid: error:"), cap.err
    assert names in lines[0] and "Traceback" not in cap.err
    assert (out / "metrics.csv").read_text() == KEEP
    assert not list(out.glob("*.gif")) and not (out / "frames").exists()


def test_fluid_cli_bad_arch_environment_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAWFUL_TI_ARCH", "bogus")
    assert main(["fluid", "--n", "16", "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'bogus'" in err and "LAWFUL_TI_ARCH" in err


@pytest.fixture
def tg():
    return scenes.taylor_green(n=8)


def _no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def _recorded(sc):
    rec = fluid_viz.FrameRecorder(sc)
    rec(sc.state)
    return rec


API_CASES = [
    # (id, call(scene, path, monkeypatch), error class, text the message must contain)
    ("check_field unknown", lambda sc, p, mp: fluid_viz.check_field(sc, "vort"), InputError, "'vort'"),
    ("check_field density without scalar", lambda sc, p, mp: fluid_viz.check_field(sc, "density"), InputError,
     "'density'"),
    ("field_values density without scalar", lambda sc, p, mp: fluid_viz.field_values(sc.state, "density"),
     InputError, "'density'"),
    ("field_values unknown", lambda sc, p, mp: fluid_viz.field_values(sc.state, "temperature"), InputError,
     "'temperature'"),
    ("recorder every=0", lambda sc, p, mp: fluid_viz.FrameRecorder(sc, every=0), InputError, "every=0"),
    ("recorder every=1.5", lambda sc, p, mp: fluid_viz.FrameRecorder(sc, every=1.5), InputError, "every=1.5"),
    ("recorder unknown field", lambda sc, p, mp: fluid_viz.FrameRecorder(sc, "smoke"), InputError, "'smoke'"),
    ("save without frames", lambda sc, p, mp: fluid_viz.FrameRecorder(sc).save(p), InputError, "earlier.gif"),
    ("save fps=0", lambda sc, p, mp: _recorded(sc).save(p, fps=0), InputError, "fps=0"),
    ("save fps=2.5", lambda sc, p, mp: _recorded(sc).save(p, fps=2.5), InputError, "fps=2.5"),
    ("frame_interval 0 frames", lambda sc, p, mp: fluid_viz.frame_interval(10, 0), InputError, "max_frames=0"),
    ("frame_interval 2.5 frames", lambda sc, p, mp: fluid_viz.frame_interval(10, 2.5), InputError,
     "max_frames=2.5"),
    ("plot_metrics no records", lambda sc, p, mp: fluid_viz.plot_metrics([], p), InputError, "earlier.gif"),
    ("snapshot density without scalar", lambda sc, p, mp: fluid_viz.save_field_png(sc.state, p, "density"),
     InputError, "'density'"),
    ("snapshot empty colour range", lambda sc, p, mp: fluid_viz.save_field_png(sc.state, p, clim=(1.0, 1.0)),
     InputError, "clim=(1.0, 1.0)"),
    ("snapshot nan colour range", lambda sc, p, mp: fluid_viz.save_field_png(sc.state, p, clim=(0.0, float("nan"))),
     InputError, "nan"),
    ("live view without display", lambda sc, p, mp: (_no_display(mp), fluid_viz.LiveView(sc)), BackendError,
     "DISPLAY"),
    ("live view on a display that does not exist",
     lambda sc, p, mp: (mp.setenv("DISPLAY", ":987"), fluid_viz.LiveView(sc)), BackendError, "':987'"),
    ("require_display without display", lambda sc, p, mp: (_no_display(mp), fluid_viz.require_display()),
     BackendError, "WAYLAND_DISPLAY"),
]


@pytest.mark.parametrize("call, error, names", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_fluid_viz_api_mistakes(call, error, names, tg, tmp_path, monkeypatch):
    target = tmp_path / "earlier.gif"
    target.write_text(KEEP)
    with pytest.raises(error) as exc:
        call(tg, target, monkeypatch)
    assert names in str(exc.value)
    assert target.read_text() == KEEP
