"""`lawful demo` end to end (smoke sizes): the physics the report claims holds even at these
sizes; the report is rewritten after every section; Ctrl-C and SIGTERM leave a valid report
with completed outputs intact; failed sections make the command exit non-zero."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lawful.integrations.demo import _eta, run_demo


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(out=out, mode="smoke", log=lambda msg: None)
    return out, report, json.loads((out / "summary.json").read_text())


def test_report_and_summary_are_written(smoke):
    out, report, summary = smoke
    html = report.read_text()
    assert report == out / "report.html" and "<img" in html and "data:image/png;base64," in html
    assert html.rstrip().endswith("</html>") and "http-equiv='refresh'" not in html  # finished: no reload
    assert summary["meta"]["mode"] == "smoke" and summary["meta"]["versions"]["torch"]
    assert list(summary["sections"]) == ["environment", "forcefields", "molecules", "hamiltonian", "fluids"]
    for key, sec in summary["sections"].items():
        assert sec["status"] == "ok", (key, sec)


def test_a_pipeline_test_says_so_and_names_the_claims_its_numbers_miss(smoke):
    """The smoke report stated conclusions its own tables contradicted (the hard corrector raising
    the error by 6 %) with only "smoke" in a table cell (first-hour audit): a banner says what the
    mode is before any number, summary.json carries it and the commit, and every section lists the
    claims its numbers do not show, in the report too."""
    import html as html_lib

    out, report, summary = smoke
    page = report.read_text()
    assert "<p class='banner'>Pipeline test (--smoke)" in page
    assert page.index("class='banner'") < page.index("<table")
    assert summary["meta"]["note"].startswith("Pipeline test") and "commit" in summary["meta"]["git"]
    fl = summary["sections"]["fluids"]
    assert (fl["hard_error_cut"] > 0) is not any("lowering the error" in c for c in fl["claims_not_shown"])
    h = summary["sections"]["hamiltonian"]
    for system in ("mass_spring", "pendulum"):
        holds = h[f"{system}_hnn_leapfrog_final_abs"] < h[f"{system}_baseline_rk4_final_abs"]
        assert holds is not any(c.startswith(system) for c in h["claims_not_shown"])
    for key in ("forcefields", "molecules", "hamiltonian", "fluids"):
        for claim in summary["sections"][key]["claims_not_shown"]:
            assert html_lib.escape(claim) in page


def test_conservative_model_conserves_energy_and_the_direct_one_does_not(smoke):
    ff = smoke[2]["sections"]["forcefields"]
    for engine in ("ase", "openmm"):
        conservative = abs(ff[f"drift_{engine}_conservative_mev_atom_ps"])
        direct = abs(ff[f"drift_{engine}_direct_mev_atom_ps"])
        # Even barely trained, a model whose forces are -dE/dR drifts orders of magnitude less.
        assert conservative < direct / 100, (engine, conservative, direct)
        assert ff[f"fluct_{engine}_conservative_mev_atom"] < ff[f"fluct_{engine}_direct_mev_atom"] / 10
    # The two engines integrate the same model from the same state: same physics.
    for model in ("emt", "conservative", "direct"):
        assert ff[f"drift_ase_{model}_mev_atom_ps"] == pytest.approx(ff[f"drift_openmm_{model}_mev_atom_ps"],
                                                                     rel=1e-6, abs=1e-9)


def test_hnn_keeps_the_true_energy_better_than_the_baseline(smoke):
    h = smoke[2]["sections"]["hamiltonian"]
    # |E(T) - E(0)| along long rollouts: HNN + leapfrog vs the baseline MLP + RK4.
    assert h["mass_spring_hnn_leapfrog_final_abs"] < h["mass_spring_baseline_rk4_final_abs"] / 2
    assert h["pendulum_hnn_leapfrog_final_abs"] < h["pendulum_baseline_rk4_final_abs"]


def test_hard_corrector_is_divergence_free_and_the_soft_one_is_not(smoke):
    fl = smoke[2]["sections"]["fluids"]
    # The divergence-free corrector leaves the field at the projection's tolerance every step;
    # the soft-penalty corrector adds divergence that no projection removes.
    assert fl["hard_max_div_rel"] < 1e-5 and fl["none_max_div_rel"] < 1e-5
    assert fl["soft_max_div_rel"] > 100 * fl["hard_max_div_rel"]
    assert (smoke[0] / "fluids" / "fluid_metrics.png").stat().st_size > 0


def test_eta_scales_the_plan_by_the_measured_speed():
    # forcefields planned 150 s in quick mode and took 300 s: the rest (40 + 40 + 60 s) doubles.
    rest = ["molecules", "hamiltonian", "fluids"]
    assert _eta("quick", {"environment": 3.0, "forcefields": 300.0}, rest) == pytest.approx(280.0)
    assert _eta("quick", {}, ["fluids"]) == pytest.approx(60.0)
    assert _eta("quick", {"forcefields": 1500.0}, ["fluids"]) == pytest.approx(240.0)  # capped at 4x
    # a section planned under 10 s says nothing about the machine: the environment check took
    # 0.55 s of its 3 and every later estimate was quartered (1:12 shown for a 5:14 run)
    assert _eta("quick", {"environment": 0.55}, ["forcefields"] + rest) == pytest.approx(290.0)


def test_failed_sections_make_the_command_exit_non_zero(tmp_path, monkeypatch, capsys):
    from lawful.integrations import demo
    from lawful.integrations.cli import main

    @demo.section("broken", "A section that fails")
    def broken(ctx, sec):
        raise RuntimeError("deliberate failure")

    monkeypatch.setattr(demo, "_sections", lambda: [demo._environment, broken])
    assert main(["demo", "--smoke", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "lawful demo: error: section(s) broken failed" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sections"]["broken"]["status"] == "failed"
    assert summary["sections"]["environment"]["status"] == "ok"
    assert "deliberate failure" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_completed_outputs_and_a_valid_report(tmp_path, sig, status):
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # a shell that starts a job in the background (nohup ... &) hands it SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: give the demo the default a terminal would
    proc = subprocess.Popen([sys.executable, "-m", "lawful.integrations.cli", "demo", "--smoke", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if "training NeuralPotential" in line or time.monotonic() > deadline:
            break
    # The report already exists mid-run: finished sections, and those still to come as pending.
    during = json.loads((out / "summary.json").read_text())
    assert during["sections"]["environment"]["status"] == "ok"
    assert during["sections"]["forcefields"]["status"] == "pending"
    assert "http-equiv='refresh'" in (out / "report.html").read_text()
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=300)
    text = "".join(lines) + rest
    assert proc.returncode == status, text
    assert "interrupted" in text and str(out) in text and "Traceback" not in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sections"]["environment"]["status"] == "ok"
    assert summary["sections"]["forcefields"]["status"] == "interrupted"
    assert summary["sections"]["fluids"]["status"] == "not run"
    html = (out / "report.html").read_text()
    assert html.rstrip().endswith("</html>") and "interrupted" in html


def test_nve_figure_draws_every_model_in_both_engines_and_a_zoom(tmp_path, monkeypatch):
    """The README figure (docs/nve_energy.png) and the demo's: every listed line is drawn, EMT
    and the conservative model in styles that stay distinguishable when they coincide."""
    import matplotlib.pyplot as plt

    from lawful.integrations import demo_forcefields as dff

    runs = []
    for engine in ("ase", "openmm"):
        for model in ("emt", "conservative", "direct"):
            csv = tmp_path / f"{engine}_{model}.csv"
            csv.write_text("step,time_ps,potential_eV,kinetic_eV,total_eV,temperature_K\n"
                           + "".join(f"{k},{0.01 * k},0,0,{1e-3 * k if model == 'direct' else 0.0},300\n"
                                     for k in range(50)))
            runs.append({"engine": engine, "model": model, "csv": str(csv)})
    figs = []
    monkeypatch.setattr(dff, "save_figure", lambda fig, path: figs.append(fig) or path)
    dff._plot(runs, 32, tmp_path / "nve.png")
    axes = figs[0].axes
    assert len(axes) == 4
    labels = [sorted(line.get_label() for line in ax.get_lines()) for ax in axes]
    everything = sorted(dff.STYLES[m]["label"] for m in ("emt", "conservative", "direct"))
    zoom = sorted(dff.STYLES[m]["label"] for m in ("emt", "conservative"))
    assert labels == [everything, everything, zoom, zoom]
    emt, cons = dff.STYLES["emt"], dff.STYLES["conservative"]
    assert emt["lw"] > 2 * cons["lw"] and cons["ls"] != emt["ls"] and cons["zorder"] > emt["zorder"]
    plt.close(figs[0])
