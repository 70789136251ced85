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


_PULLED_IN = """
import importlib, pkgutil, sys
import lawful.{layer} as pkg
for info in pkgutil.iter_modules(pkg.__path__, "lawful.{layer}."):
    importlib.import_module(info.name)
layers = sorted({{m.split(".")[1] for m in sys.modules if m.startswith("lawful.") and m.count(".") >= 1}})
engines = sorted(e for e in ("openmm", "openmmml", "openmmtorch", "ase.md") if e in sys.modules)
print(" ".join(layers) + "|" + " ".join(engines))
"""

#: layer -> the lawful layers importing every one of its modules may pull in (itself included)
ALLOWED = {"kernels": {"kernels"}, "forcefields": {"forcefields", "kernels"}, "fluids": {"fluids", "kernels"}}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_alone_pulls_in_only_the_layers_below(layer):
    """Every module of one layer, imported in a fresh interpreter: kernels pulls in no other
    layer; forcefields and fluids pull in kernels and never each other; nothing below imports
    integrations; forcefields and kernels import no MD engine (OpenMM lives in integrations)."""
    r = _py(_PULLED_IN.format(layer=layer))
    assert r.returncode == 0, r.stderr
    layers, engines = r.stdout.strip().splitlines()[-1].split("|")
    assert set(layers.split()) == ALLOWED[layer], (layer, layers)
    if layer in ("kernels", "forcefields"):
        assert "openmm" not in engines.split(), (layer, engines)


def test_console_script_help():
    exe = shutil.which("lawful") or str(__import__("pathlib").Path(sys.executable).with_name("lawful"))
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, cwd="/tmp")
    assert r.returncode == 0, r.stderr
    for cmd in ("demo", "bench"):
        assert cmd in r.stdout
