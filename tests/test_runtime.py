"""Runtime policy: lazy Taichi start, arch choice and its overrides, dtype/device helpers."""

import os
import subprocess
import sys

import pytest
import torch

from lawful.kernels import (
    BackendError, InputError, ensure_taichi, fluid_dtype, md_dtype, resolve_device, resolve_dtype,
)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "LAWFUL_TI_ARCH"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd="/")


def test_import_does_not_start_taichi():
    r = _run("import lawful.kernels, lawful.fluids, lawful.forcefields, lawful.integrations, sys;"
             "from lawful.kernels import taichi_arch; print(taichi_arch()); print('taichi' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "False"]


def test_auto_arch_is_cpu_without_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    r = _run("from lawful.kernels import ensure_taichi, taichi_arch; a = ensure_taichi(); print(a, taichi_arch())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == [expected, expected]


def test_env_override_cpu():
    r = _run("from lawful.kernels import ensure_taichi; print(ensure_taichi())", LAWFUL_TI_ARCH="cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "cpu"


def test_env_override_invalid_names_the_value_and_the_fix():
    r = _run("from lawful.kernels import ensure_taichi; ensure_taichi()", LAWFUL_TI_ARCH="gpu")
    assert r.returncode != 0
    assert "LAWFUL_TI_ARCH='gpu'" in r.stderr and "'cpu' or 'cuda'" in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-GPU error path")
def test_cuda_request_without_gpu_is_a_clear_error():
    r = _run("from lawful.kernels import ensure_taichi; ensure_taichi('cuda')")
    assert r.returncode != 0
    assert "BackendError" in r.stderr and "no CUDA GPU" in r.stderr


def test_argument_overrides_and_is_sticky():
    r = _run("from lawful.kernels import ensure_taichi\n"
             "print(ensure_taichi('cpu'))\nprint(ensure_taichi())\n"
             "try:\n    ensure_taichi('cuda')\nexcept Exception as e:\n    print(type(e).__name__)",
             LAWFUL_TI_ARCH="cuda")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-3:] == ["cpu", "cpu", "BackendError"]


def test_ensure_taichi_in_process_runs_a_kernel():
    arch = ensure_taichi()
    import taichi as ti

    @ti.kernel
    def fill(a: ti.types.ndarray(dtype=ti.f64, ndim=1)):
        for i in a:
            a[i] = 2.0 * i

    t = torch.zeros(8, dtype=torch.float64)
    fill(t)  # zero-copy: the kernel writes into the torch tensor
    assert torch.equal(t, 2.0 * torch.arange(8, dtype=torch.float64))
    assert arch in ("cpu", "cuda")


def test_dtype_policy():
    assert md_dtype() is torch.float64 and fluid_dtype() is torch.float32
    assert resolve_dtype("f32") is torch.float32 and resolve_dtype(torch.float64) is torch.float64
    with pytest.raises(InputError, match="float16"):
        resolve_dtype(torch.float16)
    with pytest.raises(InputError, match="'quad'"):
        resolve_dtype("quad")
    # "float" is float32 to torch and float64 to Python/NumPy: it silently gave MD single precision
    with pytest.raises(InputError, match="ambiguous"):
        resolve_dtype("float")
    assert resolve_dtype(float) is torch.float64 and resolve_dtype("double") is torch.float64


def test_kernel_dtype_keys():
    """The Taichi kernel builders key on dtype_name and map it with taichi_real; only float32 and
    float64 are compiled, anything else is a clear error."""
    import taichi as ti

    from lawful.kernels.precision import dtype_name
    from lawful.kernels.runtime import taichi_real

    assert dtype_name(torch.float32) == "float32" and dtype_name(torch.float64) == "float64"
    assert taichi_real(dtype_name(torch.float32)) == ti.f32
    assert taichi_real(dtype_name(torch.float64)) == ti.f64
    with pytest.raises(InputError, match=r"'float16'.*\.float\(\)"):
        taichi_real(dtype_name(torch.float16))


def test_device_policy():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA GPU"):
            resolve_device("cuda")
