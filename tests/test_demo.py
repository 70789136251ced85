"""`lawful demo` end to end (smoke sizes): the report exists and its numbers are sane; Ctrl-C
leaves completed outputs intact and says where they are."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from lawful.integrations.demo import run_demo


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = run_demo(out=out, mode="smoke", log=lambda msg: None)
    return out, report, json.loads((out / "summary.json").read_text())


def test_report_and_summary_are_written(smoke):
    out, report, summary = smoke
    html = report.read_text()
    assert report == out / "report.html" and "<img" in html and "data:image/png;base64," in html
    assert summary["meta"]["mode"] == "smoke" and summary["meta"]["versions"]["torch"]
    for key, sec in summary["sections"].items():
        assert sec["status"] == "ok", (key, sec)


def test_forcefield_numbers_are_sane(smoke):
    ff = smoke[2]["sections"]["forcefields"]
    values = [v for k, v in ff.items() if k.startswith(("drift_", "fluct_"))]
    assert len(values) == 12 and all(math.isfinite(v) for v in values)
    for engine in ("ase", "openmm"):
        conservative = abs(ff[f"drift_{engine}_conservative_mev_atom_ps"])
        assert conservative < abs(ff[f"drift_{engine}_direct_mev_atom_ps"])
    # The two engines integrate the same model from the same state: same physics.
    assert ff["drift_ase_emt_mev_atom_ps"] == pytest.approx(ff["drift_openmm_emt_mev_atom_ps"], rel=1e-3, abs=1e-6)


def test_hamiltonian_numbers_are_sane(smoke):
    h = smoke[2]["sections"]["hamiltonian"]
    values = [v for k, v in h.items() if k not in ("seconds", "status")]
    assert len(values) == 10 and all(math.isfinite(v) for v in values)


def test_fluid_numbers_are_sane(smoke):
    fl = smoke[2]["sections"]["fluids"]
    values = [v for k, v in fl.items() if k not in ("seconds", "status")]
    assert len(values) == 7 and all(math.isfinite(v) for v in values)
    # The divergence-free corrector leaves the field at the projection's tolerance every step;
    # the soft-penalty corrector adds divergence that no projection removes.
    assert fl["hard_max_div_rel"] < 1e-5
    assert fl["soft_max_div_rel"] > 10 * fl["hard_max_div_rel"]
    assert (smoke[0] / "fluids" / "fluid_metrics.png").stat().st_size > 0


def test_ctrl_c_keeps_completed_outputs(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lawful.integrations.cli", "demo", "--smoke", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if "training NeuralPotential" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    assert "interrupted" in text and str(out) in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sections"]["environment"]["status"] == "ok"
    assert summary["sections"]["forcefields"]["status"] == "interrupted"
    assert (out / "report.html").is_file()
