"""Suite-wide settings.

``make test`` runs two pytest-xdist workers on a 2-core machine; each worker and every subprocess
a test starts uses one intra-op thread, because oversubscribed OpenMP threads spin-wait and make
small torch evaluations tens of times slower.
"""

import os

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
