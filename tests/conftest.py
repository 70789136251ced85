"""Suite-wide settings.

``make test`` runs two pytest-xdist workers on a 2-core machine; each worker and every subprocess
a test starts uses one intra-op thread, because oversubscribed OpenMP threads spin-wait and make
small torch evaluations tens of times slower.
"""

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def random_rotation():
    """``rotation(rng) -> (3, 3)`` numpy array: a random proper rotation (det +1), Haar-uniform
    (QR of a Gaussian matrix with the signs of R's diagonal fixed)."""

    def rotation(rng):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] *= -1
        return q

    return rotation


def run_ranks(argv, world_size: int = 2, timeout: float = 120.0, **env) -> list[tuple[int, str]]:
    """Start ``argv`` as ``world_size`` ranks the way ``torchrun`` starts them (RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_ADDR/PORT on a free loopback port, one thread each) and wait:
    ``[(returncode, output)]`` per rank; a rank still running after ``timeout`` s is killed."""
    import socket
    import subprocess

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items()
            if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # a rank that dies on a signal (SIGABRT at exit, SIGSEGV) prints every thread's Python stack
    base.update(OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1", **env)
    procs = [subprocess.Popen([str(a) for a in argv],
                              env=dict(base, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world_size),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world_size)]
    texts = []
    try:
        for p in procs:
            texts.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, t) for p, t in zip(procs, texts)]


def twin_matches(sc, warm: int = 3, steps: int = 3, rtol: float = 1e-11):
    """Step scene ``sc`` ``warm`` times with its Taichi solver (projection tolerance 1e-13), then
    ``steps`` more side by side with :class:`lawful.fluids.torch_step.TorchStep`, asserting after
    each that the twin's u, v and scalars match the solver's to ``rtol`` of their largest value,
    and its carried pressure gradient the gradient of the solver's stored pressure to 100 ``rtol``.
    Returns the twin's scalars and the scene's state after the last step."""
    from dataclasses import replace

    from lawful.fluids.torch_step import TorchStep

    sc.config = replace(sc.config, pressure_rtol=1e-13)
    solver = sc.make_solver()
    st = sc.state
    for _ in range(warm):
        solver.step(st)
    ts = TorchStep(solver)
    u, v, s = st.u.clone(), st.v.clone(), st.scalars.clone()
    gp = ts.pressure_gradient(st.p)
    for _ in range(steps):
        u, v, s, gp = ts(u, v, s, gp)
        solver.step(st)
        scale = float(st.u.abs().max())
        assert float((u - st.u).abs().max()) <= rtol * scale
        assert float((v - st.v).abs().max()) <= rtol * scale
        if s.numel():
            assert float((s - st.scalars).abs().max()) <= rtol * max(float(st.scalars.abs().max()), 1e-30)
        gq = ts.pressure_gradient(st.p)
        assert float((gp[0] - gq[0]).abs().max()) <= 100 * rtol * max(float(gq[0].abs().max()), 1e-30)
    return s, st


def count_calls(monkeypatch, owner, name: str) -> list:
    """Replace ``owner.name`` (a function or method) with one that calls it and appends 1 to the
    returned list each time: how often a path was taken, the call itself unchanged."""
    calls = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def load_benchmark(script: str):
    """A fresh module of ``benchmarks/<script>`` (e.g. ``"bench_fluid.py"``), loaded from its path
    (the benchmarks are scripts, not a package), not registered in ``sys.modules``."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the benchmark scripts' folder
BENCH_SUITE = Path(__file__).resolve().parent.parent / "benchmarks"
#: script -> the result file(s) it must write
EXPECTED_RESULTS = {
    "bench_batch.py": ["bench_batch.json"],
    "bench_cfd.py": ["cfd.json"],
    "bench_conformers.py": ["conformers.json"],
    "bench_corrector.py": ["corrector.json"],
    "bench_ddp.py": ["bench_ddp.json"],
    "bench_drift.py": ["drift.json"],
    "bench_engines.py": ["engines.json"],
    "bench_fluid.py": ["bench_fluid.json", "bench_fluid_speed.json", "bench_fluid_compile.json"],
    "bench_forcefield.py": ["forcefield.json"],
    "bench_hnn.py": ["bench_hnn.json"],
    "bench_mlmm.py": ["mlmm.json"],
    "bench_molecules.py": ["molecules_train.json", "molecules_mace.json"],
    "bench_neighbors.py": ["bench_neighbors.json"],
    "bench_soak.py": ["soak_ase.json", "soak_openmm.json", "soak_fluid.json"],
}
#: results with no random input (nothing to seed)
UNSEEDED_RESULTS = {"cfd.json", "conformers.json"}
#: the two halves of the tiny run, about three minutes each here: each is the test of its own file
#: (test_bench_quick.py, test_bench_quick_fluids.py), so that ``--dist loadfile`` can give them to
#: different workers (one test running all fourteen scripts took six minutes of one worker)
BENCH_HALVES = {
    "forcefields": ["bench_batch.py", "bench_conformers.py", "bench_drift.py", "bench_engines.py",
                    "bench_forcefield.py", "bench_hnn.py", "bench_mlmm.py", "bench_molecules.py",
                    "bench_neighbors.py"],
    "fluids": ["bench_cfd.py", "bench_corrector.py", "bench_ddp.py", "bench_fluid.py", "bench_soak.py"],
}


def run_benchmarks_tiny(scripts, tmp_path, monkeypatch) -> None:
    """Run the benchmark ``scripts`` (file names) with ``LAWFUL_BENCH_TINY=1`` through
    :func:`lawful.integrations.bench_suite.run_suite`, from an empty working directory, results into
    ``tmp_path``; check that each exits 0 and writes its :data:`EXPECTED_RESULTS`, each saying how it
    was made (tiny, quick, one thread, seeds, commit, command), and that nothing was written into
    the working directory or over the committed results."""
    import json

    from lawful.integrations.bench_suite import SUMMARY, run_suite

    work, out = tmp_path / "clean", tmp_path / "results"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("LAWFUL_BENCH_TINY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("LAWFUL_BENCH_DIR", raising=False)
    committed = {p: p.stat().st_mtime_ns for p in (BENCH_SUITE / "results").glob("*")}
    written = run_suite(BENCH_SUITE, out, only=list(scripts), quick=True)   # raises if any script exits non-zero
    names = {p.name for p in written}
    for script in scripts:
        for fname in EXPECTED_RESULTS[script]:
            assert fname in names, f"{script} wrote no {fname}"
    for path in written:
        doc = json.loads(path.read_text())
        if path.name == SUMMARY:
            assert set(doc["benchmarks"]) >= {json.loads((out / f).read_text())["benchmark"]
                                              for s in scripts for f in EXPECTED_RESULTS[s]}
            continue
        prov = doc["provenance"]
        assert prov["tiny"] is True and prov["quick"] is True
        assert prov["git"]["commit"] is None or len(prov["git"]["commit"]) == 40
        if any(path.name in fs for fs in EXPECTED_RESULTS.values()):
            assert prov["torch_threads"] == 1, path.name
            assert prov["seeds"] or path.name in UNSEEDED_RESULTS, f"{path.name} records no seeds"
        assert prov["command"][-1].endswith(".py")
        assert isinstance(doc["figures"], dict) and doc["figures"], path.name
    assert list(work.iterdir()) == []
    assert {p: p.stat().st_mtime_ns for p in (BENCH_SUITE / "results").glob("*")} == committed
