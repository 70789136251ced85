"""The distribution installs lawful.<layer> and never bare top-level modules."""

import shutil
import subprocess
import sys

import pytest

LAYERS = ("forcefields", "fluids", "kernels", "integrations")


def _py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp")


def test_layers_import_from_any_directory():
    r = _py("import lawful.forcefields, lawful.fluids, lawful.kernels, lawful.integrations")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("bare", LAYERS)
def test_no_bare_top_level_module(bare):
    r = _py(f"import {bare}")
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_layers_do_not_import_upwards():
    """kernels imports no other layer; forcefields and fluids never import each other."""
    r = _py("import sys, lawful.kernels, lawful.forcefields, lawful.fluids\n"
            "bad = [m for m in sys.modules if m.startswith('lawful.integrations')]\n"
            "print(bad)")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_console_script_help():
    exe = shutil.which("lawful") or str(__import__("pathlib").Path(sys.executable).with_name("lawful"))
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, cwd="/tmp")
    assert r.returncode == 0, r.stderr
    for cmd in ("demo", "bench"):
        assert cmd in r.stdout
