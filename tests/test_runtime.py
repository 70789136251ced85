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


# -- a runtime the user set up (audit_rt F1, F2, F12) -------------------------------------------
# Each case runs in a subprocess: a ti.init in this process would replace the runtime every other
# test uses.

_TG_HASH = ("import hashlib, torch\n"
            "from lawful.fluids import scenes, run\n"
            "def tg_hash(dtype):\n"
            "    sc = scenes.taylor_green(n=16, dtype=dtype)\n"
            "    run(sc, 4)\n"
            "    u, p = sc.state.u.numpy(), sc.state.p.numpy()\n"
            "    return hashlib.sha1(u.tobytes() + p.tobytes()).hexdigest()[:16] + ':' + repr(float(abs(u).sum()))\n")


def _last_line(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


def test_lawfuls_own_runtime_compiles_without_the_cfg_passes_and_keeps_kernels_on_disk():
    """The runtime lawful starts has Taichi's offline cache on (kernels compile once per machine)
    and its control-flow-graph passes off (most of a fluid kernel's compile time, none of its
    speed: kernels.runtime.TAICHI_INIT_OPTIONS); a user's runtime keeps the user's setting."""
    code = ("from lawful.kernels import ensure_taichi\nensure_taichi('cpu')\n"
            "import taichi as ti\ncfg = ti.lang.impl.current_cfg()\nprint(cfg.offline_cache, cfg.cfg_optimization)")
    assert _last_line(_run(code)) == "True False"
    assert _last_line(_run("import taichi as ti\nti.init(arch=ti.cpu)\n" + code)) == "True True"


@pytest.mark.parametrize("user_init,bitwise,cold", [
    ("ti.init(arch=ti.cpu, default_fp=ti.f64)", True, True),
    ("ti.init(arch=ti.cpu, cpu_max_num_threads=1)", True, False),
    # debug mode compiles with fewer optimisations (bounds checks): round-off level changes only
    ("ti.init(arch=ti.cpu, default_fp=ti.f64, debug=True)", False, False),
])
def test_user_runtime_is_adopted_not_reinitialised(user_init, bitwise, cold):
    """The user's ti.init comes first: lawful runs its kernels in that runtime. The user's field
    survives, default_fp/debug stay as set, and lawful's float32 and float64 results are bitwise
    those of its own runtime (its kernels type their float literals, so default_fp does not
    matter), with no Taichi precision warning; under debug=True equal to round-off.

    Taichi warns only when it compiles, so a kernel its offline cache already holds says nothing:
    the ``cold`` case compiles every kernel afresh (TI_OFFLINE_CACHE=0, ~16 s), under default_fp
    f64, where an untyped literal assigned to a float32 field would warn."""
    ref = _last_line(_run(_TG_HASH + "print(tg_hash(torch.float32), tg_hash(torch.float64))"))
    r = _run("import taichi as ti, numpy as np\n" + user_init + "\n"
             # the field's own dtype (default_fp): a float64 array into an f32 field compiles Taichi's
             # from_numpy kernel with its own "lose precision" warning on a cold offline cache
             "f = ti.field(dtype=float, shape=3)\n"
             "f.from_numpy(np.array([1.0, 2.0, 1 / 3], dtype=f.to_numpy().dtype)); f0 = f.to_numpy()\n"
             "cfg = ti.lang.impl.current_cfg(); fp0, dbg0 = cfg.default_fp, cfg.debug\n" + _TG_HASH +
             "h = tg_hash(torch.float32), tg_hash(torch.float64)\n"
             "from lawful.kernels import taichi_arch\n"
             "cfg = ti.lang.impl.current_cfg()\n"
             "print(taichi_arch(), cfg.default_fp == fp0, cfg.debug == dbg0, (f.to_numpy() == f0).all())\n"
             "print(cfg.offline_cache)\n"
             "print(*h)", **({"TI_OFFLINE_CACHE": "0"} if cold else {}))
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0, r.stderr[-3000:]
    assert lines[-3] == "cpu True True True"
    if cold:
        assert lines[-2] == "False"          # the offline cache really was off
    if bitwise:
        assert lines[-1] == ref
    else:
        for got, want in zip(lines[-1].split(), ref.split()):
            assert float(got.split(":")[1]) == pytest.approx(float(want.split(":")[1]), rel=1e-5)
    assert "lose precision" not in r.stderr and r.stderr.count("Starting on arch") <= 1


@pytest.mark.parametrize("request_code,env,needles", [
    ("ensure_taichi('cuda')", {}, ["argument arch='cuda'", "'cpu' by a ti.init outside lawful", "arch='cpu'"]),
    ("ensure_taichi()", {"LAWFUL_TI_ARCH": "cuda"},
     ["environment variable LAWFUL_TI_ARCH='cuda'", "ti.init outside lawful", "unset LAWFUL_TI_ARCH"]),
], ids=["argument", "environment"])
def test_request_conflicting_with_user_runtime_is_refused(request_code, env, needles):
    """An explicit arch request lawful cannot honour without re-initialising the user's runtime:
    BackendError naming the request and its source; the user's field is still alive."""
    r = _run("import taichi as ti\nti.init(arch=ti.cpu)\nf = ti.field(ti.f32, shape=2); f.fill(7)\n"
             "from lawful.kernels import ensure_taichi\n"
             f"try:\n    {request_code}\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
             "print(f.to_numpy().tolist())", **env)
    out = r.stdout[r.stdout.find("BackendError"):]
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BackendError" in r.stdout, r.stdout
    for needle in needles:
        assert needle in out, (needle, out)
    assert out.strip().splitlines()[-1] == "[7.0, 7.0]"


@pytest.mark.parametrize("reinit", [
    "ti.init(arch=ti.cpu)",
    "ti.init(arch=ti.cpu, default_fp=ti.f64)",
    "ti.reset()",
])
def test_reinit_after_solver_is_refused_before_the_state_changes(reinit):
    """A ti.init (or ti.reset) after a Solver was built: the next step raises BackendError naming
    the fix before touching the state (it used to fail inside the pressure solve with the state
    half-advanced); a Solver built afterwards runs and gives the same field as the old one did."""
    r = _run("import taichi as ti, torch\nfrom lawful.fluids import scenes, Solver\n"
             "sc = scenes.taylor_green(n=16, dtype=torch.float64)\ns = Solver(sc.state, sc.config)\n"
             "s.step(sc.state)\nref = sc.state.clone(); s.step(ref)\n"
             f"{reinit}\n"
             "before = sc.state.clone()\n"
             "try:\n    s.step(sc.state)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
             "same = all(torch.equal(getattr(sc.state, k), getattr(before, k)) for k in ('u', 'v', 'p'))\n"
             "print('unchanged', same, sc.state.step == before.step, sc.state.t == before.t)\n"
             "Solver(sc.state, sc.config).step(sc.state)\n"
             "print('new solver', float((sc.state.u - ref.u).abs().max()))")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.strip().splitlines()
    assert out[-3].startswith("BackendError Taichi was re-initialised"), out
    assert "Build a new Solver" in out[-3] and "after the ti.init call" in out[-3]
    assert out[-2] == "unchanged True True True"
    assert out[-1] == "new solver 0.0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-GPU error path")
@pytest.mark.parametrize("code,env,names,not_names", [
    ("ensure_taichi('cuda')", {}, ["argument arch='cuda'", "arch='cpu'"], ["unset LAWFUL_TI_ARCH"]),
    ("ensure_taichi()", {"LAWFUL_TI_ARCH": "cuda"}, ["LAWFUL_TI_ARCH='cuda'", "unset LAWFUL_TI_ARCH"], ["--arch"]),
], ids=["argument", "environment"])
def test_cuda_without_gpu_names_the_setting_the_user_made(code, env, names, not_names):
    r = _run(f"from lawful.kernels import ensure_taichi\n{code}", **env)
    assert r.returncode != 0 and "BackendError" in r.stderr and "no CUDA GPU" in r.stderr
    for needle in names:
        assert needle in r.stderr, needle
    for needle in not_names:
        assert needle not in r.stderr.splitlines()[-1], needle


def test_env_changed_after_start_warns_once():
    """LAWFUL_TI_ARCH is read at the first use: setting it to another arch afterwards cannot be
    honoured and says so (once), instead of being ignored silently."""
    r = _run("import os, warnings\nfrom lawful.kernels import ensure_taichi\nprint(ensure_taichi())\n"
             "os.environ['LAWFUL_TI_ARCH'] = 'cuda'\n"
             "with warnings.catch_warnings(record=True) as w:\n"
             "    warnings.simplefilter('always')\n"
             "    print(ensure_taichi(), ensure_taichi())\n"
             "print(len(w), w[0].category.__name__, w[0].message)")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.strip().splitlines()
    assert out[-3:-1] == ["cpu", "cpu cpu"]
    assert out[-1].startswith("1 RuntimeWarning LAWFUL_TI_ARCH='cuda' was set after Taichi started on 'cpu'")
