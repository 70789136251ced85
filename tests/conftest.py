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
